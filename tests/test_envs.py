"""The env layer: per-rank seeding, SAME_STEP autoreset in rollouts, episode statistics, and early errors."""

from __future__ import annotations

import importlib.util
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import COUNTING_ID, EVEN_EPISODE, ODD_EPISODE
from torch.testing import assert_close

import lightrl
from lightrl.data.collector import CollectorSpec
from lightrl.data.rollout_source import RolloutSource
from lightrl.envs import AUTORESET_MODE, env_seeds, episode_stats, final_observations, make_vec_env
from lightrl.losses import gae

UNKNOWN_ID = "LightrlTest/NoSuchEnv-v0"

# ----------------------------------------------------------------------------- (a) seeding


def test_env_seeds_per_rank():
    assert env_seeds(1, 4, rank=1) == [5, 6, 7, 8]
    assert env_seeds(1, 4) == [1, 2, 3, 4]
    rank0, rank1 = set(env_seeds(7, 8, rank=0)), set(env_seeds(7, 8, rank=1))
    assert len(rank0) == len(rank1) == 8
    assert rank0.isdisjoint(rank1)


def test_make_vec_env_uses_same_step_autoreset_and_rank_seeds():
    envs = make_vec_env(COUNTING_ID, 3, seed=10, rank=2)
    try:
        assert envs.metadata["autoreset_mode"] == AUTORESET_MODE == gym.vector.AutoresetMode.SAME_STEP
        envs.reset()
        # Seeds 16, 17, 18: the CountingEnv keeps the parity of its seed.
        assert [env.unwrapped.terminates for env in envs.unwrapped.envs] == [True, False, True]
    finally:
        envs.close()


def test_cartpole_sub_envs_start_differently():
    envs = make_vec_env("CartPole-v1", 4, seed=0)
    obs, _ = envs.reset()
    envs.close()
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(obs[i], obs[j]), (i, j)


def test_same_seed_same_first_observations():
    first = []
    for seed in (3, 3, 4):
        envs = make_vec_env("CartPole-v1", 4, seed=seed)
        first.append(envs.reset()[0])
        envs.close()
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])
    # With gymnasium's per-env vector envs, seeding is by sub-env: rank 1's first env starts like a single-process
    # env seeded 3 + 1 * 4 = 7. (A native vector env draws all its sub-envs from one generator, seeded 7 here.)
    envs = make_vec_env("CartPole-v1", 4, seed=3, rank=1, vectorization="sync")
    single = make_vec_env("CartPole-v1", 1, seed=7, vectorization="sync")
    np.testing.assert_array_equal(envs.reset()[0][0], single.reset()[0][0])
    envs.close()
    single.close()


# ----------------------------------------------------------------------------- (b) autoreset in rollouts


@pytest.fixture
def counting_ppo():
    """PPO whose rollout source steps two CountingEnvs: sub-env 0 terminates at step 3, sub-env 1 is truncated at step 4."""
    model = lightrl.PPO(env_id=COUNTING_ID, num_envs=2, num_steps=6, gamma=0.9, gae_lambda=0.8, seed=0)
    model.source = RolloutSource(CollectorSpec(COUNTING_ID, num_envs=2, seed=0), num_steps=6, gamma=0.9, gae_lambda=0.8)
    yield model
    model.source.close()


def values_of(model, counts) -> torch.Tensor:
    """V([k]) for each count k, from the model's critic."""
    with torch.no_grad():
        return model.policy.agent.get_value(torch.tensor(counts, dtype=torch.float32).reshape(-1, 1))


def expected_gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda):
    """GAE by the definition, one env and one step at a time."""
    T, N = rewards.shape
    advantages = torch.zeros(T, N)
    for i in range(N):
        running = 0.0
        for t in reversed(range(T)):
            bootstrap = 0.0 if terminated[t, i] else gamma * next_values[t, i]
            delta = rewards[t, i] + bootstrap - values[t, i]
            running = delta + (0.0 if terminated[t, i] or truncated[t, i] else gamma * gae_lambda * running)
            advantages[t, i] = running
    return advantages


def test_rollout_buffer_contents_across_resets(counting_ppo):
    model = counting_ppo
    batch = model.collect_rollout()
    buffer = model.rollout
    assert model.env_steps == 12

    # Columns are time, rows are sub-envs (buffers are [T, N]; transposed here to read like the episodes).
    assert torch.equal(buffer.obs.squeeze(-1).T, torch.tensor([[0.0, 1, 2, 0, 1, 2], [0.0, 1, 2, 3, 0, 1]]))
    assert torch.equal(buffer.rewards.T, torch.tensor([[1.0, 2, 3, 1, 2, 3], [1.0, 2, 3, 4, 1, 2]]))
    assert torch.equal(buffer.terminated.T, torch.tensor([[0.0, 0, 1, 0, 0, 1], [0.0, 0, 0, 0, 0, 0]]))
    assert torch.equal(buffer.truncated.T, torch.tensor([[0.0, 0, 0, 0, 0, 0], [0.0, 0, 0, 1, 0, 0]]))
    # No transition spans a reset: the step after each episode end acts on the reset observation.
    done = (buffer.terminated + buffer.truncated).bool()
    for t, i in done[:-1].nonzero().tolist():
        assert buffer.obs[t + 1, i].item() == 0.0
    # Only the truncated episode keeps its final observation, [4]; the terminated ones ([3]) need none.
    assert [(t, i) for t, i, _ in buffer.truncated_obs] == [(3, 1)]
    assert torch.equal(buffer.stacked_truncated_obs(), torch.tensor([[4.0]]))
    # The env moved on: sub-env 0 was reset by its last step, sub-env 1 is at count 2.
    assert torch.equal(model.source.collector.obs, torch.tensor([[0.0], [2.0]]))
    # Stored values are V(obs) under the collecting policy, and actions are valid.
    assert_close(buffer.values, values_of(model, buffer.obs.reshape(-1).tolist()).reshape(6, 2))
    assert set(buffer.actions.unique().tolist()) <= {0, 1}


def test_rollout_bootstraps_truncation_from_final_obs(counting_ppo):
    model = counting_ppo
    batch = model.collect_rollout()
    buffer = model.rollout
    V = values_of(model, [0, 1, 2, 3, 4])  # V([k]) for every count the env can show

    # next_values as collect_rollout builds them: V of the next stored obs, of the obs after the rollout
    # ([0] for sub-env 0, [2] for sub-env 1) on the last step, and V([4]) where sub-env 1 was truncated.
    last_value = values_of(model, [0, 2])
    next_values = buffer.next_values(last_value, values_of(model, [4]))
    expected_next = torch.stack([
        torch.stack([V[1], V[2], V[0], V[1], V[2], V[0]]),  # after steps 2 and 5 (terminated): the reset obs
        torch.stack([V[1], V[2], V[3], V[4], V[1], V[2]]),  # step 3 (truncated): V(final_obs) = V([4]), not V([0])
    ]).T
    assert_close(next_values, expected_next)
    assert next_values[3, 1] != V[0]

    # The batch's advantages are GAE over exactly those successor values.
    hp = model.hparams
    advantages = expected_gae(buffer.rewards, buffer.values, expected_next, buffer.terminated, buffer.truncated, hp.gamma, hp.gae_lambda)
    assert_close(batch["advantages"], advantages.reshape(-1))
    assert_close(batch["returns"], (advantages + buffer.values).reshape(-1))
    reference_adv, _ = gae(buffer.rewards, buffer.values, expected_next, buffer.terminated, buffer.truncated, hp.gamma, hp.gae_lambda)
    assert_close(batch["advantages"], reference_adv.reshape(-1))

    # Flat index t * num_envs + i. Terminated steps (sub-env 0, t = 2 and 5; obs [2], reward 3): A = r - V(s).
    for t in (2, 5):
        assert_close(batch["advantages"][t * 2 + 0], 3.0 - V[2])
    # Truncated step (sub-env 1, t = 3; obs [3], reward 4): A = r + gamma * V(final_obs) - V(s).
    assert_close(batch["advantages"][3 * 2 + 1], 4.0 + hp.gamma * V[4] - V[3])


def test_second_rollout_continues_the_episodes(counting_ppo):
    model = counting_ppo
    model.collect_rollout()
    model.collect_rollout()
    buffer = model.rollout
    assert model.env_steps == 24
    assert torch.equal(buffer.obs.squeeze(-1).T, torch.tensor([[0.0, 1, 2, 0, 1, 2], [2.0, 3, 0, 1, 2, 3]]))
    assert torch.equal(buffer.rewards.T, torch.tensor([[1.0, 2, 3, 1, 2, 3], [3.0, 4, 1, 2, 3, 4]]))
    assert torch.equal(buffer.terminated.T, torch.tensor([[0.0, 0, 1, 0, 0, 1], [0.0, 0, 0, 0, 0, 0]]))
    assert torch.equal(buffer.truncated.T, torch.tensor([[0.0, 0, 0, 0, 0, 0], [0.0, 1, 0, 0, 0, 1]]))
    # The first rollout's truncation is forgotten; both of this rollout's end in [4].
    assert [(t, i) for t, i, _ in buffer.truncated_obs] == [(1, 1), (5, 1)]
    assert torch.equal(buffer.stacked_truncated_obs(), torch.tensor([[4.0], [4.0]]))
    assert torch.equal(model.source.collector.obs, torch.tensor([[0.0], [0.0]]))
    # Episodes finished over both rollouts: sub-env 0 four times (t = 2, 5, 8, 11), sub-env 1 three times (t = 3, 7, 11).
    returns, lengths = model.source.pop_finished_episodes()
    assert sorted(zip(returns, lengths)) == sorted([EVEN_EPISODE] * 4 + [ODD_EPISODE] * 3)


# ----------------------------------------------------------------------------- (c) episode statistics


def test_episode_stats_and_final_observations_of_counting_env():
    envs = make_vec_env(COUNTING_ID, 2, seed=0)
    envs.reset()
    finished, finals = [], []
    for _ in range(8):
        *_, infos = envs.step(np.zeros(2, dtype=np.int64))
        idx, returns, lengths = episode_stats(infos)
        assert idx.dtype == np.int64 and returns.dtype == np.float64 and lengths.dtype == np.int64
        finished.append(list(zip(idx.tolist(), returns.tolist(), lengths.tolist())))
        finals.append({i: obs.tolist() for i, obs in final_observations(infos).items()})
    envs.close()
    even, odd = (0, *EVEN_EPISODE), (1, *ODD_EPISODE)
    assert EVEN_EPISODE == (6.0, 3) and ODD_EPISODE == (10.0, 4)
    assert finished == [[], [], [even], [odd], [], [even], [], [odd]]
    assert finals == [{}, {}, {0: [3.0]}, {1: [4.0]}, {}, {0: [3.0]}, {}, {1: [4.0]}]


def test_episode_stats_of_empty_infos():
    idx, returns, lengths = episode_stats({})
    assert idx.shape == returns.shape == lengths.shape == (0,)
    assert final_observations({}) == {}


def test_both_episodes_end_in_one_step():
    # Seeds 0 and 2 are both even: both sub-envs terminate at step 3, reported together.
    envs = make_vec_env(COUNTING_ID, 2, seed=0, rank=1)
    assert envs.seeds == [2, 3]
    envs.close()
    envs = make_vec_env(COUNTING_ID, 3, seed=0)  # seeds 0, 1, 2
    envs.reset()
    for _ in range(3):
        *_, infos = envs.step(np.zeros(3, dtype=np.int64))
    idx, returns, lengths = episode_stats(infos)
    envs.close()
    assert idx.tolist() == [0, 2] and returns.tolist() == [6.0, 6.0] and lengths.tolist() == [3, 3]


# ----------------------------------------------------------------------------- (d) early, clear errors


def test_unknown_env_id():
    with pytest.raises(ValueError, match=re.escape(f"Unknown env id {UNKNOWN_ID!r}")):
        lightrl.PPO(env_id=UNKNOWN_ID)
    with pytest.raises(ValueError, match=re.escape(f"Unknown env id {UNKNOWN_ID!r}")):
        make_vec_env(UNKNOWN_ID, 2)


@pytest.mark.parametrize(
    "algo, kwargs, message",
    [
        ("PPO", {"num_envs": 4, "num_steps": 128, "num_minibatches": 3}, r"num_minibatches \(3\) must divide num_envs \* num_steps \(4 \* 128 = 512\)"),
        ("PPO", {"num_envs": 0}, r"num_envs must be a positive integer, got 0"),
        ("PPO", {"gamma": 0.0}, r"gamma must be in \(0, 1\], got 0.0"),
        ("PPO", {"gamma": 1.5}, r"gamma must be in \(0, 1\], got 1.5"),
        ("PPO", {"total_timesteps": 0}, r"total_timesteps must be a positive number of env steps, got 0"),
        ("PPO", {"gae_lambda": 1.1}, r"gae_lambda must be in \[0, 1\], got 1.1"),
        ("PPO", {"num_steps": 0}, r"num_steps must be a positive integer, got 0"),
        ("PPO", {"learning_rate": 0.0}, r"learning_rate must be positive, got 0.0"),
        ("PPO", {"update_epochs": 0}, r"update_epochs must be a positive integer, got 0"),
        ("PPO", {"clip_coef": -0.1}, r"clip_coef must be positive, got -0.1"),
        ("PPO", {"target_kl": 0.0}, r"target_kl must be positive or None, got 0.0"),
        ("PPO", {"vectorization": "threads"}, r"vectorization must be one of"),
        ("PPO", {"activation": "gelu"}, r"activation must be one of \['relu', 'tanh'\], got 'gelu'"),
        ("A2C", {"num_envs": 0}, r"num_envs must be a positive integer, got 0"),
        ("A2C", {"gamma": 1.5}, r"gamma must be in \(0, 1\], got 1.5"),
        ("A2C", {"max_grad_norm": 0.0}, r"max_grad_norm must be positive or None, got 0.0"),
    ],
)
def test_invalid_hyperparameters_raise_before_any_env_is_made(algo, kwargs, message):
    # The env id cannot be made: getting the hyperparameter error instead of the unknown-id one proves
    # that hyperparameters are checked before any env is created.
    with pytest.raises(ValueError, match=message):
        getattr(lightrl, algo)(env_id=UNKNOWN_ID, **kwargs)


# ----------------------------------------------------------------------------- vectorization="envpool"
requires_envpool = pytest.mark.skipif(importlib.util.find_spec("envpool") is None, reason="needs envpool (lightrl[envpool])")


@requires_envpool
def test_envpool_matches_gymnasium_same_step_semantics_exactly():
    """Driven by the same actions, the envpool adapter reports what lightrl's SAME_STEP gymnasium env would."""
    from lightrl.envs.vector import episode_stats, final_observations

    envs = make_vec_env("CartPole-v1", num_envs=3, seed=5, rank=1, vectorization="envpool")
    assert envs.metadata["autoreset_mode"] == AUTORESET_MODE
    obs, _ = envs.reset()
    returns, lengths, rng = np.zeros(3), np.zeros(3, dtype=int), np.random.default_rng(0)
    ended = 0
    for _ in range(200):
        prev = obs
        obs, rewards, terminated, truncated, infos = envs.step(rng.integers(0, 2, 3))
        assert (rewards == 1.0).all()  # never the 0-reward reset step of NEXT_STEP mode
        returns += rewards
        lengths += 1
        done = terminated | truncated
        finals = final_observations(infos)
        ids, ep_returns, ep_lengths = episode_stats(infos)
        assert sorted(finals) == ids.tolist() == np.flatnonzero(done).tolist()
        for i, r, l in zip(ids, ep_returns, ep_lengths):
            assert (r, l) == (returns[i], lengths[i])
            assert abs(finals[i][2]) > 0.2 or abs(finals[i][0]) > 2.4  # the terminal pole angle or cart position
            assert np.abs(obs[i]).max() <= 0.05  # the reset observation
            returns[i], lengths[i] = 0, 0
            ended += 1
        assert np.abs(obs[~done] - prev[~done]).max() < 1.0  # the others moved on one step
    assert ended > 5
    envs.close()


@requires_envpool
def test_envpool_adapter_equals_raw_envpool_with_the_reset_step_removed():
    """Exact values: the adapter's stream is envpool's NEXT_STEP stream with each reset step folded into the step that ended."""
    import envpool

    raw = envpool.make_gymnasium("CartPole-v1", num_envs=1, seed=7)
    envs = make_vec_env("CartPole-v1", num_envs=1, seed=7, vectorization="envpool")
    np.testing.assert_array_equal(envs.reset()[0], raw.reset()[0])
    actions = np.random.default_rng(1).integers(0, 2, 400)
    episode_return, episodes = 0.0, 0
    for a in actions:
        raw_obs, raw_reward, raw_term, raw_trunc, _ = raw.step(np.array([a]))
        obs, reward, term, trunc, infos = envs.step(np.array([a]))
        assert (reward[0], term[0], trunc[0]) == (raw_reward[0], raw_term[0], raw_trunc[0])
        episode_return += float(raw_reward[0])
        if raw_term[0] or raw_trunc[0]:
            np.testing.assert_array_equal(final_observations(infos)[0], raw_obs[0])
            reset_obs, reset_reward, *_ = raw.step(np.array([0]))  # NEXT_STEP: the action is ignored, reward 0
            assert reset_reward[0] == 0.0
            np.testing.assert_array_equal(obs[0], reset_obs[0])
            assert episode_stats(infos)[1].tolist() == [episode_return]
            episode_return, episodes = 0.0, episodes + 1
        else:
            np.testing.assert_array_equal(obs[0], raw_obs[0])
            assert "final_obs" not in infos
    assert episodes >= 10


@requires_envpool
def test_envpool_seeds_are_distinct_per_sub_env_and_rank():
    a = make_vec_env("CartPole-v1", num_envs=2, seed=1, rank=0, vectorization="envpool").reset()[0]
    b = make_vec_env("CartPole-v1", num_envs=2, seed=1, rank=1, vectorization="envpool").reset()[0]
    again = make_vec_env("CartPole-v1", num_envs=2, seed=1, rank=0, vectorization="envpool").reset()[0]
    rows = np.concatenate([a, b])
    assert len({tuple(r) for r in rows}) == 4
    np.testing.assert_array_equal(a, again)


@requires_envpool
def test_envpool_refuses_ids_it_does_not_provide():
    with pytest.raises(ValueError, match=f"vectorization='envpool' does not support env_id '{COUNTING_ID}'"):
        make_vec_env(COUNTING_ID, vectorization="envpool")


def test_envpool_missing_package_is_named(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "envpool", None)
    with pytest.raises(ValueError, match=r"needs the envpool package: pip install 'lightrl\[envpool\]'"):
        make_vec_env("CartPole-v1", vectorization="envpool")


@requires_envpool
def test_ppo_trains_on_envpool():
    import lightning as L
    import lightrl

    model = lightrl.PPO("CartPole-v1", total_timesteps=1024, num_envs=4, num_steps=64, vectorization="envpool")
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(model)
    assert model.env_steps == 1024


# ----------------------------------------------------------------------------- vectorization="native" (and "auto")
def test_auto_uses_the_native_cartpole_from_4_sub_envs_unless_wrappers_are_asked_for():
    from lightrl.envs.native import SameStepCartPole

    envs = make_vec_env("CartPole-v1", 4, seed=1)
    assert isinstance(envs.unwrapped, SameStepCartPole) and envs.metadata["autoreset_mode"] == AUTORESET_MODE
    few = make_vec_env("CartPole-v1", 3, seed=1)  # a Python loop over 1-3 sub-envs is cheaper
    assert isinstance(few.unwrapped, gym.vector.SyncVectorEnv)
    assert isinstance(make_vec_env("CartPole-v1", 1, vectorization="native").unwrapped, SameStepCartPole)  # asked for
    wrapped = make_vec_env("CartPole-v1", 4, seed=1, env_wrappers=[gym.wrappers.FlattenObservation])
    assert isinstance(wrapped.unwrapped, gym.vector.SyncVectorEnv)
    assert isinstance(make_vec_env("CartPole-v1", 2, vectorization="sync").unwrapped, gym.vector.SyncVectorEnv)
    assert isinstance(make_vec_env(COUNTING_ID, 2).unwrapped, gym.vector.SyncVectorEnv)  # no vector_entry_point
    for e in (envs, few, wrapped):
        e.close()


@pytest.mark.parametrize(
    "env_id, kwargs, message",
    [
        ("CartPole-v1", {"env_wrappers": [gym.wrappers.FlattenObservation]}, "per-env wrappers"),
        ("CartPole-v1", {"env_kwargs": {"render_mode": "human", "gravity": 3.0}}, r"CartPoleVectorEnv does not take \['gravity'\]"),
        (COUNTING_ID, {}, "has no vector_entry_point"),
    ],
)
def test_native_refusals_name_the_reason(env_id, kwargs, message):
    with pytest.raises(ValueError, match=f"vectorization='native' is not available here: .*{message}.*Use vectorization='sync'"):
        make_vec_env(env_id, 2, vectorization="native", **kwargs)
    with pytest.raises(ValueError, match="Unknown env id"):
        make_vec_env(UNKNOWN_ID, 2, vectorization="native")


def test_native_cartpole_equals_raw_next_step_stream_with_the_reset_step_folded():
    """Exact values: the SAME_STEP adapter's stream is CartPoleVectorEnv's NEXT_STEP stream without its reset steps.

    A time limit of 12 steps makes both endings happen: truncations (at 12) and terminations (actions mostly right).
    """
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    raw = CartPoleVectorEnv(num_envs=1, max_episode_steps=12)
    envs = make_vec_env("CartPole-v1", 1, seed=5, rank=2, vectorization="native", env_kwargs={"max_episode_steps": 12})
    np.testing.assert_array_equal(envs.reset()[0], raw.reset(seed=7)[0])  # seed + rank * num_envs
    episode_return, ends = 0.0, {"terminated": 0, "truncated": 0}
    for a in (np.random.default_rng(1).random(400) < 0.8).astype(np.int64):  # mostly right: the pole falls within 12 steps
        raw_obs, raw_reward, raw_term, raw_trunc, _ = raw.step(np.array([a]))
        obs, reward, term, trunc, infos = envs.step(np.array([a]))
        assert (reward[0], term[0], trunc[0]) == (raw_reward[0], raw_term[0], raw_trunc[0])
        episode_return += float(raw_reward[0])
        if raw_term[0] or raw_trunc[0]:
            np.testing.assert_array_equal(final_observations(infos)[0], raw_obs[0])  # what a truncation bootstraps from
            reset_obs, reset_reward, *_ = raw.step(np.array([0]))  # NEXT_STEP: the action is ignored, reward 0
            assert reset_reward[0] == 0.0
            np.testing.assert_array_equal(obs[0], reset_obs[0])
            assert episode_stats(infos)[1].tolist() == [episode_return]
            episode_return = 0.0
            ends["terminated" if raw_term[0] else "truncated"] += 1
        else:
            np.testing.assert_array_equal(obs[0], raw_obs[0])
            assert "final_obs" not in infos
    assert ends["terminated"] >= 5 and ends["truncated"] >= 5, ends
    envs.close()


def test_native_rollout_bootstraps_truncation_and_not_termination():
    """Exact values: a PPO rollout on the native CartPole stores the env's stream, and GAE bootstraps truncations only."""
    limit = {"max_episode_steps": 20}  # random play: some episodes end before 20 steps, others are cut there
    torch.manual_seed(0)  # the untrained policy samples from torch's global generator outside a Trainer
    model = lightrl.PPO(env_id="CartPole-v1", num_envs=2, num_steps=64, gamma=0.9, gae_lambda=0.8, seed=0, env_kwargs=limit, vectorization="native")
    model.source = RolloutSource(CollectorSpec("CartPole-v1", 2, seed=0, vectorization="native", env_kwargs=limit), num_steps=64, gamma=0.9, gae_lambda=0.8)
    batch = model.collect_rollout()
    buffer = model.rollout
    model.source.close()

    # Replay the rollout's actions on a fresh env of the same seed: the stream the buffer must hold.
    replay = make_vec_env("CartPole-v1", 2, seed=0, vectorization="native", env_kwargs=limit)
    obs = replay.reset()[0]
    T = 64
    expected = {key: np.zeros((T, 2)) for key in ("rewards", "terminated", "truncated")}
    observations, final_obs = [], {}
    for t in range(T):
        observations.append(obs)
        obs, rewards, term, trunc, infos = replay.step(buffer.actions[t].numpy().astype(np.int64))
        expected["rewards"][t], expected["terminated"][t], expected["truncated"][t] = rewards, term, trunc
        final_obs.update({(t, i): o for i, o in final_observations(infos).items() if trunc[i]})
    replay.close()
    assert torch.equal(buffer.obs, torch.tensor(np.stack(observations)))
    for key, value in expected.items():
        assert torch.equal(getattr(buffer, key), torch.tensor(value, dtype=torch.float32)), key
    assert expected["terminated"].sum() >= 2 and expected["truncated"].sum() >= 2
    assert [(t, i) for t, i, _ in buffer.truncated_obs] == sorted(final_obs)
    assert torch.equal(buffer.stacked_truncated_obs(), torch.tensor(np.stack([final_obs[k] for k in sorted(final_obs)])))

    # Successors: V(next stored obs); V(final obs) where truncated; V(obs after the rollout) at the end.
    with torch.no_grad():
        value = lambda x: model.policy.agent.get_value(torch.as_tensor(np.asarray(x), dtype=torch.float32)).reshape(-1)
        next_values = torch.stack([value(observations[t + 1]) if t + 1 < T else value(obs) for t in range(T)])
        for (t, i), o in final_obs.items():
            next_values[t, i] = value(o[None])[0]
    hp = model.hparams
    advantages = expected_gae(buffer.rewards, buffer.values, next_values, buffer.terminated, buffer.truncated, hp.gamma, hp.gae_lambda)
    assert_close(batch["advantages"], advantages.reshape(-1))
    # A terminated step's advantage is r - V(s): nothing is bootstrapped from the reset observation that follows it.
    t, i = map(int, np.argwhere(expected["terminated"])[0])
    assert_close(batch["advantages"][t * 2 + i], buffer.rewards[t, i] - buffer.values[t, i])


def test_native_cartpole_seeds_differ_per_rank_and_state_round_trips():
    a = make_vec_env("CartPole-v1", 2, seed=1, rank=0, vectorization="native")
    b = make_vec_env("CartPole-v1", 2, seed=1, rank=1, vectorization="native")
    rows = np.concatenate([a.reset()[0], b.reset()[0]])
    assert len({tuple(r) for r in rows}) == 4
    np.testing.assert_array_equal(make_vec_env("CartPole-v1", 2, seed=1, rank=0, vectorization="native").reset()[0], rows[:2])
    actions = np.random.default_rng(0).integers(0, 2, (60, 2))
    for x in actions[:30]:
        a.step(x)
    state = a.get_state()
    first = [a.step(x) for x in actions[30:]]
    c = make_vec_env("CartPole-v1", 2, seed=99, vectorization="native")
    c.reset()
    assert c.set_state(state) is True
    again = [c.step(x) for x in actions[30:]]
    for (o1, r1, *_), (o2, r2, *_) in zip(first, again):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
    with pytest.warns(UserWarning, match="SameStepCartPole cannot restore this state"):
        assert make_vec_env("CartPole-v1", 3, vectorization="native").set_state(state) is False
    with pytest.warns(UserWarning, match="the checkpoint holds a native vector env's state"):
        assert make_vec_env("CartPole-v1", 2, vectorization="sync").set_state(state) is False
    sync = make_vec_env("CartPole-v1", 2, vectorization="sync")
    sync.reset()
    with pytest.warns(UserWarning, match="SameStepCartPole cannot restore this state"):
        assert make_vec_env("CartPole-v1", 2, vectorization="native").set_state(sync.get_state()) is False


class CountingVectorEnv(gym.vector.VectorEnv):
    """A native vector env of counters that end (terminated) at 3; SAME_STEP only if asked for."""

    def __init__(self, num_envs: int = 1, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP, max_episode_steps=None):
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode(autoreset_mode)}

    def reset(self, *, seed=None, options=None):
        self.count = np.zeros(self.num_envs, dtype=np.float32)
        return self.count[:, None].copy(), {}

    def step(self, actions):
        self.count += 1
        terminated = self.count >= 3
        final = self.count[:, None].copy()
        self.count[terminated] = 0
        info = {"final_obs": final, "_final_obs": terminated} if terminated.any() else {}
        return self.count[:, None].copy(), np.ones(self.num_envs), terminated, np.zeros(self.num_envs, dtype=bool), info


class NextStepOnlyVectorEnv(CountingVectorEnv):
    def __init__(self, num_envs: int = 1, max_episode_steps=None):
        super().__init__(num_envs)


gym.register("LightrlTest/NativeCounting-v0", vector_entry_point=CountingVectorEnv)
gym.register("LightrlTest/NextStepOnly-v0", vector_entry_point=NextStepOnlyVectorEnv)


def test_native_takes_an_own_vector_env_in_same_step_mode_and_adds_episode_statistics():
    envs = make_vec_env("LightrlTest/NativeCounting-v0", 2, vectorization="native")
    assert envs.metadata["autoreset_mode"] == AUTORESET_MODE
    envs.reset()
    for _ in range(2):
        _, _, terminated, _, infos = envs.step(np.zeros(2, dtype=np.int64))
        assert not terminated.any() and episode_stats(infos)[0].size == 0
    obs, _, terminated, _, infos = envs.step(np.zeros(2, dtype=np.int64))
    assert terminated.all() and obs.ravel().tolist() == [0.0, 0.0]
    assert {i: o.tolist() for i, o in final_observations(infos).items()} == {0: [3.0], 1: [3.0]}
    ids, returns, lengths = episode_stats(infos)
    assert (ids.tolist(), returns.tolist(), lengths.tolist()) == ([0, 1], [3.0, 3.0], [3, 3])
    with pytest.raises(ValueError, match="vectorization='native': 'LightrlTest/NextStepOnly-v0'.s vector env does not take autoreset_mode=SAME_STEP"):
        make_vec_env("LightrlTest/NextStepOnly-v0", 2, vectorization="native")
