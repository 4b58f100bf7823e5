"""PPO and A2C under a real Trainer: determinism, the env-step budget, save/load, spaces, learning, evaluate()."""

from __future__ import annotations

import importlib.util

import lightning as L
import numpy as np
import pytest
import torch
from conftest import COUNTING_ID, EVEN_EPISODE, ODD_EPISODE, recipe

import lightrl
from lightrl.nn.cnn import NatureCNN


def make_trainer(**overrides) -> L.Trainer:
    return L.Trainer(
        **{
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "max_epochs": -1,
            "accelerator": "cpu",
            **overrides,
        }
    )


def fit(model: lightrl.RLModule) -> L.Trainer:
    trainer = make_trainer()
    trainer.fit(model)
    return trainer


def parameters(model: lightrl.RLModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ----------------------------------------------------------------------------- (a) determinism


def test_same_seed_same_parameters():
    initial = parameters(lightrl.PPO("CartPole-v1", total_timesteps=2048, seed=3))
    first, second, other = (lightrl.PPO("CartPole-v1", total_timesteps=2048, seed=s) for s in (3, 3, 4))
    trainer = fit(first)
    fit(second)
    fit(other)

    a, b, c = parameters(first), parameters(second), parameters(other)
    assert a.keys() == b.keys() == initial.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert any(not torch.equal(a[name], c[name]) for name in a)
    assert any(not torch.equal(a[name], initial[name]) for name in a)  # training did change the weights

    # Trainer state of the default recipe (4 envs x 128 steps, 4 epochs x 4 minibatches): 4 iterations.
    assert first.env_steps == 2048
    assert trainer.global_step == 4 * 4 * 4
    assert first.source.closed  # envs are closed at teardown


# ----------------------------------------------------------------------------- (b) trainer state


def test_ppo_budget_rounds_up_to_whole_rollouts():
    model = lightrl.PPO("CartPole-v1", num_envs=4, num_steps=128, update_epochs=2, num_minibatches=8, total_timesteps=2000, seed=1)
    assert model.num_iterations == 4  # ceil(2000 / 512)
    trainer = fit(model)
    assert model.env_steps == 2048  # the first multiple of 4 * 128 that reaches 2000
    assert trainer.global_step == 4 * 2 * 8  # iterations * update_epochs * num_minibatches optimizer steps


def test_a2c_one_optimizer_step_per_rollout():
    model = lightrl.A2C("CartPole-v1", num_envs=8, num_steps=5, total_timesteps=410, seed=1)
    assert model.num_iterations == 11  # ceil(410 / 40)
    trainer = fit(model)
    assert model.env_steps == 440
    assert trainer.global_step == 11


# ----------------------------------------------------------------------------- (c) save / load


@pytest.mark.parametrize(
    "algo, kwargs, env_steps",
    [
        ("PPO", {"num_envs": 4, "num_steps": 64, "total_timesteps": 512}, 512),
        ("A2C", {"num_envs": 4, "num_steps": 5, "total_timesteps": 200}, 200),
    ],
)
def test_save_load_round_trip(algo, kwargs, env_steps, tmp_path):
    cls = getattr(lightrl, algo)
    model = cls("CartPole-v1", seed=5, **kwargs)
    trainer = fit(model)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)

    loaded = cls.load_from_checkpoint(path)
    assert type(loaded) is cls
    assert dict(loaded.hparams) == dict(model.hparams)
    assert loaded.env_steps == model.env_steps == env_steps
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    obs = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.policy.act(obs), model.policy.act(obs))
        assert torch.equal(loaded.policy.agent.get_value(obs), model.policy.agent.get_value(obs))


# ----------------------------------------------------------------------------- (d) Box actions


def test_ppo_box_actions_pendulum(tmp_path):
    model = lightrl.PPO("Pendulum-v1", num_envs=2, num_steps=64, num_minibatches=2, total_timesteps=384, seed=2)
    trainer = fit(model)
    assert model.env_steps == 384
    assert trainer.global_step == 3 * 4 * 2
    actions = model.rollout.actions
    assert actions.shape == (64, 2, 1) and actions.dtype == torch.float32
    assert torch.isfinite(actions).all() and actions.std() > 0  # sampled, not constant
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model.rollout.logprobs).all()

    obs = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        greedy = model.policy.act(obs)
        assert greedy.shape == (32, 1) and torch.isfinite(greedy).all()
        assert torch.equal(greedy, model.policy.act(obs))
        assert torch.isfinite(model.policy.explore(obs)).all()
    # Round trip of a Gaussian policy: the mean action is reproduced bit for bit.
    trainer.save_checkpoint(tmp_path / "pendulum.ckpt")
    loaded = lightrl.PPO.load_from_checkpoint(tmp_path / "pendulum.ckpt")
    with torch.no_grad():
        assert torch.equal(loaded.policy.act(obs), greedy)
    assert torch.equal(loaded.policy.agent.actor_logstd, model.policy.agent.actor_logstd)


# ----------------------------------------------------------------------------- (e) Atari


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py (lightrl[atari])")
@pytest.mark.timeout(300)
def test_ppo_atari_pong_nature_cnn():
    model = lightrl.PPO("ALE/Pong-v5", num_envs=2, num_steps=32, total_timesteps=256, seed=1)
    assert isinstance(model.policy.agent.encoder, NatureCNN)
    trainer = fit(model)
    assert model.env_steps == 256
    assert trainer.global_step == 4 * 4 * 4
    buffer = model.rollout
    assert buffer.obs.shape == (32, 2, 4, 84, 84) and buffer.obs.dtype == torch.uint8  # frames stored as uint8
    assert buffer.obs.float().std() > 0
    assert ((buffer.actions >= 0) & (buffer.actions < 6)).all()
    assert set(buffer.rewards.unique().tolist()) <= {-1.0, 0.0, 1.0}  # clipped rewards
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------- (f) learning

# The RL-zoo CartPole recipe for PPO (rl-baselines3-zoo hyperparams/ppo.yml) in lightrl's names. SB3 does not clip
# the value loss (clip_range_vf=None), so neither do we: with CleanRL's clipped value loss, seed 1 reaches only 282
# after 100k steps (500 without). The zoo also anneals clip_range linearly from 0.2, which lightrl does not offer.
ZOO_PPO_CARTPOLE = dict(
    num_envs=8,
    num_steps=32,
    update_epochs=20,
    num_minibatches=1,
    gamma=0.98,
    gae_lambda=0.8,
    learning_rate=1e-3,
    ent_coef=0.0,
    anneal_lr=True,
    clip_vloss=False,
)
# Reduced budgets, measured here (evaluate(), 10 episodes, deterministic; random play scores about 22):
#   PPO zoo recipe, 40k steps, seeds 1-8: 439, 500, 500, 450, 500, 449, 365, 500 (about 8 s each).
#   A2C defaults,   60k steps, seeds 1-8: 330, 399, 232, 190, 500, 155, 416, 135 (about 9 s each);
#                  100k steps, seeds 1-6: 500, 391, 175, 500, 500, 500 (about 16 s each).
# Each bar sits well below the worst seed measured, so a change of seed or of float rounding still passes.
PPO_REDUCED_STEPS, PPO_REDUCED_THRESHOLD = 40_000, 250
A2C_REDUCED_STEPS, A2C_REDUCED_THRESHOLD = 60_000, 100


@pytest.mark.timeout(600)
def test_ppo_learns_cartpole_reduced_budget():
    model = lightrl.PPO("CartPole-v1", total_timesteps=PPO_REDUCED_STEPS, seed=1, **ZOO_PPO_CARTPOLE)
    fit(model)
    mean, std = lightrl.evaluate(model, num_episodes=10)
    assert mean >= PPO_REDUCED_THRESHOLD, (mean, std)


@pytest.mark.timeout(600)
def test_a2c_learns_cartpole_reduced_budget():
    model = lightrl.A2C("CartPole-v1", total_timesteps=A2C_REDUCED_STEPS, seed=1)
    fit(model)
    mean, std = lightrl.evaluate(model, num_episodes=10)
    assert mean >= A2C_REDUCED_THRESHOLD, (mean, std)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ppo_solves_cartpole_zoo_budget():
    model = lightrl.PPO("CartPole-v1", total_timesteps=100_000, seed=1, **ZOO_PPO_CARTPOLE)
    fit(model)
    mean, std = lightrl.evaluate(model, num_episodes=10)
    assert mean >= 475, (mean, std)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_throughput_recipe_still_solves_cartpole(seed):
    """experiments/ppo_cartpole_throughput.yaml (256 native sub-envs, 1M steps): eval >= 475 at the end of its budget."""
    model = lightrl.PPO(**{**recipe("ppo_cartpole_throughput.yaml"), "seed": seed})
    fit(model)
    assert model.env_steps >= 1_000_000
    mean, std = lightrl.evaluate(model, num_episodes=10, seed=1000)
    assert mean >= 475, (mean, std)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_race_recipe_solves_cartpole_within_32k_steps(seed):
    """experiments/ppo_cartpole_fast.yaml, stopped as a Lightning user would: EarlyStopping at a validation mean of 475.

    The seeds are the race's. On seeds 1-10 this way, 9 solved in 20k-37k env steps; seed 8 had not at 100k (docs/benchmarks.md).
    """
    from lightning.pytorch.callbacks import EarlyStopping

    model = lightrl.PPO(**{**recipe("ppo_cartpole_fast.yaml"), "seed": seed, "timesteps_per_epoch": 4096})  # the recipe's budget of 100k: stopped early
    stop = EarlyStopping(monitor="eval/return_mean", mode="max", stopping_threshold=475, patience=1000)
    trainer = make_trainer(callbacks=[stop], num_sanity_val_steps=0)
    trainer.fit(model)
    assert trainer.callback_metrics["eval/return_mean"] >= 475
    assert model.env_steps <= 32_768, model.env_steps


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a2c_solves_cartpole():
    model = lightrl.A2C("CartPole-v1", total_timesteps=500_000, seed=1)
    fit(model)
    mean, std = lightrl.evaluate(model, num_episodes=10)
    assert mean >= 475, (mean, std)


# ----------------------------------------------------------------------------- (g) evaluate()


@pytest.fixture(scope="module")
def counting_model():
    return lightrl.PPO(env_id=COUNTING_ID, num_envs=2, num_steps=6, seed=0)


def test_evaluate_one_episode_per_env(counting_model):
    # 3 episodes on 3 envs seeded 0, 1, 2: one episode each, whatever the policy does (actions are ignored).
    mean, std = lightrl.evaluate(counting_model, num_episodes=3)
    assert type(mean) is float and type(std) is float
    returns = [EVEN_EPISODE[0], ODD_EPISODE[0], EVEN_EPISODE[0]]  # 6, 10, 6
    assert mean == pytest.approx(22 / 3) and mean == pytest.approx(np.mean(returns))
    assert std == pytest.approx(np.std(returns))


def test_evaluate_balances_episodes_across_envs(counting_model):
    # 2 envs, 2 episodes each: env 0 (seed 0) ends episodes at steps 3 and 6, env 1 (seed 1) at 4 and 8.
    # Taking the first 4 episodes to finish would count env 0's short ones 3 times (6, 10, 6, 6: mean 7).
    mean, std = lightrl.evaluate(counting_model, num_episodes=4, max_envs=2)
    assert (mean, std) == (8.0, 2.0)
    # 5 episodes on 2 envs: shares of 2 and 3, so 6, 6, 10, 10, 10.
    mean, std = lightrl.evaluate(counting_model, num_episodes=5, max_envs=2)
    assert mean == pytest.approx(8.4) and std == pytest.approx(np.std([6, 6, 10, 10, 10]))


def test_evaluate_seed_and_mode(counting_model):
    assert lightrl.evaluate(counting_model, num_episodes=1, seed=0) == (6.0, 0.0)
    assert lightrl.evaluate(counting_model, num_episodes=1, seed=1) == (10.0, 0.0)
    counting_model.train()
    lightrl.evaluate(counting_model, num_episodes=1)
    assert counting_model.training  # the module's mode is restored
    counting_model.eval()
    lightrl.evaluate(counting_model, num_episodes=1)
    assert not counting_model.training
    counting_model.train()


@pytest.mark.parametrize("num_episodes", [0, -1])
def test_evaluate_rejects_no_episodes(counting_model, num_episodes):
    with pytest.raises(ValueError, match=f"num_episodes must be a positive integer, got {num_episodes}"):
        lightrl.evaluate(counting_model, num_episodes=num_episodes)
