"""Training curves under Lightning's default flags, from Python and the CLI, and schedules on a resume with a longer budget."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from test_first_hour import QUIET, lightrl_command

import lightrl
from lightrl.algos.trainer_flags import log_cadence

# 128 env steps per rollout and 40 rollouts: RLModule.log_interval = 2048 env steps is every 16th rollout.
PPO_RUN = dict(env_id="CartPole-v1", seed=1, total_timesteps=5120, num_envs=4, num_steps=32, hidden_sizes=[16], eval_episodes=1)
DQN_RUN = dict(env_id="CartPole-v1", seed=1, learning_starts=100, train_frequency=50, gradient_steps=1, batch_size=16,
               buffer_size=1000, hidden_sizes=[16], exploration_fraction=1.0, phases_per_training_step=1, save_replay_buffer=True,
               eval_episodes=1)  # fmt: skip
QUIET_TRAINER = dict(enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)


def train_rows(metrics_csv: Path) -> list[int]:
    """The env steps (the CSV's ``step``) of the rows of a ``metrics.csv`` that hold training curves."""
    with open(metrics_csv, newline="") as f:
        return [int(float(row["step"])) for row in csv.DictReader(f) if row.get("losses/value_loss")]


def fit_with_csv(tmp_path: Path, model: lightrl.RLModule, **trainer_kwargs) -> tuple[L.Trainer, list[int]]:
    """Fit ``model`` with a CSVLogger and Lightning's defaults otherwise; the trainer and the env steps of its curves."""
    trainer = L.Trainer(logger=CSVLogger(tmp_path, name="run"), enable_checkpointing=False, **QUIET_TRAINER, **trainer_kwargs)
    trainer.fit(model)
    return trainer, train_rows(Path(trainer.logger.log_dir) / "metrics.csv")


def test_log_cadence_is_about_one_log_point_per_log_interval_env_steps():
    assert log_cadence(1000, 128) == 7
    assert log_cadence(1000, 512) == 1  # PPO's defaults: every rollout
    assert log_cadence(1000, 4096) == 1  # a rollout longer than the interval: still every one
    assert log_cadence(1000, 8) == 125  # SAC's training step of 8 update phases
    assert lightrl.RLModule.log_interval == 2048
    assert log_cadence(2048, 512) == 4  # the default interval and PPO's default rollout: every 4th rollout


def test_python_trainer_with_default_flags_logs_curves_every_log_interval_and_at_the_last_step(tmp_path):
    trainer, steps = fit_with_csv(tmp_path, lightrl.PPO(**PPO_RUN))
    assert trainer.log_every_n_steps == 16
    assert steps == [16 * 128, 32 * 128, 5120]  # the 40th and last rollout too, though 40 is no multiple of 16


def test_an_explicit_log_every_n_steps_is_kept_and_log_interval_can_be_changed(tmp_path):
    trainer, steps = fit_with_csv(tmp_path / "explicit", lightrl.PPO(**PPO_RUN), log_every_n_steps=5)
    assert trainer.log_every_n_steps == 5
    assert steps == list(range(640, 5121, 640))

    model = lightrl.PPO(**PPO_RUN)
    model.log_interval = 384  # 3 rollouts
    trainer, steps = fit_with_csv(tmp_path / "interval", model)
    assert trainer.log_every_n_steps == 3
    assert steps == [*range(384, 5120, 384), 5120]

    # The same Trainer fitting a module with longer rollouts (256 env steps) takes that module's cadence.
    trainer.fit(lightrl.PPO(**{**PPO_RUN, "num_steps": 64}))
    assert trainer.log_every_n_steps == 2048 // 256


def test_cli_fit_logs_with_the_same_cadence_as_python(tmp_path):
    args = [f"--model.{k}={v}" for k, v in PPO_RUN.items() if k != "hidden_sizes"]
    proc = lightrl_command(
        "fit", "--model", "PPO", *args, "--model.hidden_sizes=[16]", "--trainer.logger", "CSVLogger",
        "--trainer.logger.save_dir", str(tmp_path), "--trainer.limit_val_batches", "0", *QUIET, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics_csv,) = tmp_path.glob("**/metrics.csv")
    assert train_rows(metrics_csv) == [16 * 128, 32 * 128, 5120]


class Record(Callback):
    """``(env steps, learning rate, epsilon)`` at the start of each training step: the values that step trains and acts with."""

    def __init__(self):
        self.seen: list[tuple[int, float, float | None]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        epsilon = pl_module.epsilon if isinstance(pl_module, lightrl.DQN) else None
        self.seen.append((pl_module.env_steps, trainer.optimizers[0].param_groups[0]["lr"], epsilon))


def fit_then_resume_longer(tmp_path: Path, algo: type, run: dict, budget: int) -> tuple[Record, Record]:
    """Fit ``algo`` to ``budget`` env steps, then resume its checkpoint with twice the budget; what each fit recorded."""
    first, resumed = Record(), Record()
    kwargs = dict(max_epochs=-1, logger=False, enable_checkpointing=False, **QUIET_TRAINER)
    trainer = L.Trainer(callbacks=[first], **kwargs)
    trainer.fit(algo(**run, total_timesteps=budget))
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    L.Trainer(callbacks=[resumed], **kwargs).fit(algo(**run, total_timesteps=2 * budget), ckpt_path=tmp_path / "end.ckpt")
    return first, resumed


def test_ppo_resumed_with_a_doubled_budget_anneals_over_the_new_budget_from_its_first_step(tmp_path):
    run = {k: v for k, v in PPO_RUN.items() if k != "total_timesteps"}
    first, resumed = fit_then_resume_longer(tmp_path, lightrl.PPO, run, 1024)
    lr = 2.5e-4
    assert [s for s, _, _ in first.seen] == [128 * k for k in range(8)]
    assert [rate for _, rate, _ in first.seen] == [lr * (1 - k / 8) for k in range(8)]  # ends at lr / 8, then 0 is stored
    # Rollouts 8..15 of 16: the rates of the 2048-step schedule, from the first one on (it was 0.0 before).
    assert [s for s, _, _ in resumed.seen] == [128 * k for k in range(8, 16)]
    assert [rate for _, rate, _ in resumed.seen] == [lr * (1 - k / 16) for k in range(8, 16)]
    assert resumed.seen[0][1] == 1.25e-4


def test_dqn_resumed_with_a_doubled_budget_stretches_epsilon_over_the_new_budget(tmp_path):
    first, resumed = fit_then_resume_longer(tmp_path, lightrl.DQN, DQN_RUN, 600)
    # exploration_fraction=1.0: epsilon decays from 1.0 to 0.05 over the whole budget; an update phase every 50 env steps.
    assert [s for s, _, _ in first.seen] == [0, *range(150, 600, 50)]
    assert first.seen[-1][2] == pytest.approx(1.0 - 0.95 * 550 / 600, abs=1e-12)
    assert [s for s, _, _ in resumed.seen] == list(range(600, 1200, 50))
    for env_steps, lr, epsilon in resumed.seen:  # the 1200-step schedule, at the step the run is at
        assert epsilon == pytest.approx(1.0 - 0.95 * env_steps / 1200, abs=1e-12) and lr == 2.5e-4
    assert resumed.seen[0][2] == pytest.approx(0.525, abs=1e-12)  # was 0.05 (end_e) at 600 of the 600-step budget
