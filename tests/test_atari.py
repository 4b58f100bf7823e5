"""The Atari preset (lightrl.envs.atari) and the Nature-CNN encoder."""

from __future__ import annotations

import importlib.util
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from lightrl.envs.atari import AreaResize, EpisodicLife, MaxAndSkip, area_weights, is_atari, make_atari_env, sign_reward, sparse_rows
from lightrl.nn.cnn import NatureCNN

requires_ale = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py (lightrl[atari])")


def _wrapper(env: gym.Env, cls: type) -> gym.Env:
    while not isinstance(env, cls):
        env = env.env
    return env


@requires_ale
@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5", "PongNoFrameskip-v4", "BreakoutNoFrameskip-v4"])
def test_is_atari(env_id):
    assert is_atari(env_id) is True


@pytest.mark.parametrize("env_id", ["CartPole-v1", "NoSuchEnv-v0", "ALE/NoSuchGame-v5"])
def test_is_not_atari(env_id):
    assert is_atari(env_id) is False


def test_without_ale_py(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # makes `import ale_py` raise ImportError
    assert is_atari("NoSuchEnv-v0") is False
    with pytest.raises(ImportError, match=r"pip install lightrl\[atari\]"):
        make_atari_env("ALE/Pong-v5")


@requires_ale
def test_pong_observations_and_make_kwargs():
    env = make_atari_env("ALE/Pong-v5")
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert env.spec.kwargs["frameskip"] == 1
    assert env.spec.kwargs["repeat_action_probability"] == 0.0
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert (obs == obs[0]).all()  # the stack starts as 4 copies of the first frame
    obs, *_ = env.step(env.action_space.sample())
    assert obs in env.observation_space
    env.close()

    sticky = make_atari_env("ALE/Pong-v5", repeat_action_probability=0.25)
    assert sticky.spec.kwargs["repeat_action_probability"] == 0.25
    sticky.close()


@requires_ale
@pytest.mark.parametrize("kwargs", [{"frameskip": 4}, {"obs_type": "rgb"}])
def test_fixed_make_kwargs_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        make_atari_env("ALE/Pong-v5", **kwargs)


@requires_ale
def test_non_atari_id_is_rejected():
    with pytest.raises(ValueError, match="not an Atari env"):
        make_atari_env("CartPole-v1")


@requires_ale
def test_rewards_are_clipped_but_episode_return_is_raw():
    # Space Invaders pays 5 to 30 points per alien, so clipping is visible within a few hundred steps.
    env = make_atari_env("ALE/SpaceInvaders-v5")
    env.action_space.seed(0)
    env.reset(seed=0)
    rewards = []
    for _ in range(300):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        rewards.append(reward)
        if terminated or truncated:
            env.reset()
    assert set(rewards) <= {-1.0, 0.0, 1.0}
    assert sum(rewards) > 0
    raw_return = _wrapper(env, gym.wrappers.RecordEpisodeStatistics).episode_returns
    assert raw_return >= 5 * sum(rewards)
    env.close()


def test_sign_reward():
    assert [sign_reward(r) for r in (7.0, 0.5, 0.0, -0.1, -30)] == [1.0, 1.0, 0.0, -1.0, -1.0]


@requires_ale
def test_episodic_life_on_breakout():
    env = make_atari_env("ALE/Breakout-v5")
    ale = env.unwrapped.ale
    env.action_space.seed(0)
    env.reset(seed=0)
    assert ale.lives() == 5
    life_lengths, steps, life_losses = [], 0, 0
    for _ in range(5000):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        if not (terminated or truncated):
            assert "episode" not in info
            continue
        life_lengths.append(steps)
        if ale.lives() > 0:  # a life lost, the game goes on
            life_losses += 1
            assert terminated and "episode" not in info
            lives, frame = ale.lives(), ale.getEpisodeFrameNumber()
            env.reset()
            assert ale.lives() == lives
            assert ale.getEpisodeFrameNumber() > frame
            steps = 0
            continue
        episode = info["episode"]  # game over: statistics of the whole game
        break
    else:
        pytest.fail("Breakout did not end within 5000 random steps")
    assert life_losses == 4
    total_steps = sum(life_lengths)
    # Frames: 4 per agent step (the last one may stop early), plus no-ops and FIRE presses on resets.
    assert episode["l"] > 4 * (total_steps - 1) > max(life_lengths)
    env.reset()
    assert ale.lives() == 5  # after game over, reset starts a new game
    env.close()


def test_area_weights_average_blocks():
    weights = area_weights(6, 3)
    np.testing.assert_allclose(weights, np.kron(np.eye(3), [[0.5, 0.5]]))
    assert np.allclose(area_weights(210, 84).sum(axis=1), 1.0)


@pytest.mark.parametrize("size_in", [210, 160, 84])
def test_sparse_rows_match_dense_product(size_in):
    weights = area_weights(size_in, 84)
    index, sparse = sparse_rows(weights)
    x = np.random.default_rng(0).random((size_in, 5))
    np.testing.assert_allclose((sparse[:, :, None] * x[index]).sum(axis=1), weights @ x, rtol=1e-6)


@requires_ale
def test_area_resize_keeps_flat_frames_flat():
    env = gym.make("ALE/Pong-v5", obs_type="grayscale")
    resize = AreaResize(env)
    frame = np.full((210, 160), 87, dtype=np.uint8)
    assert resize.observation_space == gym.spaces.Box(0, 255, (84, 84), np.uint8)
    np.testing.assert_array_equal(resize.observation(frame), np.full((84, 84), 87, dtype=np.uint8))
    env.close()


def test_nature_cnn_shapes():
    encoder = NatureCNN(4)
    assert encoder.out_features == 512
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    features = encoder(obs)
    assert features.shape == (3, 512) and features.dtype == torch.float32
    torch.testing.assert_close(features, encoder(obs.float()))
    assert NatureCNN(1, features_dim=64, image_size=(64, 64))(torch.zeros(2, 1, 64, 64)).shape == (2, 64)


def test_nature_cnn_init():
    encoder = NatureCNN(4)
    layers = [m for m in encoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [tuple(m.weight.shape) for m in layers] == [(32, 4, 8, 8), (64, 32, 4, 4), (64, 64, 3, 3), (512, 3136)]
    for layer in layers:
        assert (layer.bias == 0).all()
        weight = layer.weight.flatten(1)
        torch.testing.assert_close(weight @ weight.T, 2 * torch.eye(weight.shape[0]), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- ale-py's AtariVectorEnv ("native", the default)
def python_preset_without_resets(env_id: str) -> gym.Env:
    """The Python wrappers' preset without its random no-ops and FIRE on reset, which ale-py's C++ does its own way."""
    env = gym.make(env_id, repeat_action_probability=0.0, frameskip=1, obs_type="grayscale")
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = EpisodicLife(MaxAndSkip(env))
    env = gym.wrappers.TransformReward(AreaResize(env), sign_reward)
    return gym.wrappers.FrameStackObservation(env, 4)


@requires_ale
def test_native_atari_is_the_default_with_the_preset():
    from lightrl.envs import make_vec_env
    from lightrl.envs.native import AtariVector

    envs = make_vec_env("ALE/Breakout-v5", 2, seed=1)
    assert isinstance(envs.unwrapped, AtariVector)
    assert envs.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert envs.single_action_space == gym.spaces.Discrete(4)
    obs, _ = envs.reset()
    assert obs.shape == (2, 4, 84, 84) and not np.array_equal(obs[0, 0], obs[0, -1])  # the first stack is padded with black
    envs.close()
    wrapped = make_vec_env("ALE/Breakout-v5", 1, env_kwargs={"render_mode": "rgb_array"})  # not an AtariVectorEnv argument
    assert isinstance(wrapped.unwrapped, gym.vector.SyncVectorEnv)
    wrapped.close()
    with pytest.raises(ValueError, match=r"AtariVectorEnv takes only .*got \['render_mode'\]"):
        make_vec_env("ALE/Breakout-v5", 1, vectorization="native", env_kwargs={"render_mode": "rgb_array"})


@requires_ale
def test_ale_threading_kwargs_reach_the_vector_env_and_skip_single_envs(monkeypatch):
    """``num_threads`` and ``thread_affinity_offset`` are AtariVectorEnv's; the space probe, evaluation and "sync"
    envs share ``env_kwargs`` with it and leave them out (gym.make's AtariEnv would refuse them)."""
    from ale_py import vector_env

    import lightrl
    from lightrl.envs import make_vec_env

    given = []
    original = vector_env.AtariVectorEnv.__init__
    monkeypatch.setattr(vector_env.AtariVectorEnv, "__init__", lambda self, *a, **kw: given.append(kw) or original(self, *a, **kw))
    kwargs = {"num_threads": 1, "thread_affinity_offset": -1}
    model = lightrl.PPO("ALE/Breakout-v5", num_envs=2, env_kwargs=kwargs)  # probes one Python-preset env
    assert model.observation_space.shape == (4, 84, 84)
    native = make_vec_env("ALE/Breakout-v5", 2, env_kwargs=kwargs)
    native.close()
    assert given[-1]["num_threads"] == 1 and given[-1]["thread_affinity_offset"] == -1
    sync = make_vec_env("ALE/Breakout-v5", 2, vectorization="sync", env_kwargs=kwargs)
    assert sync.reset(seed=1)[0].shape == (2, 4, 84, 84)
    sync.close()
    assert make_atari_env("ALE/Breakout-v5", **kwargs).reset(seed=1)[0].shape == (4, 84, 84)


@requires_ale
@pytest.mark.parametrize("game, env_id", [("breakout", "ALE/Breakout-v5"), ("pong", "ALE/Pong-v5")])
def test_native_atari_frames_match_the_python_preset(monkeypatch, game, env_id):
    """Same frames (within OpenCV's rounding), rewards and terminations for the same actions, resets aside.

    Without no-ops and FIRE on reset (done differently in C++), the two paths play the same game: the
    newest frame of every stack within one grey level, whole stacks once the padding is gone, the same
    clipped rewards, life losses, game over and raw score. After a life loss the Python preset takes a NOOP step in
    ``reset()``; the native env is given that NOOP as an action.
    """
    from lightrl.envs.native import ATARI_PRESET, AtariVector

    monkeypatch.setitem(ATARI_PRESET, "noop_max", 0)
    monkeypatch.setitem(ATARI_PRESET, "use_fire_reset", False)
    python = python_preset_without_resets(env_id)
    native = AtariVector(env_id, 1)
    py_obs, _ = python.reset(seed=3)
    nat_obs = native.reset(seed=[3])[0][0]
    assert np.abs(py_obs[-1].astype(int) - nat_obs[-1]).max() <= 1
    rng = np.random.default_rng(0)
    since_reset, life_losses, compared = 0, 0, 0
    for _ in range(3000):
        action = int(rng.integers(python.action_space.n))
        py_obs, py_reward, py_term, py_trunc, py_info = python.step(action)
        nat, nat_reward, nat_term, nat_trunc, nat_info = native.step(np.array([action]))
        since_reset += 1
        assert (py_reward, py_term, py_trunc) == (nat_reward[0], nat_term[0], nat_trunc[0])
        if "episode" in py_info:  # game over, and the native env was reset in this step
            # (The last frame differs: ale-py stops the frame skip at game over before it grabs the screen.)
            assert nat_info["_final_obs"][0] and nat_info["final_info"]["_episode"][0]
            assert nat_info["final_info"]["episode"]["r"][0] == py_info["episode"]["r"]  # the raw score
            break
        nat_obs = nat[0]
        assert np.abs(py_obs[-1].astype(int) - nat_obs[-1]).max() <= 1
        if since_reset >= 4:
            assert np.abs(py_obs.astype(int) - nat_obs).max() <= 1
            compared += 1
        if py_term:  # a life lost
            life_losses += 1
            np.testing.assert_array_equal(nat_info["final_obs"][0], nat_obs)  # the game goes on from here
            py_obs, _ = python.reset()
            nat, *_ = native.step(np.array([0]))
            assert np.abs(py_obs[-1].astype(int) - nat[0][-1]).max() <= 1
            since_reset = 0
    else:
        pytest.fail(f"{env_id} did not end within 3000 random steps")
    assert compared > 100
    assert life_losses == (4 if game == "breakout" else 0)
    python.close()
    native.close()


@requires_ale
def test_native_atari_rewards_are_clipped_but_episode_return_is_raw():
    from lightrl.envs import episode_stats, make_vec_env

    envs = make_vec_env("ALE/SpaceInvaders-v5", 2, seed=0, vectorization="native")
    envs.action_space.seed(0)
    envs.reset()
    clipped, raw, lives_lost = np.zeros(2), [], 0
    for _ in range(3000):
        _, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
        assert set(rewards.tolist()) <= {-1.0, 0.0, 1.0}
        clipped += rewards
        ids, returns, lengths = episode_stats(infos)
        lives_lost += int(terminated.sum()) - len(ids)
        raw += [(clipped[i], r, l) for i, r, l in zip(ids, returns, lengths)]
        clipped[ids] = 0
        if len(raw) >= 2:
            break
    for points, score, frames in raw:
        assert score >= 5 * points > 0  # 5 to 30 points per alien
        assert frames % 4 == 0 and frames > 100
    assert lives_lost >= 2 * 2  # three lives each: terminated on every life lost, statistics only at game over
    envs.close()


@requires_ale
def test_native_breakout_fires_after_each_life_lost():
    """A policy that never fires still plays every life of Breakout: FIRE follows each life lost, as on reset."""
    from lightrl.envs import episode_stats, make_vec_env

    envs = make_vec_env("ALE/Breakout-v5", 1, seed=0)
    envs.reset()
    life_losses = 0
    for step in range(2000):
        _, _, terminated, _, infos = envs.step(np.zeros(1, dtype=np.int64))  # NOOP only
        ids, returns, lengths = episode_stats(infos)
        if len(ids):
            break
        life_losses += int(terminated[0])
    else:
        pytest.fail("a NOOP policy stalled Breakout")
    assert life_losses == 4
    envs.close()
