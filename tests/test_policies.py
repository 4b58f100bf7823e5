"""The policies: what acts in collectors, the async actor, evaluation and export."""

from __future__ import annotations

import copy
import pickle

import lightning as L
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from gymnasium import spaces

import lightrl
from lightrl.policies import ActorCriticPolicy, EpsilonGreedyPolicy, Exploration, GaussianNoisePolicy, SquashedGaussianPolicy


def fit(model) -> L.Trainer:
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)
    return trainer


@pytest.mark.parametrize("make, policy_type", [
    (lambda: lightrl.PPO("CartPole-v1"), ActorCriticPolicy),
    (lambda: lightrl.A2C("Pendulum-v1"), ActorCriticPolicy),
    (lambda: lightrl.DQN("CartPole-v1"), EpsilonGreedyPolicy),
    (lambda: lightrl.SAC("Pendulum-v1"), SquashedGaussianPolicy),
    (lambda: lightrl.TD3("Pendulum-v1"), GaussianNoisePolicy),
])  # fmt: skip
def test_module_act_delegates_to_its_policy(make, policy_type):
    model = make()
    assert type(model.policy) is policy_type
    obs = torch.randn(16, *model.observation_space.shape)
    with torch.no_grad():
        assert torch.equal(model(obs), model.policy.act(obs))  # forward acts with the policy
        assert torch.equal(model.policy(obs), model.policy.act(obs))  # forward is the deterministic policy
        reseed(model.policy)
        explored = model.policy.explore(obs)
        reseed(model.policy)
        assert torch.equal(explored, model.policy.explore(obs))


def reseed(policy) -> None:
    """Restart every RNG exploration draws from: the torch RNG and, for off-policy policies, their generator."""
    torch.manual_seed(0)
    if policy.exploration is not None:
        policy.exploration.reseed(0)


def test_box_actions_of_act_are_clipped_into_the_bounds_and_explore_keeps_the_sample():
    model = lightrl.PPO("Pendulum-v1")
    with torch.no_grad():
        model.policy.agent.actor[-1].bias.fill_(5.0)  # means far above Pendulum's bound of 2
        obs = torch.randn(32, 3)
        assert torch.equal(model.policy.act(obs), torch.full((32, 1), 2.0))
        assert (model.policy.explore(obs) > 2.0).all()  # the rollout stores the sample its log-probability is of


def test_exploration_state_is_picklable_and_continues_where_it_was():
    exploration = Exploration(learning_starts=10, env_steps=5)
    exploration.reseed(123)
    torch.rand(3, generator=exploration.generator)  # move the generator on
    clone = pickle.loads(pickle.dumps(exploration))
    assert (clone.learning_starts, clone.env_steps, clone.seed) == (10, 5, 123) and clone.warming_up
    assert torch.equal(torch.rand(4, generator=clone.generator), torch.rand(4, generator=exploration.generator))


def policy_in_child(policy, queue):
    queue.put(policy.explore(torch.zeros(5, 4)).tolist())


def test_a_policy_explores_the_same_in_a_spawned_process():
    """The async actor gets the policy by pickling through spawn: its exploration must continue identically."""
    model = lightrl.DQN("CartPole-v1", learning_starts=100)
    policy = copy.deepcopy(model.policy)
    policy.exploration.reseed(7)
    policy.exploration.env_steps = 150  # past the warm-up: epsilon-greedy with the generator's coins
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=policy_in_child, args=(copy.deepcopy(policy).share_memory(), queue))
    child.start()
    remote = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert remote == policy.explore(torch.zeros(5, 4)).tolist()


def test_warm_up_actions_are_uniform_from_the_exploration_generator():
    model = lightrl.TD3("Pendulum-v1", learning_starts=100)
    policy = model.policy
    policy.exploration.reseed(3)
    actions = policy.explore(torch.zeros(2000, 3))
    assert actions.min() < -1.9 and actions.max() > 1.9  # uniform over [-2, 2], not noise around the actor
    policy.exploration.reseed(3)
    assert torch.equal(policy.explore(torch.zeros(2000, 3)), actions)
    policy.exploration.env_steps = 100  # warm-up over: the actor's action plus 0.1 * 2 noise
    with torch.no_grad():
        noisy = policy.explore(torch.zeros(2000, 3)) - policy.act(torch.zeros(2000, 3))
    assert 0.15 < noisy.std().item() < 0.25


def test_dqn_epsilon_follows_the_policys_schedule():
    model = lightrl.DQN("CartPole-v1", total_timesteps=1000, learning_starts=100, exploration_fraction=0.5, start_e=1.0, end_e=0.1)
    assert model.policy.epsilon_at(0) == 1.0 and model.policy.epsilon_at(250) == pytest.approx(0.55)
    assert model.policy.epsilon_at(500) == pytest.approx(0.1) and model.policy.epsilon_at(900) == pytest.approx(0.1)
    model.env_steps = 250
    assert model.epsilon == pytest.approx(0.55)


def test_compiled_acting_functions_are_not_pickled():
    model = lightrl.SAC("Pendulum-v1")
    model.policy.compiled = {"act": lambda obs: obs}  # a stand-in for a compiled function, which would not pickle
    clone = pickle.loads(pickle.dumps(model.policy))
    assert clone.compiled == {} and model.policy.compiled != {}


def test_checkpoints_from_before_the_policies_load(tmp_path):
    """Checkpoints written before the policies kept the acting networks at the top level ("q_network.*")."""
    model = lightrl.DQN("CartPole-v1", total_timesteps=200, learning_starts=100, train_frequency=50, hidden_sizes=[16])
    trainer = fit(model)
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    checkpoint = torch.load(tmp_path / "new.ckpt", weights_only=False)
    checkpoint["state_dict"] = {k.removeprefix("policy."): v for k, v in checkpoint["state_dict"].items()}
    assert "q_network.head.weight" in checkpoint["state_dict"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = lightrl.DQN.load_from_checkpoint(tmp_path / "old.ckpt")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_evaluation_acts_through_the_policy(monkeypatch):
    model = lightrl.DQN("CartPole-v1")
    calls = []
    act = model.policy.act
    monkeypatch.setattr(model.policy, "act", lambda obs: calls.append(len(obs)) or act(obs))
    lightrl.evaluate(model, num_episodes=2)
    assert calls and set(calls) == {2}


def test_base_policy_clips_only_box_actions_and_leaves_act_to_subclasses():
    policy = lightrl.policies.Policy(spaces.Box(-1, 1, (2,)), spaces.Discrete(2))
    with pytest.raises(NotImplementedError):
        policy.act(torch.zeros(1, 2))
    assert torch.equal(policy.clip(torch.tensor([5])), torch.tensor([5]))  # Discrete: nothing to clip
    box = lightrl.policies.Policy(spaces.Box(-1, 1, (2,)), spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, 3.0])))
    assert torch.equal(box.clip(torch.tensor([[5.0, -5.0]])), torch.tensor([[1.0, 0.0]]))
