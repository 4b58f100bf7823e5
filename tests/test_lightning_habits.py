"""A Lightning user's habits, each with a real Trainer: epochs, validation, test, predict, stock callbacks, flags."""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import lightrl
from lightrl.callbacks import RunCheckpoint
from experiments.resume_check import max_abs_diff
from lightrl.algos.trainer_flags import UnsupportedTrainerFlag
from lightrl.evaluation import episode_returns
from lightrl.warning_filters import HideLightningNotices

# 4 envs x 32 steps = 128 env steps per rollout; 8 rollouts per epoch.
PPO_RUN = dict(env_id="CartPole-v1", seed=1, total_timesteps=4096, num_envs=4, num_steps=32, hidden_sizes=[16],
               timesteps_per_epoch=1024, eval_episodes=3)  # fmt: skip
CRASH_ID = "LightrlTest/CrashAt-v0"


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kwargs})


class RecordEpochs(Callback):
    """The env step and the monitored metrics at the end of each training epoch."""

    def __init__(self):
        self.env_steps: list[int] = []
        self.eval_returns: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.env_steps.append(pl_module.env_steps)
        if "eval/return_mean" in trainer.callback_metrics:
            self.eval_returns.append(trainer.callback_metrics["eval/return_mean"].item())


def test_an_epoch_is_timesteps_per_epoch_env_steps_and_max_epochs_stops_the_run(tmp_path):
    record = RecordEpochs()
    fit_trainer = trainer(tmp_path, callbacks=[record])
    fit_trainer.fit(lightrl.PPO(**PPO_RUN))
    assert record.env_steps == [1024, 2048, 3072, 4096] and fit_trainer.current_epoch == 4
    assert fit_trainer.global_step == 32 * 4 * 4  # 32 rollouts, each 4 epochs of 4 minibatches
    short = trainer(tmp_path, max_epochs=2, callbacks=[record := RecordEpochs()])
    model = lightrl.PPO(**PPO_RUN)
    short.fit(model)
    assert record.env_steps == [1024, 2048] and model.env_steps == 2048


def test_off_policy_epochs_count_update_phases_after_the_warm_up(tmp_path):
    # 50 env steps per update phase, 2 phases per training step: 100 env steps per batch, 3 batches per epoch.
    model = lightrl.DQN("CartPole-v1", total_timesteps=1500, learning_starts=300, train_frequency=50, gradient_steps=4,
                        phases_per_training_step=2, buffer_size=2000, batch_size=16, hidden_sizes=[16], timesteps_per_epoch=300,
                        eval_episodes=2)  # fmt: skip
    record = RecordEpochs()
    trainer(tmp_path, callbacks=[record]).fit(model)
    # The first epoch holds the 300-step warm-up; the last one ends at the budget.
    assert record.env_steps == [600, 900, 1200, 1500]


def test_validation_logs_eval_metrics_at_each_epoch_and_modelcheckpoint_keeps_the_best(tmp_path):
    checkpoint = ModelCheckpoint(monitor="eval/return_mean", mode="max", filename="best-{step}", save_last=True)
    fit_trainer = trainer(tmp_path, logger=CSVLogger(tmp_path), callbacks=[checkpoint])
    model = lightrl.PPO(**PPO_RUN)
    fit_trainer.fit(model)
    rows = (tmp_path / "lightning_logs/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    evals = [dict(zip(header, r.split(","))) for r in rows[1:]]
    evals = [(int(float(r["step"])), float(r["eval/return_mean"]), float(r["eval/episodes"])) for r in evals if r.get("eval/return_mean")]
    assert [(step, episodes) for step, _, episodes in evals] == [(1024, 3), (2048, 3), (3072, 3), (4096, 3)]
    best_step, best_return, _ = max(evals, key=lambda e: e[1])
    assert checkpoint.best_model_path.endswith(f"best-step={best_step}.ckpt")  # "step" is the env step
    assert checkpoint.best_model_score.item() == pytest.approx(best_return)
    best = lightrl.PPO.load_from_checkpoint(checkpoint.best_model_path)
    returns = episode_returns(best, 3, seed=PPO_RUN["seed"] + lightrl.algos.evaluation_steps.EVAL_SEED_OFFSET)
    assert float(np.mean(returns)) == pytest.approx(best_return)


def test_the_default_checkpoint_keeps_the_best_evaluation_and_last(tmp_path):
    fit_trainer = trainer(tmp_path, callbacks=[record := RecordEpochs()])
    fit_trainer.fit(lightrl.PPO(**PPO_RUN))
    best, last = fit_trainer.checkpoint_callbacks
    assert type(best) is type(last) is RunCheckpoint and best is fit_trainer.checkpoint_callback
    assert best.monitor == "eval/return_mean" and best.best_model_score.item() == max(record.eval_returns)
    assert last.best_model_path == str(tmp_path / "checkpoints" / "last.ckpt")
    # last.ckpt.prev: the last.ckpt of the epoch before, kept by lightrl's atomic writes (docs/checkpoints.md)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(["last.ckpt", "last.ckpt.prev", best.best_model_path.split("/")[-1]])


def test_validation_does_not_change_training(tmp_path):
    with_eval, without = lightrl.PPO(**PPO_RUN), lightrl.PPO(**PPO_RUN)
    trainer(tmp_path).fit(with_eval)
    trainer(tmp_path, limit_val_batches=0, num_sanity_val_steps=0).fit(without)
    assert max_abs_diff(with_eval, without) == 0.0


def test_early_stopping_on_the_evaluation_return_stops_at_the_threshold(tmp_path):
    stop = EarlyStopping(monitor="eval/return_mean", mode="max", stopping_threshold=50, patience=100)
    fit_trainer = trainer(tmp_path, callbacks=[stop, record := RecordEpochs()])
    model = lightrl.PPO(**{**PPO_RUN, "total_timesteps": 40_960})
    fit_trainer.fit(model)
    first_above = next(i for i, r in enumerate(record.eval_returns) if r >= 50)
    assert stop.stopped_epoch == first_above and model.env_steps == 1024 * (first_above + 1) < 40_960


def test_early_stopping_on_the_training_return_checked_at_epoch_end(tmp_path):
    stop = EarlyStopping(monitor="charts/episodic_return", mode="max", stopping_threshold=40, check_on_train_epoch_end=True, patience=100)
    model = lightrl.PPO(**{**PPO_RUN, "total_timesteps": 40_960})
    fit_trainer = trainer(tmp_path, callbacks=[stop], limit_val_batches=0)
    fit_trainer.fit(model)
    assert fit_trainer.callback_metrics["charts/episodic_return"].item() >= 40
    assert model.env_steps == 1024 * (stop.stopped_epoch + 1) < 40_960


class PlateauPPO(lightrl.PPO):
    """PPO with a user's scheduler: on the evaluation return, or a StepLR per epoch."""

    def __init__(self, scheduler: str = "plateau", **kwargs: Any):
        super().__init__(**kwargs)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.policy.agent.parameters(), lr=1e-3)
        if self.hparams.scheduler == "plateau":
            # An improvement must exceed 1e9: after the first evaluation, every epoch halves the learning rate.
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0, threshold=1e9, threshold_mode="abs")
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "eval/return_mean", "interval": "epoch"}}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5), "interval": "epoch"}}


@pytest.mark.parametrize("scheduler, halvings", [("plateau", 3), ("step", 4)])
def test_epoch_lr_schedulers_step_once_per_epoch_and_plateau_follows_its_monitor(tmp_path, scheduler, halvings):
    model = PlateauPPO(scheduler=scheduler, **PPO_RUN)
    trainer(tmp_path).fit(model)
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**halvings)


def test_validate_test_and_predict_entry_points(tmp_path):
    model = lightrl.PPO(**{**PPO_RUN, "test_episodes": 5})
    fit_trainer = trainer(tmp_path)
    fit_trainer.fit(model)
    last = tmp_path / "checkpoints" / "last.ckpt"
    (validated,) = trainer(tmp_path).validate(model)
    assert set(validated) == {"eval/return_mean", "eval/return_std", "eval/episode_length", "eval/episodes", "step"}
    expected = episode_returns(model, 3, seed=PPO_RUN["seed"] + lightrl.algos.evaluation_steps.EVAL_SEED_OFFSET)
    assert validated["eval/return_mean"] == pytest.approx(np.mean(expected)) and validated["eval/episodes"] == 3
    (from_checkpoint,) = trainer(tmp_path).validate(lightrl.PPO(**PPO_RUN), ckpt_path=last)
    assert from_checkpoint == validated
    (tested,) = trainer(tmp_path).test(model)
    assert tested["test/episodes"] == 5
    expected = episode_returns(model, 5, seed=PPO_RUN["seed"] + lightrl.algos.evaluation_steps.TEST_SEED_OFFSET)
    assert tested["test/return_mean"] == pytest.approx(np.mean(expected))
    obs = torch.randn(10, 4)
    predictions = trainer(tmp_path).predict(model, DataLoader(TensorDataset(obs), batch_size=4))
    assert torch.equal(torch.cat(predictions), model.policy.act(obs)) and model(obs).shape == (10,)


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(gradient_clip_val=0.5), r"Trainer\(gradient_clip_val=0.5\) does not apply to PPO: set its max_grad_norm instead"),
        (dict(accumulate_grad_batches=2), r"accumulate_grad_batches=2\) does not apply to PPO: .* num_envs \* num_steps"),
        (dict(min_epochs=3), r"Trainer\(min_epochs=3\) does not apply to PPO: .*raise total_timesteps instead"),
        (dict(min_steps=10), r"Trainer\(min_steps=10\) does not apply"),
        (dict(overfit_batches=2), r"Trainer\(overfit_batches=2\) does not apply to PPO: use a small total_timesteps"),
    ],
)
def test_trainer_flags_that_cannot_apply_are_refused_before_any_env(tmp_path, monkeypatch, flags, message):
    model = lightrl.PPO(**PPO_RUN)
    monkeypatch.setattr(lightrl.data.collector, "make_vec_env", lambda *a, **k: pytest.fail("an env was created"))
    with pytest.raises(UnsupportedTrainerFlag, match=message):
        trainer(tmp_path, **flags).fit(model)


class CrashAt(gym.Env):
    """CartPole-like constant env that raises at its ``crash_at``-th step (counted over all its episodes)."""

    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, crash_at: int = 10**9):
        self.crash_at, self.total, self.count = crash_at, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.total += 1
        self.count += 1
        if self.total >= self.crash_at:
            raise RuntimeError("the simulator crashed")
        return np.zeros(4, np.float32), 1.0, self.count >= 20, False, {}


if CRASH_ID not in gym.registry:
    gym.register(CRASH_ID, entry_point=CrashAt)


def test_an_env_that_raises_leaves_the_checkpoint_of_the_last_completed_epoch(tmp_path):
    # 4 sub-envs: each crashes at its 700th step, i.e. at env step ~2800, in the third epoch.
    model = lightrl.PPO(**{**PPO_RUN, "env_id": CRASH_ID, "env_kwargs": {"crash_at": 700}})
    with pytest.raises(RuntimeError, match="the simulator crashed"):
        trainer(tmp_path).fit(model)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["lightrl"]["env_steps"] == 2048 and last["epoch"] == 1


def test_lightrl_hides_only_its_own_override_notice(tmp_path, caplog):
    notice = "The following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks passed to Trainer: "
    hide = HideLightningNotices()
    record = lambda message: logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, "", 0, message, None, None)  # noqa: E731
    assert not hide.filter(record(notice + "ModelCheckpoint, RichProgressBar"))
    assert hide.filter(record(notice + "EarlyStopping"))  # a user's callback replaced by a module's: still shown
    with caplog.at_level(logging.INFO):
        trainer(tmp_path, enable_progress_bar=True).fit(lightrl.PPO(**{**PPO_RUN, "total_timesteps": 128}))
    assert "GPU available" in caplog.text  # Lightning's other notices still show
    assert "Tip" not in caplog.text and "will override existing callbacks" not in caplog.text


@pytest.mark.parametrize(
    "flags",
    [dict(fast_dev_run=True), dict(max_time={"seconds": 60}), dict(max_steps=16), dict(profiler="simple"),
     dict(logger=True, callbacks=[LearningRateMonitor()])],  # fmt: skip
    ids=["fast_dev_run", "max_time", "max_steps", "profiler", "lr_monitor"],
)
def test_flags_that_worked_before_epochs_still_work(tmp_path, flags):
    model = lightrl.PPO(**PPO_RUN)
    fit_trainer = trainer(tmp_path, **flags)
    fit_trainer.fit(model)
    if "fast_dev_run" in flags:
        assert model.env_steps == 128  # one rollout, and one validation batch
    elif "max_steps" in flags:
        assert fit_trainer.global_step == 16 and model.env_steps == 128  # one rollout: 4 epochs x 4 minibatches
    else:
        assert model.env_steps == 4096
    if "max_steps" not in flags and "fast_dev_run" not in flags:
        fit_trainer.fit(model)  # fit again: the budget is spent, so it stops at once
        assert model.env_steps == 4096


def test_training_flags_do_not_stop_validation(tmp_path):
    (results,) = trainer(tmp_path, gradient_clip_val=0.5).validate(lightrl.PPO(**PPO_RUN))
    assert results["eval/episodes"] == 3
