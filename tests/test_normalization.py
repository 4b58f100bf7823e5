"""Observation and reward normalization (statistics in the policy, frozen outside training) and env_wrappers from the config."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers.utils import RunningMeanStd as GymRunningMeanStd

import lightrl
from lightrl.data.collector import Collector
from lightrl.envs.vector import ObservationShapeCheck, make_vec_env, resolve_wrappers, wrapper_spec
from lightrl.normalize import EPSILON, ObservationNormalizer, RewardNormalizer, RunningMeanStd
from tests.conftest import COUNTING_ID, EVEN_EPISODE, ODD_EPISODE, SPACES_ID

OFFSET_ID = "lightrl-test/OffsetSign-v0"
OFFSET = 1000.0
EPISODE_STEPS = 16
onnx_missing = importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None


class OffsetSign(gym.Env):
    """Observation ``1000 + s`` with ``s = +-1`` drawn each step; reward 1 for action ``s > 0``, 16 steps an episode.

    Without normalization (or with fresh statistics) both observations clip to the same input, so a policy
    can only be right half of the time; with the training statistics it can be right every time.
    """

    observation_space = spaces.Box(OFFSET - 10, OFFSET + 10, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.sign = int(self.np_random.integers(2))
        return self._obs(), {}

    def _obs(self):
        return np.array([OFFSET + (1.0 if self.sign else -1.0)], np.float32)

    def step(self, action):
        reward = float(int(action) == self.sign)
        self.sign = int(self.np_random.integers(2))
        return self._obs(), reward, False, False, {}


if OFFSET_ID not in gym.registry:
    gym.register(OFFSET_ID, entry_point=OffsetSign, max_episode_steps=EPISODE_STEPS)


def half_rewards(env: gym.Env) -> gym.Env:
    """A module-level wrapper function (importable by name): rewards clipped to 0.5."""
    return gym.wrappers.ClipReward(env, 0.0, 0.5)


class KeepReturns(L.Callback):
    """Keeps the returns of the last 100 training episodes, as the collector counted them."""

    def on_train_end(self, trainer, pl_module):
        self.returns = list(pl_module.source.recent_returns)


def fit(model, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(model)
    return trainer


# ----------------------------------------------------------------------------- statistics
def test_running_statistics_match_gymnasiums_over_batches_of_any_size():
    rng = np.random.default_rng(0)
    ours, reference = RunningMeanStd((3,)), GymRunningMeanStd(shape=(3,))
    for size in (1, 7, 1, 64, 5):
        batch = rng.normal([1000.0, -3.0, 0.0], [1.0, 50.0, 1e-3], (size, 3))
        ours.accumulate(torch.from_numpy(batch))
        ours.sync(ours.take_pending())
        reference.update(batch)
    np.testing.assert_allclose(ours.mean.numpy(), reference.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.var.numpy(), reference.var, rtol=1e-9)
    assert ours.count.item() == pytest.approx(reference.count, rel=1e-15)
    x = torch.tensor([[1001.0, 40.0, 0.5]])
    expected = np.clip((x.numpy() - reference.mean) / np.sqrt(reference.var + EPSILON), -10, 10)
    np.testing.assert_allclose(ours(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert ours(x)[0, 2].item() == 10.0  # 0.5 is ~500 standard deviations out: clipped


def test_dict_observations_normalize_their_float_parts_and_pass_images_through():
    space = spaces.Dict({"pos": spaces.Box(-1e3, 1e3, (2,)), "image": spaces.Box(0, 255, (1, 4, 4), np.uint8)})
    normalizer = ObservationNormalizer(space, clip=5.0)
    assert [key for key, _ in normalizer.parts] == ["pos"]
    image = torch.randint(0, 255, (2, 1, 4, 4), dtype=torch.uint8)
    normalizer.accumulate({"pos": torch.tensor([[100.0, 0.0], [300.0, 2.0]]), "image": image})
    normalizer.sync()
    out = normalizer({"pos": torch.tensor([[200.0, 1.0]]), "image": image})
    assert out["image"] is image
    torch.testing.assert_close(out["pos"], torch.zeros(1, 2), atol=1e-3, rtol=0)  # the initial count of 1e-4 weighs a little
    with pytest.raises(ValueError, match="normalize_obs=True needs float Box observations"):
        ObservationNormalizer(spaces.Box(0, 255, (3, 8, 8), np.uint8))


def test_dict_keys_with_dots_get_their_own_statistics():
    space = spaces.Dict({"robot.pos": spaces.Box(-1e3, 1e3, (1,)), "goal.pos": spaces.Box(-1e3, 1e3, (1,))})
    normalizer = ObservationNormalizer(space)
    normalizer.accumulate({"robot.pos": torch.tensor([[100.0], [300.0]]), "goal.pos": torch.tensor([[-5.0], [-5.0]])})
    normalizer.sync()
    assert normalizer.statistics("robot.pos").mean.item() == pytest.approx(200.0, rel=1e-4)
    assert normalizer.statistics("goal.pos").mean.item() == pytest.approx(-5.0, rel=1e-4)
    model = lightrl.PPO(SPACES_ID, env_kwargs={"observation_space": space, "action_space": spaces.Discrete(2)}, normalize_obs=True)
    assert [key for key, _ in model.policy.obs_normalizer.parts] == ["goal.pos", "robot.pos"]  # gymnasium sorts the keys


def test_checkpoints_with_statistics_keyed_by_name_still_load():
    space = spaces.Dict({"pos": spaces.Box(-1e3, 1e3, (2,)), "vel": spaces.Box(-1e3, 1e3, (1,))})
    source = ObservationNormalizer(space)
    source.accumulate({"pos": torch.tensor([[1.0, 2.0], [3.0, 6.0]]), "vel": torch.tensor([[7.0], [9.0]])})
    source.sync()
    by_name = {name.replace("stats.0.", "stats.pos.").replace("stats.1.", "stats.vel."): value for name, value in source.state_dict().items()}
    assert "stats.vel.mean" in by_name  # the layout of checkpoints written before the statistics were a ModuleList
    loaded = ObservationNormalizer(space)
    loaded.load_state_dict(by_name)
    assert all(torch.equal(value, loaded.state_dict()[name]) for name, value in source.state_dict().items())


def test_reward_normalizer_follows_sb3_vecnormalize():
    from stable_baselines3.common.running_mean_std import RunningMeanStd as SB3RunningMeanStd

    rng = np.random.default_rng(1)
    ours, ret_rms, returns = RewardNormalizer(3, gamma=0.9, clip=2.0), SB3RunningMeanStd(shape=()), np.zeros(3)
    for _ in range(50):
        rewards, dones = rng.normal(5.0, 3.0, 3), rng.random(3) < 0.2
        out = ours(rewards, dones)
        returns = returns * 0.9 + rewards  # VecNormalize.step_wait: update, normalize, then reset the finished returns
        ret_rms.update(returns)
        np.testing.assert_allclose(out, np.clip(rewards / np.sqrt(ret_rms.var + 1e-8), -2.0, 2.0).astype(np.float32), rtol=1e-6)
        returns[dones] = 0.0
    np.testing.assert_array_equal(ours.returns, returns)


# ----------------------------------------------------------------------------- env_wrappers
def test_env_wrappers_sit_inside_raw_episode_statistics():
    # ClipReward halves what the agent sees; TimeLimit(2) (outside it) ends the episodes: the statistics see that end,
    # and sum the env's own rewards (1 + 2).
    wrappers = resolve_wrappers([half_rewards, {"class_path": "gymnasium.wrappers.TimeLimit", "init_args": {"max_episode_steps": 2}}])
    collector = Collector(make_vec_env(COUNTING_ID, 2, seed=0, env_wrappers=wrappers))
    rewards, episodes = [], []
    for _ in range(4):
        step = collector.step(torch.zeros(2, dtype=torch.int64))
        rewards.append(step.rewards.tolist())
        episodes += step.episodes
    assert rewards == [[0.5, 0.5]] * 4
    assert episodes == [(0, 3.0, 2), (1, 3.0, 2)] * 2
    collector.close()


def test_without_env_wrappers_the_statistics_are_gymnasiums_as_before():
    collector = Collector(make_vec_env(COUNTING_ID, 2, seed=0))
    episodes = [e for _ in range(4) for e in collector.step(torch.zeros(2, dtype=torch.int64)).episodes]
    outer = collector.envs.unwrapped.envs[0]  # lightrl's shape check of the first observations, around gymnasium's statistics
    assert type(outer) is ObservationShapeCheck and type(outer.env) is gym.wrappers.RecordEpisodeStatistics
    assert episodes == [(0, *EVEN_EPISODE), (1, *ODD_EPISODE)]
    collector.close()


def test_env_wrappers_are_stored_as_class_paths_and_apply_to_training_and_evaluation(tmp_path):
    model = lightrl.PPO(COUNTING_ID, num_envs=2, num_steps=8, total_timesteps=32, hidden_sizes=[8], eval_episodes=3,
                        env_wrappers=[half_rewards, {"class_path": "gymnasium.wrappers.TimeLimit", "init_args": {"max_episode_steps": 2}}],
                        normalize_reward=True)  # fmt: skip
    assert model.hparams.env_wrappers == [
        {"class_path": f"{__name__}.half_rewards", "init_args": {}},
        {"class_path": "gymnasium.wrappers.TimeLimit", "init_args": {"max_episode_steps": 2}},
    ]
    keep = KeepReturns()
    trainer = fit(model, callbacks=[keep])
    trainer.save_checkpoint(tmp_path / "ppo.ckpt")
    assert keep.returns == [3.0] * 16  # raw returns, although the agent saw normalized halves
    rewards = model.rollout.rewards
    assert rewards.unique().numel() > 1 and not torch.isin(rewards, torch.tensor([0.5, 1.0, 2.0])).any()  # normalized
    returns, lengths = lightrl.evaluation.play_episodes(model, 3)
    assert returns == [3.0] * 3 and lengths == [2] * 3  # the evaluation envs have the wrappers too
    loaded = lightrl.PPO.load_from_checkpoint(tmp_path / "ppo.ckpt", weights_only=True)
    assert loaded.hparams.env_wrappers == model.hparams.env_wrappers and len(loaded.env_wrappers) == 2


def test_bad_env_wrappers_are_named_before_any_env_exists():
    with pytest.raises(ValueError, match=r"env_wrappers\[1\]: cannot import 'gymnasium.wrappers.NoSuchWrapper'"):
        lightrl.PPO("CartPole-v1", env_wrappers=[{"class_path": "gymnasium.wrappers.ClipReward", "init_args": {"max_reward": 1}},
                                                 {"class_path": "gymnasium.wrappers.NoSuchWrapper"}])  # fmt: skip
    with pytest.raises(ValueError, match=r"env_wrappers\[0\] must be a wrapper class or a module-level function"):
        wrapper_spec(lambda env: env)
    with pytest.raises(ValueError, match=r"must be \{'class_path'"):
        wrapper_spec({"class": "gymnasium.wrappers.ClipAction"})
    with pytest.raises(ValueError, match="env_wrappers do not apply to vectorization='envpool'"):
        lightrl.PPO("CartPole-v1", vectorization="envpool", env_wrappers=["gymnasium.wrappers.ClipAction"])


def test_cli_names_a_bad_wrapper_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "lightrl.cli", "fit", "--model", "PPO", "--model.env_wrappers", '["gymnasium.wrappers.Nope"]'],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "lightrl: error: env_wrappers[0]: cannot import 'gymnasium.wrappers.Nope' (module 'gymnasium.wrappers' has no attribute 'Nope'); "
        "give a full path such as 'gymnasium.wrappers.ClipAction'. (see `lightrl --help`)"
    ]


def test_cli_takes_env_wrappers_and_normalization(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lightrl.cli", "fit", "--model", "PPO", "--model.env_id", "Pendulum-v1", "--model.num_envs", "1",
         "--model.num_steps", "64", "--model.total_timesteps", "128", "--model.normalize_obs", "true", "--model.normalize_reward", "true",
         "--model.env_wrappers", '[{"class_path": "gymnasium.wrappers.ClipAction"}]', "--trainer.logger", "false",
         "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert checkpoint["hyper_parameters"]["env_wrappers"] == [{"class_path": "gymnasium.wrappers.ClipAction", "init_args": {}}]
    assert checkpoint["state_dict"]["policy.obs_normalizer.stats.0.count"].item() == pytest.approx(128, abs=1e-3)


# ----------------------------------------------------------------------------- normalization while training
def test_plain_runs_have_no_normalizer_and_unchanged_state():
    model = lightrl.PPO("CartPole-v1")
    assert model.policy.obs_normalizer is None
    assert not any("normalizer" in key for key in model.state_dict())


@pytest.mark.parametrize("algo, collector", [("PPO", "sync"), ("PPO", "async"), ("SAC", "sync"), ("SAC", "async")])
def test_statistics_count_every_observation_acted_on(algo, collector):
    kwargs = dict(num_envs=2, num_steps=32, hidden_sizes=[8]) if algo == "PPO" else dict(learning_starts=64, batch_size=16, hidden_sizes=[8], num_envs=2)
    model = getattr(lightrl, algo)("Pendulum-v1", total_timesteps=256, normalize_obs=True, collector=collector, **kwargs)
    fit(model, limit_val_batches=0)
    stats = model.policy.obs_normalizer.statistics()
    assert stats.count.item() == pytest.approx(256 + 1e-4, rel=1e-12)
    # Pendulum's observation is (cos, sin, angular velocity): the statistics are those of the run's observations.
    assert (stats.var[:2] <= 1.0).all() and stats.var[2] > 0.1 and not torch.equal(stats.mean, torch.zeros(3, dtype=torch.float64))


def test_evaluation_uses_the_training_statistics_frozen():
    model = lightrl.PPO(OFFSET_ID, num_envs=4, num_steps=64, total_timesteps=12_288, learning_rate=3e-3, hidden_sizes=[16],
                        gamma=0.5, normalize_obs=True, eval_episodes=10)  # fmt: skip
    fit(model, limit_val_batches=0)
    stats = model.policy.obs_normalizer.statistics()
    assert stats.mean.item() == pytest.approx(OFFSET, abs=0.1) and stats.var.item() == pytest.approx(1.0, abs=0.05)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model, verbose=False)
    trained = trainer.callback_metrics["eval/return_mean"].item()
    returns = lightrl.evaluation.episode_returns(model, 10, seed=123)
    assert all(torch.equal(before[k], v) for k, v in model.policy.state_dict().items())  # evaluation left them as they were
    assert trained >= 15 and np.mean(returns) >= 15  # out of 16: the policy tells 999 from 1001
    # The same weights with fresh statistics see both observations clipped to 10: right half of the time at best.
    model.policy.normalize_observations()
    assert np.mean(lightrl.evaluation.episode_returns(model, 10, seed=123)) <= 12


@pytest.mark.skipif(onnx_missing, reason="needs onnx, onnxscript and onnxruntime (lightrl[export])")
def test_exported_policy_normalizes_its_observations(tmp_path):
    import onnxruntime as ort

    model = lightrl.PPO("Pendulum-v1", num_envs=2, num_steps=64, total_timesteps=256, hidden_sizes=[8], normalize_obs=True,
                        env_wrappers=["gymnasium.wrappers.ClipAction"])
    fit(model, limit_val_batches=0)
    obs = np.random.default_rng(0).uniform(-8, 8, (5, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model.policy.act(torch.from_numpy(obs)).numpy()
        unnormalized = model.policy.agent.act(torch.from_numpy(obs), deterministic=True).clamp(-2, 2).numpy()
    lightrl.export(model, tmp_path / "policy.onnx")
    lightrl.export(model, tmp_path / "policy.pt2")
    onnx_actions = ort.InferenceSession(str(tmp_path / "policy.onnx")).run(["actions"], {"obs": obs})[0]
    extra = {"lightrl.json": ""}
    pt2_actions = torch.export.load(tmp_path / "policy.pt2", extra_files=extra).module()(torch.from_numpy(obs)).detach().numpy()
    description = json.loads(extra["lightrl.json"])  # what the deployment feeds the graph: wrapped, unnormalized observations
    assert description["normalize_obs"] is True
    assert description["env_wrappers"] == [{"class_path": "gymnasium.wrappers.ClipAction", "init_args": {}}]
    np.testing.assert_allclose(onnx_actions, expected, atol=1e-5)
    np.testing.assert_array_equal(pt2_actions, expected)
    assert np.abs(unnormalized - expected).max() > 1e-3  # the statistics are in the graph: without them the actions differ

