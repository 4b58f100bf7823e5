"""The time/* breakdown: logged by every algorithm, fractions that are sane, and it points at the slow part."""

from __future__ import annotations

import csv
import time

import gymnasium as gym
import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

import lightrl
from lightrl.timing import SECTIONS, IterationTimer

SLOW_ID = "LightrlTest/SlowCartPole-v0"
PARTS = [f"time/{name}" for name in SECTIONS] + ["time/lightning_overhead"]


class SlowStep(gym.Wrapper):
    """CartPole whose every step takes 3 ms longer: env stepping must dominate the breakdown."""

    def step(self, action):
        time.sleep(0.003)
        return self.env.step(action)


if SLOW_ID not in gym.registry:
    gym.register(SLOW_ID, entry_point=lambda **kw: SlowStep(gym.make("CartPole-v1", **kw).unwrapped), max_episode_steps=500)


def fit_and_read(model: lightrl.RLModule, tmp_path) -> list[dict[str, float]]:
    logger = CSVLogger(tmp_path, name="run")
    # No validation: its episodes are not training iterations, and on the slow env they would take most of the test.
    L.Trainer(logger=logger, log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              max_epochs=-1, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0).fit(model)
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    return [row for row in rows if "time/learn" in row]


@pytest.mark.parametrize(
    "algo, kwargs",
    [
        ("PPO", dict(env_id="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=1024)),
        ("DQN", dict(env_id="CartPole-v1", total_timesteps=600, learning_starts=100, train_frequency=50, gradient_steps=4)),
        ("SAC", dict(env_id="Pendulum-v1", total_timesteps=300, learning_starts=100, batch_size=32, hidden_sizes=[32, 32])),
    ],
)
def test_breakdown_is_logged_and_sane(algo, kwargs, tmp_path):
    rows = fit_and_read(getattr(lightrl, algo)(seed=1, **kwargs), tmp_path)
    assert len(rows) >= 3, rows
    for row in rows:
        parts = [row[name] for name in PARTS]
        assert all(part >= 0.0 for part in parts), row
        assert sum(parts) == pytest.approx(1.0, abs=1e-6), row  # the parts split the wall time, nothing is counted twice
        assert row["time/env_step"] > 0 and row["time/inference"] > 0 and row["time/learn"] > 0, row
        assert row["time/iteration"] > 0, row
    assert all(name in rows[-1] for name in ("charts/SPS", "env_steps")), rows[-1]


def test_slow_env_shows_in_env_step(tmp_path):
    model = lightrl.PPO(SLOW_ID, seed=1, num_envs=2, num_steps=16, total_timesteps=256)
    rows = fit_and_read(model, tmp_path)
    env_share = sum(row["time/env_step"] for row in rows) / len(rows)
    # 2 sub-envs x 16 steps x 3 ms = 96 ms of sleeping per iteration, against a few ms of everything else.
    assert env_share > 0.6, rows


def test_disabled_timer_logs_nothing(tmp_path):
    model = lightrl.PPO("CartPole-v1", seed=1, num_envs=2, num_steps=16, total_timesteps=128)
    model.timer.enabled = False
    assert fit_and_read(model, tmp_path) == []


def test_timer_charges_each_section():
    timer = IterationTimer()
    timer.reset()
    tic = timer.start()
    time.sleep(0.02)
    tic = timer.add("env_step", tic)
    time.sleep(0.01)
    timer.add("learn", tic)
    time.sleep(0.01)  # outside every section: counted as Lightning's
    timer.step()
    metrics = timer.metrics()
    assert metrics["time/env_step"] > metrics["time/learn"] > 0.1
    assert metrics["time/lightning_overhead"] > 0.1
    assert metrics["time/inference"] == metrics["time/data"] == 0.0
    assert metrics["time/iteration"] >= 0.04
    assert timer.metrics() == {}  # a new window with nothing timed yet
