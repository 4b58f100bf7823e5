"""total_timesteps ends a run: Lightning's default epoch cap does not cut it short, and a cap the user set is named."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning as L
import pytest
import torch

import lightrl
from lightrl.algos.base import RLModule

# The example (total_timesteps=8000) shrunk: 4 env steps per epoch, so the budget needs 1,002 epochs, 2 more
# than Lightning's default cap.
SHORT_EPOCHS = dict(env_id="CartPole-v1", total_timesteps=4008, num_envs=1, num_steps=4, num_minibatches=1, timesteps_per_epoch=4,
                    hidden_sizes=[8])  # fmt: skip
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)


@pytest.fixture
def said_before_envs(monkeypatch, capsys):
    """What lightrl printed on stderr by the time the envs are made (RLModule.setup), as a list of lines."""
    seen = []
    setup = RLModule.setup

    def recording_setup(self, stage):
        if stage == "fit":
            seen.extend(line for line in capsys.readouterr().err.splitlines() if line.startswith("lightrl:"))
        setup(self, stage)

    monkeypatch.setattr(RLModule, "setup", recording_setup)
    return seen


def test_without_max_epochs_the_whole_budget_is_trained(said_before_envs):
    model = lightrl.PPO(**SHORT_EPOCHS)
    trainer = L.Trainer(**QUIET)
    trainer.fit(model)
    assert model.env_steps == 4008 and trainer.current_epoch == 1002  # Lightning's default would stop at 1000 epochs, 4000 steps
    assert said_before_envs == ["lightrl: Lightning's default max_epochs=1000 does not apply: the run ends at total_timesteps=4,008 env steps."]


def test_a_max_epochs_below_the_budget_wins_and_is_named_in_one_line(said_before_envs):
    model = lightrl.PPO(**SHORT_EPOCHS)
    L.Trainer(max_epochs=10, **QUIET).fit(model)
    assert model.env_steps == 40
    assert len(said_before_envs) == 1
    assert said_before_envs[0].startswith("lightrl: Trainer(max_epochs=10) wins over total_timesteps=4,008: the run stops after 10 epoch(s), "
                                          "at about 40 env steps, and the budget needs 1,002 epochs")  # fmt: skip


def test_a_max_steps_below_the_budget_wins_and_counts_optimizer_steps(said_before_envs):
    model = lightrl.PPO(**SHORT_EPOCHS)  # update_epochs=4 x 1 minibatch: 4 optimizer steps per 4-step rollout
    trainer = L.Trainer(max_steps=100, **QUIET)
    trainer.fit(model)
    assert model.env_steps == 100 and trainer.global_step == 100
    expected = (
        "lightrl: Trainer(max_steps=100) wins over total_timesteps=4,008: max_steps counts optimizer steps, and the budget takes 4,008 "
        "(1,002 training batches of 4 each), so the run stops at about 100 env steps; raise max_steps, or set max_steps=-1 to train the whole budget."
    )
    assert said_before_envs == [expected]


def test_caps_that_the_budget_does_not_reach_say_nothing(said_before_envs):
    model = lightrl.PPO(**{**SHORT_EPOCHS, "total_timesteps": 40})
    L.Trainer(max_epochs=10, max_steps=1000, **QUIET).fit(model)
    assert model.env_steps == 40 and said_before_envs == []


def lightrl_fit(tmp_path, *args) -> subprocess.CompletedProcess:
    model = [f"--model.{k}={v}" for k, v in SHORT_EPOCHS.items() if k != "hidden_sizes"]
    cmd = [sys.executable, "-m", "lightrl.cli", "fit", "--model", "PPO", *model, "--trainer.logger", "false",
           "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def saved_env_steps(tmp_path) -> int:
    return torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["lightrl"]["env_steps"]


@pytest.mark.slow  # 1,002 epochs, each writing last.ckpt: about 2 minutes here
def test_cli_without_max_epochs_trains_the_whole_budget(tmp_path):
    proc = lightrl_fit(tmp_path, "--trainer.max_epochs", "null")  # not lightrl's -1: Lightning's default of 1000
    assert saved_env_steps(tmp_path) == 4008
    assert proc.stderr.count("lightrl: Lightning's default max_epochs=1000 does not apply") == 1


def test_cli_max_epochs_below_the_budget_is_one_line_before_training(tmp_path):
    proc = lightrl_fit(tmp_path, "--trainer.max_epochs", "10")
    assert saved_env_steps(tmp_path) == 40
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lightrl: Trainer(max_epochs=10) wins")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
