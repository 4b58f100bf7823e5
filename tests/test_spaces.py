"""Every gymnasium space lightrl supports: checks, encoders, distributions, storage, and small learning runs."""

from __future__ import annotations

import math

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from conftest import SPACES_ID
from gymnasium import spaces
from space_envs import (
    BITS_OBS_ID, DISCRETE_OBS_ID, GOAL_BOX_ID, GOAL_DICT_ID, GRID_OBS_ID, IMAGE_DICT_ID, MULTI_BINARY_ID, MULTI_DISCRETE_ID,
)
from torch.testing import assert_close

import lightrl
from experiments.resume_check import max_abs_diff, run_resume_check
from lightrl.data.collector import Collector
from lightrl.data.replay import ReplayBuffer
from lightrl.data.rollout import RolloutBuffer
from lightrl.data.storage import DictPacker, index_split
from lightrl.envs.vector import make_vec_env
from lightrl.nn.actor_critic import ActorCritic
from lightrl.nn.cnn import NatureCNN
from lightrl.nn.distributions import Bernoulli, MultiCategorical
from lightrl.nn.encoders import FlatVector, MultiInputEncoder, MultiOneHot, OneHot, observation_encoder

BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
IMAGE = spaces.Box(0, 255, (1, 36, 36), np.uint8)


def fit(model, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(model)
    return trainer


def spaces_env(observation_space: spaces.Space = BOX, action_space: spaces.Space | None = None) -> dict:
    return {"env_id": SPACES_ID, "env_kwargs": {"observation_space": observation_space, "action_space": action_space or spaces.Discrete(2)}}


# ----------------------------------------------------------------------------- checks: clear errors before any vector env


@pytest.mark.parametrize(
    "space, message",
    [
        (spaces.Tuple([BOX, spaces.Discrete(3)]), r"Tuple\(.*; it supports Box, Discrete, MultiDiscrete, MultiBinary, Dict\. Wrap the env with gymnasium\.wrappers\.FlattenObservation"),
        (spaces.Dict({"outer": spaces.Dict({"inner": BOX})}), r"its part 'outer' is a Dict, and lightrl takes Dicts one level deep\. Wrap the env with gymnasium\.wrappers\.FlattenObservation"),
        (spaces.Text(5), r"Text\(.*FlattenObservation cannot flatten it: write a gymnasium\.ObservationWrapper"),
        (spaces.Sequence(BOX), r"Sequence\(.*FlattenObservation cannot flatten it"),
        (spaces.Graph(BOX, spaces.Discrete(2)), r"Graph\(.*FlattenObservation cannot flatten it"),
        (spaces.MultiDiscrete([[2, 2], [3, 3]]), r"[\s\S]*: MultiDiscrete observations must be 1-D\. Wrap the env with gymnasium\.wrappers\.FlattenObservation"),
        (spaces.Dict({"a": BOX, "b": spaces.Tuple([BOX])}), r"its part 'b'; it supports Box, Discrete, MultiDiscrete, MultiBinary\. Wrap the env with gymnasium\.wrappers\.FlattenObservation"),
        (spaces.Box(-1, 1, (2, 3), np.float32), r"Box observations must be flat vectors or images shaped \(C, H, W\)\. Wrap the env with gymnasium\.wrappers\.FlattenObservation"),
        (spaces.Box(0, 255, (3, 20, 40), np.uint8), r": images must be at least 36x36 pixels \(the Nature-CNN's smallest input\), got 20x40\. Enlarge them with a gymnasium\.ObservationWrapper"),
    ],
    ids=["tuple", "nested-dict", "text", "sequence", "graph", "2d-multidiscrete", "dict-with-tuple", "2d-box", "small-image"],
)
@pytest.mark.parametrize("algo", ["PPO", "DQN"])
def test_unsupported_observation_spaces_are_refused_naming_the_algorithm_space_and_wrapper(algo, space, message):
    with pytest.raises(ValueError, match=f"{algo} does not support the observation space .*{message}"):
        getattr(lightrl, algo)(**spaces_env(observation_space=space))


@pytest.mark.parametrize(
    "algo, observation_space, action_space, message",
    [
        ("DQN", BOX, spaces.MultiDiscrete([2, 3]), r"DQN does not support the action space MultiDiscrete\(\[2 3\]\); it supports Discrete\. DQN needs Discrete actions"),
        ("DQN", BOX, spaces.MultiBinary(3), r"DQN does not support the action space MultiBinary\(3\); it supports Discrete"),
        ("SAC", BOX, spaces.Discrete(2), r"SAC does not support the action space Discrete\(2\); it supports Box\. SAC needs Box"),
        ("TD3", BOX, spaces.MultiDiscrete([2, 3]), r"TD3 does not support the action space MultiDiscrete\(\[2 3\]\); it supports Box\."),
        ("PPO", BOX, spaces.Tuple([spaces.Discrete(2), BOX]), r"PPO does not support the action space Tuple\(.*; it supports Discrete, Box, MultiDiscrete, MultiBinary\. .*gymnasium\.ActionWrapper"),
        ("A2C", BOX, spaces.Dict({"a": spaces.Discrete(2)}), r"A2C does not support the action space Dict\(.*gymnasium\.ActionWrapper"),
        ("PPO", BOX, spaces.MultiDiscrete([[2, 3], [2, 2]]), r"MultiDiscrete actions must be 1-D"),
        ("PPO", BOX, spaces.MultiBinary([2, 2]), r"MultiBinary actions must be 1-D"),
        ("PPO", BOX, spaces.MultiDiscrete([3, 3], start=[1, 0]), r"MultiDiscrete actions must start at 0 \(start=\[1, 0\]\)\. Shift them with a gymnasium\.ActionWrapper"),
        ("DQN", BOX, spaces.Discrete(3, start=-1), r"DQN does not support the action space Discrete\(3, start=-1\): Discrete actions must start at 0 \(start=-1\)"),
        ("SAC", spaces.Dict({"camera": IMAGE, "v": BOX}), spaces.Box(-1, 1, (1,)), r"SAC does not support the observation space Dict\(.*its part 'camera': it takes no image observations; use PPO, A2C or DQN"),
        ("TD3", spaces.Box(-1, 1, (3, 4, 4), np.float32), spaces.Box(-1, 1, (1,)), r"TD3 does not support the observation space Box\(.*Box observations must be flat vectors\. Wrap"),
    ],
)
def test_unsupported_action_spaces_and_combinations_are_refused(algo, observation_space, action_space, message):
    with pytest.raises(ValueError, match=message):
        getattr(lightrl, algo)(**spaces_env(observation_space, action_space))


@pytest.mark.parametrize(
    "algo, observation_space, action_space",
    [
        ("PPO", spaces.Dict({"camera": IMAGE, "v": BOX, "room": spaces.Discrete(3)}), spaces.MultiDiscrete([2, 3])),
        ("A2C", spaces.Discrete(5), spaces.MultiBinary(4)),
        ("DQN", spaces.Dict({"camera": IMAGE, "v": BOX}), spaces.Discrete(2)),
        ("SAC", spaces.Dict({"v": BOX, "room": spaces.Discrete(3)}), spaces.Box(-1, 1, (2,))),
        ("TD3", spaces.Discrete(4), spaces.Box(-1, 1, (1,))),
        ("PPO", spaces.MultiDiscrete([3, 4], start=[-1, 0]), spaces.Discrete(2)),
        ("A2C", spaces.MultiBinary(5), spaces.MultiDiscrete([2, 2])),
        ("DQN", spaces.Dict({"bits": spaces.MultiBinary(4), "cell": spaces.MultiDiscrete([2, 3]), "v": BOX}), spaces.Discrete(3)),
        ("SAC", spaces.MultiBinary(3), spaces.Box(-1, 1, (2,))),
        ("TD3", spaces.Dict({"cell": spaces.MultiDiscrete([4, 4]), "v": BOX}), spaces.Box(-1, 1, (1,))),
    ],
)
def test_supported_spaces_build_a_policy_that_acts(algo, observation_space, action_space):
    model = getattr(lightrl, algo)(**spaces_env(observation_space, action_space))
    envs = make_vec_env(SPACES_ID, 3, env_kwargs={"observation_space": observation_space, "action_space": action_space})
    collector = Collector(envs)
    with torch.no_grad():
        actions = model.policy.act(collector.reset())
    assert all(action_space.contains(a) for a in collector.env_actions(actions))
    collector.close()


# ----------------------------------------------------------------------------- encoders


def test_one_hot_encodes_discrete_observations_from_their_start():
    assert_close(OneHot(spaces.Discrete(3))(torch.tensor([2, 0, 1])), torch.eye(3)[[2, 0, 1]])
    assert_close(OneHot(spaces.Discrete(3, start=-1))(torch.tensor([-1, 1])), torch.tensor([[1.0, 0, 0], [0, 0, 1]]))


def test_multi_one_hot_encodes_each_dimension_from_its_start_and_multi_binary_passes_as_floats():
    encoder = observation_encoder(spaces.MultiDiscrete([2, 3], start=[1, -1]))
    assert isinstance(encoder, MultiOneHot) and encoder.out_features == 5
    assert_close(encoder(torch.tensor([[1, -1], [2, 1], [2, 0]])), torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 1], [0, 1, 0, 1, 0]]))
    bits = observation_encoder(spaces.MultiBinary(3))
    assert isinstance(bits, FlatVector) and bits.out_features == 3
    assert_close(bits(torch.tensor([[1, 0, 1]], dtype=torch.int8)), torch.tensor([[1.0, 0, 1]]))


def test_multi_input_encoder_concatenates_the_parts_in_key_order():
    torch.manual_seed(0)
    space = spaces.Dict({"camera": IMAGE, "room": spaces.Discrete(3), "v": spaces.Box(-1, 1, (2, 2), np.float32)})
    encoder = MultiInputEncoder(space)
    assert list(space.spaces) == ["camera", "room", "v"] and encoder.out_features == 256 + 3 + 4
    obs = {"camera": torch.randint(0, 256, (2, 1, 36, 36), dtype=torch.uint8), "room": torch.tensor([1, 2]),
           "v": torch.arange(8.0).reshape(2, 2, 2)}  # fmt: skip
    features = encoder(obs)
    cnn = encoder.parts[0]
    assert isinstance(cnn, NatureCNN) and cnn.out_features == 256
    assert_close(features[:, :256], cnn(obs["camera"]))
    assert_close(features[:, 256:259], torch.tensor([[0.0, 1, 0], [0, 0, 1]]))
    assert_close(features[:, 259:], torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]]))
    assert observation_encoder(BOX) is None and observation_encoder(IMAGE) is None


# ----------------------------------------------------------------------------- distributions: exact values


def test_multi_categorical_log_prob_and_entropy_by_hand_and_against_torch():
    dist = MultiCategorical([2, 3])
    # Uniform logits: log(1/2) + log(1/3), entropy log 2 + log 3.
    log_prob, entropy = dist.log_prob_entropy(torch.zeros(1, 5), torch.tensor([[1, 2]]))
    assert_close(log_prob, torch.tensor([-math.log(6)]))
    assert_close(entropy, torch.tensor([math.log(6)]))
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    actions = torch.stack([torch.randint(2, (64,)), torch.randint(3, (64,))], dim=1)
    first, second = torch.distributions.Categorical(logits=logits[:, :2]), torch.distributions.Categorical(logits=logits[:, 2:])
    log_prob, entropy = dist.log_prob_entropy(logits, actions)
    assert_close(log_prob, first.log_prob(actions[:, 0]) + second.log_prob(actions[:, 1]))
    assert_close(entropy, first.entropy() + second.entropy())
    assert_close(dist.mode(logits), torch.stack([logits[:, :2].argmax(1), logits[:, 2:].argmax(1)], dim=1))


def test_multi_categorical_samples_each_dimension_with_its_probabilities():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.8, 0.2, 0.1, 0.3, 0.6]])).expand(40_000, 5)
    samples = MultiCategorical([2, 3]).sample(logits)
    assert samples.shape == (40_000, 2) and samples.dtype == torch.int64
    assert_close(torch.bincount(samples[:, 0], minlength=2) / 40_000.0, torch.tensor([0.8, 0.2]), atol=0.01, rtol=0)
    assert_close(torch.bincount(samples[:, 1], minlength=3) / 40_000.0, torch.tensor([0.1, 0.3, 0.6]), atol=0.01, rtol=0)


def test_bernoulli_log_prob_entropy_and_samples():
    dist = Bernoulli()
    log_prob, entropy = dist.log_prob_entropy(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 1.0]]))
    assert_close(log_prob, torch.tensor([3 * math.log(0.5)]))
    assert_close(entropy, torch.tensor([3 * math.log(2)]))
    logits = 3 * torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    actions = (torch.rand(64, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    reference = torch.distributions.Bernoulli(logits=logits)
    log_prob, entropy = dist.log_prob_entropy(logits, actions)
    assert_close(log_prob, reference.log_prob(actions).sum(-1))
    assert_close(entropy, reference.entropy().sum(-1))
    assert_close(dist.mode(logits), (logits > 0).float())
    torch.manual_seed(0)
    samples = dist.sample(torch.log(torch.tensor([[0.25 / 0.75, 0.9 / 0.1]])).expand(40_000, 2))
    assert set(samples.unique().tolist()) == {0.0, 1.0}
    assert_close(samples.mean(0), torch.tensor([0.25, 0.9]), atol=0.01, rtol=0)


@pytest.mark.parametrize("action_space", [spaces.MultiDiscrete([2, 3, 4]), spaces.MultiBinary(3)], ids=["multi-discrete", "multi-binary"])
def test_actor_critic_scores_multi_actions_with_its_distribution(action_space):
    torch.manual_seed(0)
    agent = ActorCritic(BOX, action_space)
    obs = torch.randn(16, 2)
    with torch.no_grad():
        logits, value = agent.heads(obs)
        action, log_prob, entropy, v = agent.get_action_and_value(obs)
        assert_close(v, value)
        assert_close((log_prob, entropy), agent.distribution.log_prob_entropy(logits, action))
        sampled, sampled_log_prob, _ = agent.sample(obs)
        assert_close(sampled_log_prob, agent.distribution.log_prob(logits, sampled))
        assert_close(agent.act(obs, deterministic=True), agent.distribution.mode(logits))
    assert action.shape == (16, 3) and logits.shape == (16, int(np.sum(getattr(action_space, "nvec", 3))))


# ----------------------------------------------------------------------------- storage


def test_dict_packer_round_trips_every_part_exactly():
    space = spaces.Dict({"camera": spaces.Box(0, 255, (1, 2, 2), np.uint8), "room": spaces.Discrete(5),
                         "v": spaces.Box(-np.inf, np.inf, (3,), np.float32)})  # fmt: skip
    packer = DictPacker(space)
    assert packer.nbytes == 4 + 8 + 12
    obs = {"camera": torch.tensor([[[[0, 255], [7, 128]]], [[[1, 2], [3, 4]]]], dtype=torch.uint8),
           "room": torch.tensor([4, -3]), "v": torch.tensor([[1e-30, -2.5, 3e30], [0.1, -0.0, 7.0]])}  # fmt: skip
    packed = packer.pack(obs)
    assert packed.shape == (2, 24) and packed.dtype == torch.uint8
    unpacked = packer.unpack(packed)
    for key, value in obs.items():
        assert unpacked[key].dtype == value.dtype and torch.equal(unpacked[key], value)
    assert torch.equal(packer.pack({key: value[1] for key, value in obs.items()}, batch=False), packed[1])
    assert all(not value.any() for value in packer.unpack(torch.zeros(1, 24, dtype=torch.uint8)).values())


def test_index_split_takes_the_same_samples_of_every_part():
    obs = {"a": torch.arange(6), "b": torch.arange(6.0) * 10}
    perm = torch.tensor([5, 0, 3, 1, 4, 2])
    minibatches = index_split(obs, perm, 4)
    assert [mb["a"].tolist() for mb in minibatches] == [[5, 0, 3, 1], [4, 2]]
    assert [mb["b"].tolist() for mb in minibatches] == [[50.0, 0.0, 30.0, 10.0], [40.0, 20.0]]
    frames = torch.arange(6 * 2 * 3, dtype=torch.uint8).view(6, 2, 3)  # whole rows of image-like samples
    first, second = index_split(frames, perm, 4)
    assert first.tolist() == [frames[5].tolist(), frames[0].tolist(), frames[3].tolist(), frames[1].tolist()]
    assert second.tolist() == [frames[4].tolist(), frames[2].tolist()] and second.dtype == torch.uint8


class DictCounting(gym.Env):
    """``{"count": [k], "parity": k % 2}`` after k steps; terminates at step 3 (even seed) or is truncated at 4."""

    observation_space = spaces.Dict({"count": spaces.Box(0, 10, (1,), np.float32), "parity": spaces.Discrete(2)})
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.terminates = seed % 2 == 0
        self.count = 0
        return self._obs(), {}

    def _obs(self):
        return {"count": np.array([self.count], np.float32), "parity": self.count % 2}

    def step(self, action):
        self.count += 1
        return self._obs(), float(self.count), self.terminates and self.count >= 3, False, {}


DICT_COUNTING_ID = "LightrlTest/DictCounting-v0"
if DICT_COUNTING_ID not in gym.registry:
    gym.register(DICT_COUNTING_ID, entry_point=DictCounting, max_episode_steps=4)


def test_collector_gives_dict_observations_with_each_parts_dtype_and_final_observations():
    collector = Collector(make_vec_env(DICT_COUNTING_ID, 2, seed=0))
    obs = collector.reset()
    assert obs["count"].dtype == torch.float32 and obs["parity"].dtype == torch.int64
    for _ in range(3):
        step = collector.step(torch.zeros(2, dtype=torch.long))
    # Step 3: sub-env 0 (even seed) terminated and was reset; sub-env 1 goes on.
    assert step.next_obs["count"].tolist() == [[0.0], [3.0]] and step.next_obs["parity"].tolist() == [0, 1]
    assert list(step.final_obs) == [0] and step.final_obs[0]["count"].tolist() == [3.0] and step.final_obs[0]["parity"].item() == 1
    collector.close()


def test_rollout_buffer_stores_dict_observations_per_key_and_flattens_them():
    space = DictCounting.observation_space
    collector = Collector(make_vec_env(DICT_COUNTING_ID, 2, seed=0))
    buffer = RolloutBuffer(5, 2, space, spaces.Discrete(2))
    collector.reset()
    for t in range(5):
        obs = collector.obs
        step = collector.step(torch.zeros(2, dtype=torch.long))
        buffer.add(t, obs, torch.zeros(2, dtype=torch.long), torch.zeros(2), torch.zeros(2), step)
    # Sub-env 0 counts 0 1 2 | 0 1 (terminated at 3), sub-env 1 counts 0 1 2 3 | 0 (truncated at 4).
    assert buffer.obs["count"][:, :, 0].T.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert buffer.obs["parity"].T.tolist() == [[0, 1, 0, 0, 1], [0, 1, 0, 1, 0]]
    truncated = buffer.stacked_truncated_obs()
    assert [(t, i) for t, i, _ in buffer.truncated_obs] == [(3, 1)] and truncated["count"].tolist() == [[4.0]] and truncated["parity"].tolist() == [0]
    flat = buffer.flatten(torch.zeros(5, 2), torch.zeros(5, 2))
    assert flat["obs"]["count"][:, 0].tolist() == [0, 0, 1, 1, 2, 2, 0, 3, 1, 0] and flat["obs"]["parity"].shape == (10,)
    collector.close()


def test_replay_buffer_stores_each_dict_observation_once_and_samples_exact_transitions():
    space = DictCounting.observation_space
    collector = Collector(make_vec_env(DICT_COUNTING_ID, 2, seed=0))
    buffer = ReplayBuffer.for_spaces(100, 2, space, spaces.Discrete(2))
    assert buffer.packer is not None and buffer.observations.shape == (51, 2, 4 + 8)  # rows + 1, each observation once
    obs = collector.reset()
    for _ in range(12):
        actions = torch.ones(2, dtype=torch.long)
        step = collector.step(actions)
        buffer.add(obs, actions, step.rewards, step.terminated, step.truncated, step.next_obs, step.final_obs)
        obs = step.next_obs
    data = buffer.sample(500, generator=torch.Generator().manual_seed(0))
    count, next_count = data["observations"]["count"][:, 0], data["next_observations"]["count"][:, 0]
    assert data["observations"]["parity"].tolist() == (count.long() % 2).tolist()
    # The reward of step k is k; a terminated step's next observation is zeros, a truncated one's the final observation.
    assert_close(data["rewards"], count + 1)
    terminated = data["terminations"].bool()
    assert terminated.any() and (count[terminated] == 2).all()
    assert (next_count[terminated] == 0).all() and (data["next_observations"]["parity"][terminated] == 0).all()
    assert_close(next_count[~terminated], count[~terminated] + 1)  # including the truncated 3 -> 4
    assert (count == 3).any() and (data["next_observations"]["parity"] == (next_count.long() % 2)).all()
    # n-step sampling unpacks the same way: 3 steps from count 0 that do not terminate reach count 3.
    three = buffer.sample(500, n_step=3, gamma=0.5, generator=torch.Generator().manual_seed(1))
    starts = three["observations"]["count"][:, 0]
    picked = (three["discounts"] == 0.5**3) & (three["terminations"] == 0) & (starts == 0)
    assert picked.sum() > 10
    assert (three["next_observations"]["count"][picked, 0] == 3.0).all() and (three["next_observations"]["parity"][picked] == 1).all()
    assert_close(three["rewards"][picked], torch.full((int(picked.sum()),), 1 + 0.5 * 2 + 0.25 * 3))
    collector.close()


# ----------------------------------------------------------------------------- small learning runs on tiny envs


def test_ppo_learns_goal_reaching_with_dict_observations():
    # The goal is only in the Dict's Discrete part: a policy that ignores it scores 0 on average, the optimum 1.
    model = lightrl.PPO(GOAL_DICT_ID, total_timesteps=8192, num_envs=4, num_steps=64, seed=1)
    fit(model)
    assert lightrl.evaluate(model, num_episodes=20) == (1.0, 0.0)


def test_ppo_learns_multi_discrete_actions():
    model = lightrl.PPO(MULTI_DISCRETE_ID, total_timesteps=8192, num_envs=4, num_steps=64, learning_rate=3e-3, seed=1)
    fit(model)
    mean, _ = lightrl.evaluate(model, num_episodes=10)
    assert mean == 16.0  # random actions score 16/3


def test_a2c_learns_multi_binary_actions():
    model = lightrl.A2C(MULTI_BINARY_ID, total_timesteps=8000, learning_rate=3e-3, seed=1)
    fit(model)
    mean, _ = lightrl.evaluate(model, num_episodes=10)
    assert mean == 24.0  # random actions score 12


@pytest.mark.parametrize("env_id", [DISCRETE_OBS_ID, GRID_OBS_ID], ids=["discrete-cell", "multi-discrete-row-column"])
@pytest.mark.parametrize("algo", ["DQN", "PPO"])
def test_learns_a_tiny_lake_from_discrete_observations(algo, env_id):
    if algo == "DQN":
        model = lightrl.DQN(env_id, total_timesteps=8000, learning_starts=500, exploration_fraction=0.3, train_frequency=4,
                            target_network_frequency=200, learning_rate=1e-3, batch_size=64, seed=1)  # fmt: skip
    else:
        model = lightrl.PPO(env_id, total_timesteps=8192, num_envs=4, num_steps=64, seed=1)
    fit(model)
    assert lightrl.evaluate(model, num_episodes=5) == (1.0, 0.0)  # the goal, round the hole


def test_ppo_learns_to_copy_multi_binary_observations():
    model = lightrl.PPO(BITS_OBS_ID, total_timesteps=8192, num_envs=4, num_steps=64, learning_rate=3e-3, seed=1)
    fit(model)
    mean, _ = lightrl.evaluate(model, num_episodes=10)
    assert mean == 24.0  # random actions score 12


@pytest.mark.parametrize("algo", ["SAC", "TD3"])
def test_off_policy_continuous_control_learns_a_dict_goal(algo):
    # Moving towards the goal, seen only through the Dict's "goal" part: standing still scores -3.2, the optimum -0.36.
    if algo == "SAC":
        model = lightrl.SAC(GOAL_BOX_ID, total_timesteps=1500, learning_starts=200, batch_size=64, policy_lr=1e-3, q_lr=1e-3, seed=1)
    else:
        model = lightrl.TD3(GOAL_BOX_ID, total_timesteps=1500, learning_starts=200, batch_size=64, learning_rate=1e-3, seed=1)
    fit(model)
    mean, _ = lightrl.evaluate(model, num_episodes=20)
    assert mean > -1.2


@pytest.mark.parametrize("algo", ["PPO", "DQN"])
def test_image_and_vector_dict_observations_run(algo):
    if algo == "PPO":
        model = lightrl.PPO(IMAGE_DICT_ID, total_timesteps=256, num_envs=2, num_steps=64, seed=1)
    else:
        model = lightrl.DQN(IMAGE_DICT_ID, total_timesteps=300, learning_starts=100, buffer_size=1000, batch_size=16, seed=1)
    fit(model)
    encoder = model.policy.agent.encoder if algo == "PPO" else model.q_network.encoder[0]
    assert isinstance(encoder, MultiInputEncoder) and isinstance(encoder.parts[0], NatureCNN)
    assert model.env_steps >= model.hparams.total_timesteps
    returns = lightrl.evaluation.episode_returns(model, num_episodes=2)
    assert len(returns) == 2 and all(np.isfinite(returns))
    # trainer.predict's default dataloader: the first Dict observations of eval_episodes fresh episodes.
    (actions,) = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).predict(model)
    assert actions.shape == (model.hparams.eval_episodes,) and set(actions.tolist()) <= {0, 1}


def test_async_collector_collects_dict_observations():
    # "module:id": the actor process (spawned) imports the module that registers the env.
    model = lightrl.PPO(f"space_envs:{GOAL_DICT_ID}", total_timesteps=8192, num_envs=4, num_steps=64, seed=1, collector="async")
    fit(model)
    assert model.env_steps == 8192 and lightrl.evaluate(model, num_episodes=20) == (1.0, 0.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: lightrl.PPO(GOAL_DICT_ID, seed=3, total_timesteps=512, num_envs=2, num_steps=32, timesteps_per_epoch=128, eval_episodes=2),
        lambda: lightrl.SAC(GOAL_BOX_ID, seed=3, total_timesteps=300, learning_starts=100, batch_size=16, hidden_sizes=[16],
                            buffer_size=1000, save_replay_buffer=True, timesteps_per_epoch=100, eval_episodes=1),
    ],
    ids=["ppo-dict", "sac-dict-replay"],
)
def test_resume_with_dict_observations_is_exact(tmp_path, make):
    a, b, c = run_resume_check(make, 200, tmp_path / "b.ckpt")
    assert max_abs_diff(a, b) > 0 and max_abs_diff(a, c) == 0.0


def test_replay_buffer_notices_a_cut_stream_of_dict_observations():
    # Equal contents in a new dict continue the stream; changed contents (an env reset by hand) end the
    # previous transition as truncated, bootstrapped from the observation the stream had reached.
    space = DictCounting.observation_space
    buffer = ReplayBuffer.for_spaces(10, 1, space, spaces.Discrete(2))
    zero, false = torch.zeros(1), torch.zeros(1, dtype=torch.bool)

    def obs(count):
        return {"count": torch.tensor([[float(count)]]), "parity": torch.tensor([count % 2])}

    buffer.add(obs(0), torch.zeros(1, dtype=torch.long), zero, false, false, obs(1))
    buffer.add(obs(1), torch.zeros(1, dtype=torch.long), zero, false, false, obs(2))  # a new dict, same contents
    buffer.add(obs(7), torch.zeros(1, dtype=torch.long), zero, false, false, obs(8))  # cut: 2 was never acted on
    assert buffer.truncations[:3, 0].tolist() == [False, True, False]
    data = buffer.sample(60, generator=torch.Generator().manual_seed(0))
    pairs = {(int(c), int(n)) for c, n in zip(data["observations"]["count"][:, 0], data["next_observations"]["count"][:, 0])}
    assert pairs == {(0, 1), (1, 2), (7, 8)}
