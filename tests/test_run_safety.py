"""Runs that survive: interrupts, videos, NaN guards and env checks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces
from lightning.pytorch.callbacks import RichProgressBar

import lightrl
from lightrl.callbacks import EnvStepRichProgressBar
from lightrl.errors import NonFiniteError
from quiet_screen import NOISY, NOISY_PY, SPURIOUS

BAD_REWARD_ID = "LightrlTest/BadReward-v0"
BAD_OBS_ID = "LightrlTest/BadObs-v0"
HUGE_REWARD_ID = "LightrlTest/HugeReward-v0"
BROKEN_API_ID = "LightrlTest/BrokenApi-v0"


class ScriptedEnv(gym.Env):
    """Observation ``[k / 10, 0]`` at step ``k``; from ``bad_at`` on, ``field`` becomes ``value``. 20-step episodes."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, field: str = "reward", value: float = float("nan"), bad_at: int = 10**9):
        self.field, self.value, self.bad_at, self.total, self.count = field, value, bad_at, 0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.count = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: Any):
        self.count += 1
        self.total += 1
        obs, reward = np.array([self.count / 10, 0], np.float32), 1.0
        if self.total >= self.bad_at:
            if self.field == "reward":
                reward = self.value
            else:
                obs[1] = self.value
        return obs, reward, self.count >= 20, False, {}


class BrokenApiEnv(ScriptedEnv):
    """Returns a 4-tuple from step(), as gym < 0.26 did."""

    def step(self, action: Any):
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, info


for _id, _kwargs in [
    (BAD_REWARD_ID, dict(field="reward", bad_at=300)),
    (BAD_OBS_ID, dict(field="obs", value=float("inf"), bad_at=300)),
    (HUGE_REWARD_ID, dict(field="reward", value=1e30, bad_at=300)),
]:
    if _id not in gym.registry:
        gym.register(_id, entry_point=ScriptedEnv, kwargs=_kwargs)
if BROKEN_API_ID not in gym.registry:
    gym.register(BROKEN_API_ID, entry_point=BrokenApiEnv)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


# ---------------------------------------------------------------------------------------------- interrupts


def test_sigint_saves_last_checkpoint_and_the_run_resumes_to_its_budget(tmp_path):
    budget = 470 * 128  # whole rollouts: 4 envs x 32 steps
    args = [sys.executable, "-m", "lightrl.cli", "fit", "--model", "PPO", "--model.total_timesteps", str(budget),
            "--model.num_steps", "32", "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
            "--trainer.logger.flush_logs_every_n_steps", "1",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=tmp_path, text=True)
    deadline = time.monotonic() + 240
    while not ((found := list(tmp_path.glob("**/version_0/metrics.csv"))) and len(found[0].read_text().splitlines()) > 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.2)  # until a few rollouts are logged
    metrics = found[0]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "SIGINT received; saving a checkpoint after the current update" in err
    assert "`weights_only` was not set" not in err  # Lightning's notice when save_checkpoint is not told
    last = metrics.parent / "checkpoints" / "last.ckpt"
    stopped_at = torch.load(last, weights_only=True)["lightrl"]["env_steps"]
    assert 0 < stopped_at < budget and f"stopped at env step {stopped_at}" in err

    resumed = subprocess.run([*args, "--ckpt_path", "last"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Restored all states from the checkpoint at {last}" in resumed.stderr
    final = torch.load(metrics.parent.parent / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["lightrl"]["env_steps"] == budget


@pytest.mark.slow  # the SIGINT test covers resuming a stopped run in the fast suite
@pytest.mark.timeout(300)
def test_a_sigkill_loses_at_most_one_epoch_and_the_run_resumes_to_its_budget(tmp_path):
    # 8 rollouts of 4 x 32 env steps per epoch; last.ckpt is rewritten at the end of each one.
    budget = 40 * 1024
    args = [sys.executable, "-m", "lightrl.cli", "fit", "--model", "PPO", "--model.total_timesteps", str(budget),
            "--model.num_steps", "32", "--model.timesteps_per_epoch", "1024", "--model.eval_episodes", "2",
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=tmp_path, text=True)
    last = tmp_path / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not (last.exists() and torch.load(last, weights_only=True)["epoch"] >= 1):  # written atomically: never half a file
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs, nothing is saved on the way out
    proc.communicate(timeout=60)
    saved = torch.load(last, weights_only=True)["lightrl"]["env_steps"]
    assert saved % 1024 == 0 and 2048 <= saved < budget  # the end of the second (or a later) epoch
    resumed = subprocess.run([*args, "--ckpt_path", "last"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Restored all states from the checkpoint at {last}" in resumed.stderr
    assert torch.load(last, weights_only=True)["lightrl"]["env_steps"] == budget


@pytest.mark.timeout(300)
def test_make_run_shows_the_run_not_the_dependencies_noise(tmp_path):
    # `make run` with a short budget: W&B offline (the default logger), the Rich bar, the model summary.
    # Then the same run resumed with a longer budget, which continues in the folder of its checkpoint.
    (tmp_path / "noisy.py").write_text(NOISY_PY)  # a warning of the user's own, which still shows
    config = Path(__file__).parents[1] / "experiments" / "ppo_cartpole.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    for extra in (["--model.total_timesteps", "1000"], ["--model.total_timesteps", "2048", "--ckpt_path", "last"]):
        proc = subprocess.run([sys.executable, "-m", "lightrl.cli", "fit", "--config", str(config), *NOISY, *extra],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        screen = proc.stdout + proc.stderr
        assert "env steps" in screen and "GPU available" in screen  # the run, and Lightning's own notices
        assert "noisy.Noisy: a warning of the user's own" in screen
        for noise in ("💡 Tip", "deprecated", "DeprecationWarning", "`dataloader_iter`", "has `__len__` defined",
                      "smaller than the logging interval", "git root", "it/s", *SPURIOUS):  # fmt: skip
            assert noise not in screen, noise
        # The bar's last line: the true count (4 rollouts of 256 for a budget of 1000), SPS the one rate.
        steps = 1024 if "1000" in extra else 2048
        assert re.search(rf"env steps .* {steps}/{steps} .*SPS: \d+ return:\s+[\d.]+", screen), screen[-2000:]  # Rich may wrap
    [run] = tmp_path.glob("runs/lightrl/*/checkpoints/last.ckpt")  # one W&B run, resumed
    assert torch.load(run, weights_only=True)["lightrl"]["env_steps"] == 2048
    assert (run.parent.parent / "config.yaml").is_file() and not (tmp_path / "runs" / "config.yaml").exists()


# ---------------------------------------------------------------------------------------------- evaluation


def test_capture_video_writes_an_mp4_at_each_validation_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    model = lightrl.PPO("CartPole-v1", total_timesteps=1024, num_steps=64, timesteps_per_epoch=512, eval_episodes=1, capture_video=True)
    trainer(tmp_path).fit(model)
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert videos == ["eval-step1024-episode-0.mp4", "eval-step512-episode-0.mp4"]  # none for the sanity check
    assert all(os.path.getsize(tmp_path / "videos" / v) > 1000 for v in videos)


def test_capture_video_without_moviepy_is_refused_before_any_env(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "moviepy" else real(name, *a))
    with pytest.raises(ValueError, match=r"capture_video=True needs the moviepy package.*pip install 'lightrl\[video\]'"):
        lightrl.PPO("CartPole-v1", capture_video=True)


def test_rich_progress_bar_counts_env_steps(tmp_path):
    model = lightrl.PPO("CartPole-v1", total_timesteps=1000, num_steps=64)  # 4 rollouts of 256 env steps
    fit_trainer = trainer(tmp_path, enable_progress_bar=True, callbacks=[RichProgressBar()])
    fit_trainer.fit(model)
    bar = fit_trainer.progress_bar_callback
    assert isinstance(bar, EnvStepRichProgressBar)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.total, task.completed, task.description) == (1024, 1024, "env steps")
    assert "ProcessingSpeedColumn" not in {type(c).__name__ for c in bar.progress.columns}  # SPS is the one rate shown


# ---------------------------------------------------------------------------------------------- guards


@pytest.mark.parametrize(
    "env_id, algo, message",
    [
        (BAD_REWARD_ID, lightrl.PPO, r"NaN in the rewards of sub-env\(s\) \[0, 1\] at env step \d+ \(PPO on LightrlTest/BadReward-v0, rank 0\)"),
        (BAD_OBS_ID, lightrl.DQN, r"Inf in the observations of sub-env\(s\) \[0, 1\] at env step \d+ \(DQN"),
        (HUGE_REWARD_ID, lightrl.PPO, r"Inf in the loss at env step \d+ \(PPO"),
    ],
    ids=["nan-reward", "inf-observation", "inf-loss"],
)
def test_non_finite_data_stops_training_with_a_checkpoint_from_before(tmp_path, env_id, algo, message, caplog):
    caplog.set_level("INFO")
    kwargs = dict(num_steps=32) if algo is lightrl.PPO else dict(learning_starts=64, train_frequency=16, gradient_steps=1, batch_size=16)
    model = algo(env_id, total_timesteps=4096, num_envs=2, hidden_sizes=[8], **kwargs)
    with pytest.raises(NonFiniteError, match=message) as error:
        trainer(tmp_path).fit(model)
    path = re.search(r"saved in (\S+\.ckpt)", str(error.value)).group(1)
    restored = algo.load_from_checkpoint(path)
    assert all(torch.isfinite(p).all() for p in restored.parameters())
    assert 0 < torch.load(path, weights_only=True)["lightrl"]["env_steps"] < 4096
    assert "weights_only" not in caplog.text  # Lightning's notice when save_checkpoint is not told


def test_check_env_reports_what_gymnasiums_checker_found():
    with pytest.raises(ValueError, match=r"check_env: gymnasium's env checker rejected 'LightrlTest/BrokenApi-v0': .*"):
        lightrl.PPO(BROKEN_API_ID, check_env=True)
    lightrl.PPO("CartPole-v1", check_env=True)  # a valid env passes
