"""Action masking: masks from the observation, info or action_masks(); masked PPO, A2C and DQN; storage, errors, evaluation."""

from __future__ import annotations

import json
import re

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces

import lightrl
from lightrl.data.replay import ReplayBuffer
from lightrl.data.rollout import RolloutBuffer
from lightrl.envs.masks import ActionMask, ActionMaskObservation, masked_observation_space, no_valid_action
from lightrl.envs.vector import make_vec_env
from lightrl.errors import ActionMaskError, EnvError
from lightrl.losses.q_learning import dqn_target
from lightrl.nn.masking import MaskedActorCritic, MaskedQNetwork, masked_entropy, masked_logits
from lightrl.policies import EpsilonGreedyPolicy
from masked_envs import EPISODE_STEPS, MASKED_ID, MASKED_MULTI_ID, PickValid

TAXI_ID = "Taxi-v4" if "Taxi-v4" in gym.registry else "Taxi-v3"


def trainer(tmp_path=None, **kwargs) -> L.Trainer:
    defaults = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture
def invalid_actions(monkeypatch):
    """The invalid actions PickValid envs of this process are given (sync vector envs), counted from zero."""
    counts = {"invalid": 0}
    step = PickValid.step

    def counting_step(self, action):
        result = step(self, action)
        counts["invalid"] += result[1] < 0
        return result

    monkeypatch.setattr(PickValid, "step", counting_step)
    return counts


# ------------------------------------------------------------------------------------------- learning

LEARNERS = {
    "ppo": lambda **kw: lightrl.PPO(MASKED_ID, total_timesteps=8192, num_envs=8, num_steps=64, learning_rate=1e-3, ent_coef=0.0, **kw),
    "a2c": lambda **kw: lightrl.A2C(MASKED_ID, total_timesteps=12_000, num_envs=8, learning_rate=1e-3, **kw),
    "dqn": lambda **kw: lightrl.DQN(MASKED_ID, total_timesteps=6000, learning_starts=500, train_frequency=4, batch_size=64,
                                    target_network_frequency=250, learning_rate=1e-3, exploration_fraction=0.3, hidden_sizes=[64], **kw),
}  # fmt: skip


@pytest.mark.parametrize("algo", LEARNERS)
def test_masked_algorithms_take_no_invalid_action_and_learn(algo, invalid_actions):
    torch.manual_seed(0)
    model = LEARNERS[algo](timesteps_per_epoch=100_000)
    assert model.action_mask_source == "info"  # auto: on, since the env gives masks
    trainer().fit(model)
    assert model.env_steps >= model.hparams.total_timesteps and invalid_actions["invalid"] == 0
    # Picking valid actions at random scores about EPISODE_STEPS / 3; the targets, EPISODE_STEPS.
    mean, _ = lightrl.evaluate(model, num_episodes=10, seed=1000)
    assert mean >= 0.9 * EPISODE_STEPS
    stochastic, _ = lightrl.evaluate(model, num_episodes=10, seed=1000, deterministic=False)
    assert stochastic >= 0 and invalid_actions["invalid"] == 0


def test_without_masks_the_same_agent_takes_invalid_actions(invalid_actions):
    model = lightrl.PPO(MASKED_ID, total_timesteps=512, num_envs=4, num_steps=64, action_masking=False)
    assert model.action_mask_source is None and model.observation_space == spaces.Box(0.0, 1.0, (6,), np.float32)
    trainer().fit(model)
    assert invalid_actions["invalid"] > 0  # what the masked runs above are tested against


def test_masked_ppo_learns_multi_discrete_actions(invalid_actions):
    torch.manual_seed(0)
    model = lightrl.PPO(MASKED_MULTI_ID, total_timesteps=8192, num_envs=8, num_steps=64, learning_rate=1e-3, ent_coef=0.0)
    assert model.observation_space["action_mask"] == ActionMask([3, 4])
    trainer().fit(model)
    assert invalid_actions["invalid"] == 0
    assert lightrl.evaluate(model, num_episodes=10, seed=1000)[0] >= 0.8 * EPISODE_STEPS


def test_masked_ppo_with_the_async_collector_takes_only_valid_actions():
    # "module:id": the actor process imports the module that registers the env.
    model = lightrl.PPO(f"masked_envs:{MASKED_ID}", total_timesteps=2048, num_envs=4, num_steps=64, collector="async", vectorization="sync")
    trainer().fit(model)
    returns = list(model.source.recent_returns)
    assert model.env_steps == 2048 and returns and min(returns) >= 0  # an invalid action makes an episode's return negative


# ------------------------------------------------------------------------------------------- sources


@pytest.mark.parametrize("mask_in, source, obs_keys", [
    ("obs", "obs", ["action_mask", "target"]),
    ("info", "info", ["action_mask", "obs"]),
    ("method", "method", ["action_mask", "obs"]),
])  # fmt: skip
def test_the_mask_source_is_found_in_order_of_precedence(mask_in, source, obs_keys):
    # Every variant also has action_masks(): the observation's entry and info win over it.
    model = lightrl.PPO(MASKED_ID, env_kwargs={"mask_in": mask_in})
    assert model.action_mask_source == source and list(model.observation_space.spaces) == obs_keys
    assert isinstance(model.policy.agent, MaskedActorCritic)
    assert lightrl.PPO(MASKED_ID, env_kwargs={"mask_in": mask_in}, action_masking=False).action_mask_source is None


def test_cartpole_gives_no_mask_and_builds_the_plain_networks():
    model = lightrl.PPO("CartPole-v1")
    assert model.action_mask_source is None and type(model.policy.agent).__name__ == "ActorCritic"
    assert type(lightrl.DQN("CartPole-v1").q_network).__name__ == "QNetwork"


def test_taxi_info_masks_follow_autoreset_into_the_next_episode():
    """After an episode ends, the reset observation carries the new episode's mask (SAME_STEP autoreset)."""
    wrapper = lambda env: ActionMaskObservation(env, "info", TAXI_ID)  # noqa: E731
    envs = make_vec_env(TAXI_ID, 3, seed=0, env_kwargs={"max_episode_steps": 20}, wrappers=[wrapper])
    taxis = [env.unwrapped for env in envs.unwrapped.envs]
    obs, _ = envs.reset()
    generator = np.random.default_rng(0)
    ends = 0
    for _ in range(60):
        for i, taxi in enumerate(taxis):
            assert obs["action_mask"].dtype == np.bool_
            assert np.array_equal(obs["action_mask"][i], taxi.action_mask(int(obs["obs"][i])).astype(bool))
        actions = np.array([generator.choice(np.flatnonzero(mask)) for mask in obs["action_mask"]])
        obs, _, terminated, truncated, _ = envs.step(actions)
        ends += int((terminated | truncated).sum())
    envs.close()
    assert ends >= 6  # every sub-env went through autoresets


def test_ppo_on_taxi_reads_the_info_mask_and_never_makes_an_illegal_pickup_or_dropoff():
    model = lightrl.PPO(TAXI_ID, total_timesteps=2048, num_envs=4, num_steps=128)
    assert model.action_mask_source == "info" and model.observation_space["obs"] == spaces.Discrete(500)
    rewards = []
    trainer(callbacks=[RewardRecorder(rewards)]).fit(model)
    rewards = torch.cat(rewards)
    assert rewards.numel() == 2048 and set(rewards.unique().tolist()) <= {-1.0, 20.0}  # -10: an illegal pickup or dropoff


class RewardRecorder(L.Callback):
    def __init__(self, rewards):
        self.rewards = rewards

    def on_train_start(self, trainer, module):
        collector = module.source.collector
        step = collector.step

        def recording(actions):
            result = step(actions)
            self.rewards.append(result.rewards.clone())
            return result

        collector.step = recording


# ------------------------------------------------------------------------------------------- networks


def test_masked_logits_give_invalid_actions_no_probability_in_every_precision():
    mask = torch.tensor([[True, False, True, False]])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        logits = torch.tensor([[0.5, 30.0, -0.5, 2.0]], dtype=dtype)
        masked = masked_logits(logits, mask)
        assert torch.isfinite(masked).all() and masked[0, 1] == torch.finfo(dtype).min
        probs = masked.float().softmax(-1)
        assert probs[0, 1] == 0 and probs[0, 3] == 0 and probs.sum().item() == pytest.approx(1.0)
        log_probs = masked.float().log_softmax(-1)
        assert torch.isfinite(log_probs).all()


def test_entropy_is_taken_over_the_valid_actions_only():
    mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
    log_probs = masked_logits(torch.zeros(2, 4), mask).log_softmax(-1)
    assert masked_entropy(log_probs, mask).tolist() == pytest.approx([np.log(2), np.log(4)])


def test_masked_actor_critic_scores_and_samples_multi_discrete_actions_per_dimension():
    space = masked_observation_space(spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 3]))
    agent = MaskedActorCritic(space, spaces.MultiDiscrete([2, 3]))
    mask = torch.tensor([[False, True, True, False, True]] * 500)
    obs = {"obs": torch.randn(500, 3), "action_mask": mask}
    actions, log_prob, entropy, _ = agent.get_action_and_value(obs)
    assert set(actions[:, 0].tolist()) == {1} and set(actions[:, 1].tolist()) == {0, 2}
    assert torch.allclose(entropy, agent.get_action_and_value(obs, actions)[2])
    # Dimension 0 has one valid value (probability 1), dimension 1 two: at least log(1/2) of the log-probability is theirs.
    assert (log_prob <= 0).all() and (log_prob > -30).all()
    assert (agent.act(obs, deterministic=True)[:, 0] == 1).all()


def test_masked_q_network_acts_and_bootstraps_over_valid_actions():
    space = masked_observation_space(spaces.Box(-1, 1, (2,)), spaces.Discrete(3))
    q = MaskedQNetwork(space, spaces.Discrete(3), hidden_sizes=[8])
    with torch.no_grad():
        q.head.weight.zero_()
        q.head.bias.copy_(torch.tensor([3.0, 2.0, 1.0]))
    mask = torch.tensor([[False, True, True], [False, False, True], [False, False, False]])
    values = q({"obs": torch.zeros(3, 2), "action_mask": mask})
    assert values.argmax(1).tolist() == [1, 2, 0]  # a row without valid actions keeps its Q-values
    target = dqn_target(values, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), 0.5)
    assert target.tolist() == [1.0, 0.5, 0.0]


def test_epsilon_greedy_random_actions_are_uniform_over_the_valid_ones():
    space = masked_observation_space(spaces.Box(-1, 1, (2,)), spaces.Discrete(5))
    policy = EpsilonGreedyPolicy(MaskedQNetwork(space, spaces.Discrete(5), [8]), space, spaces.Discrete(5), learning_starts=10**9)
    policy.exploration.reseed(0)
    mask = torch.tensor([[True, False, True, False, True]] * 3000)
    actions = policy.explore({"obs": torch.zeros(3000, 2), "action_mask": mask})
    counts = torch.bincount(actions, minlength=5).tolist()
    assert counts[1] == counts[3] == 0 and all(900 < c < 1100 for c in (counts[0], counts[2], counts[4]))


# ------------------------------------------------------------------------------------------- storage


def test_replay_buffer_stores_masks_as_bits_and_returns_them_exactly():
    space = masked_observation_space(spaces.Box(-1, 1, (3,)), spaces.Discrete(13))
    buffer = ReplayBuffer.for_spaces(64, 4, space, spaces.Discrete(13))
    assert buffer.packer.nbytes == 3 * 4 + 2  # 13 mask entries in 2 bytes
    generator = torch.Generator().manual_seed(0)
    stream = [{"obs": torch.randn(4, 3, generator=generator), "action_mask": torch.rand(4, 13, generator=generator) < 0.5} for _ in range(9)]
    for t in range(8):
        buffer.add(stream[t], torch.zeros(4, dtype=torch.long), torch.zeros(4), torch.zeros(4), torch.zeros(4), stream[t + 1])
    sample = buffer.sample(200, generator=torch.Generator().manual_seed(1))
    stored = {(tuple(o.tolist()), tuple(m.tolist())) for s in stream for o, m in zip(s["obs"], s["action_mask"])}
    for key in ("observations", "next_observations"):
        assert sample[key]["action_mask"].dtype == torch.bool
        pairs = {(tuple(o.tolist()), tuple(m.tolist())) for o, m in zip(sample[key]["obs"], sample[key]["action_mask"])}
        assert pairs <= stored


def test_rollout_buffer_stores_masks_as_bool():
    space = masked_observation_space(spaces.Box(-1, 1, (3,)), spaces.Discrete(4))
    rollout = RolloutBuffer(8, 2, space, spaces.Discrete(4))
    assert rollout.obs["action_mask"].dtype == torch.bool and rollout.obs["action_mask"].shape == (8, 2, 4)


def test_no_valid_action_finds_rows_with_an_empty_group():
    masks = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
    assert no_valid_action(masks, (2, 3)).tolist() == [1, 2, 3]
    assert no_valid_action(masks, (5,)).tolist() == [3]


# ------------------------------------------------------------------------------------------- evaluation and predict


def test_predict_gives_valid_actions_for_the_first_observations():
    model = lightrl.DQN(MASKED_ID, learning_starts=0)
    with torch.no_grad():
        for p in model.q_network.parameters():
            p.normal_()
    (obs,) = list(model.predict_dataloader())
    actions = torch.cat(trainer().predict(model))
    assert len(actions) == model.hparams.eval_episodes
    assert obs["action_mask"][torch.arange(len(actions)), actions].all()


# ------------------------------------------------------------------------------------------- errors


def test_a_mask_without_valid_action_stops_training_naming_env_sub_env_and_step_and_keeps_a_checkpoint(tmp_path):
    model = lightrl.PPO(MASKED_ID, env_kwargs={"empty_mask_at": 5}, total_timesteps=4096, num_envs=2, num_steps=32)
    with pytest.raises(ActionMaskError) as error:
        trainer(tmp_path, enable_checkpointing=True).fit(model)
    message = str(error.value)
    assert message.startswith(
        f"env '{MASKED_ID}' gave sub-env(s) [0, 1] an action mask with no valid action, at vector step 5 of its envs (0: the first reset). "
        "An observation that is acted on needs a valid action: end the episode instead. At env step 0 (PPO, rank 0); training stopped, "
        "the state from before it is saved in "
    )
    path = re.search(r"saved in (\S+\.ckpt)", message).group(1)
    assert torch.load(path, weights_only=True)["lightrl"]["env_steps"] == 0
    assert isinstance(error.value, EnvError)  # the CLI prints it as one line


@pytest.mark.parametrize("kwargs, message", [
    ({"mask_shape": 5}, f"env '{MASKED_ID}' gave an action mask of shape (5,) in info['action_mask']; it must be a vector of 6 entries, one per action, shape (6,)."),
    ({"mask_dtype": np.float32}, f"env '{MASKED_ID}' gave an action mask of dtype float32 in info['action_mask']; give bools (or integers 0 and 1), True where the action is valid."),
    ({"mask_in": "obs", "mask_shape": 4}, f"env '{MASKED_ID}' declares observation['action_mask'] as MultiBinary(4); for Discrete(6) it must have shape (6,)."),
    ({"mask_in": "method", "mask_shape": 7}, f"env '{MASKED_ID}' gave an action mask of shape (7,) in action_masks(); it must be a vector of 6 entries, one per action, shape (6,)."),
])  # fmt: skip
def test_a_mask_of_the_wrong_shape_or_dtype_is_refused_before_training(kwargs, message):
    with pytest.raises(EnvError) as error:
        lightrl.A2C(MASKED_ID, env_kwargs=kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("make, message", [
    (lambda: lightrl.SAC("Pendulum-v1", action_masking=True),
     "action_masking=True is not supported by SAC; use PPO or A2C (Discrete, MultiDiscrete actions) or DQN (Discrete)."),
    (lambda: lightrl.TD3("Pendulum-v1", action_masking=True),
     "action_masking=True is not supported by TD3; use PPO or A2C (Discrete, MultiDiscrete actions) or DQN (Discrete)."),
    (lambda: lightrl.PPO("Pendulum-v1", action_masking=True),
     "action_masking=True needs Discrete or 1-D MultiDiscrete actions, but env 'Pendulum-v1' has Box(-2.0, 2.0, (1,), float32); set action_masking=False."),
    (lambda: lightrl.PPO("CartPole-v1", action_masking=True),
     "action_masking=True, but env 'CartPole-v1' gives no action mask: give an 'action_mask' entry in its Dict observations, "
     "info['action_mask'], or an action_masks() method; or set action_masking=None."),
    (lambda: lightrl.PPO(MASKED_ID, vectorization="envpool"),
     "action masks are read by a wrapper of each sub-env, which vectorization='envpool' has not; use 'sync' or 'async'."),
    (lambda: lightrl.DQN(MASKED_ID, action_masking="yes"),
     "action_masking must be True, False or None (on when the env gives a mask), got 'yes'."),
])  # fmt: skip
def test_masking_where_it_cannot_apply_is_one_line(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value) == message


def test_cli_fits_evaluates_and_predicts_with_masks(tmp_path, monkeypatch, capsys, invalid_actions):
    from lightrl.cli import main

    monkeypatch.chdir(tmp_path)
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.logger", "false"]
    main(["fit", "--model", "PPO", "--model.env_id", MASKED_ID, "--model.total_timesteps", "1024", "--model.eval_episodes", "4",
          "--model.action_masking", "true", "--trainer.default_root_dir", "runs", *quiet])  # fmt: skip
    last = str(next(tmp_path.glob("runs/**/last.ckpt")))
    capsys.readouterr()
    main(["evaluate", last, "--num_episodes", "5", "--stochastic"])
    assert capsys.readouterr().out.startswith(f"PPO on {MASKED_ID}: return ")
    main(["predict", "--model", "PPO", "--ckpt_path", last, *quiet])
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"PPO on {MASKED_ID}: deterministic actions for 4 observations:" and len(json.loads(out[-1])) == 4
    assert invalid_actions["invalid"] == 0


def test_observation_normalization_leaves_the_mask_alone(invalid_actions):
    model = lightrl.PPO(MASKED_ID, total_timesteps=256, num_envs=4, num_steps=32, normalize_obs=True)
    assert [key for key, _ in model.policy.obs_normalizer.parts] == ["obs"]
    trainer().fit(model)
    obs = {"obs": torch.ones(2, 6), "action_mask": torch.tensor([[True, False, False, False, False, False]] * 2)}
    assert model.policy.preprocess(obs)["action_mask"] is obs["action_mask"] and model.policy.act(obs).tolist() == [0, 0]
    assert invalid_actions["invalid"] == 0
