"""What an :class:`~lightrl.algos.base.RLModule` logs while training, and when.

:func:`log_metrics` writes an algorithm's metrics with the episode statistics, the time split, SPS and the
env-step counter (the x-axis) on the batches Lightning writes (:func:`should_log`).
:func:`log_recent_return` gives callbacks (``EarlyStopping``, ``ModelCheckpoint``) the recent mean return
at each epoch's end.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from lightrl.algos.resume import attached_trainer
from lightrl.optim import grad_scaler


def steps_per_second(module: Any) -> float:
    """``module.sps``: env steps per second (all ranks) since training started (``on_train_start``); 0 before."""
    if module.fit_start is None:
        return 0.0
    start_time, start_steps = module.fit_start
    return (module.env_steps - start_steps) / max(time.perf_counter() - start_time, 1e-9)


def should_log(module: Any) -> bool:
    """Whether the loggers write this batch's metrics: every ``Trainer(log_every_n_steps)`` batches.

    Lightning's own rule, from the Trainer's public counters: the n-th training batch of the fit
    (counted across epochs and resumes) is written when n is a multiple of ``log_every_n_steps``,
    or when training is stopping, as it is once the batch that reaches the budget ends (so the final values
    are always in the logs). On the other batches Lightning drops what ``self.log`` was given,
    so lightrl skips those calls, and the collector keeps its finished episodes, which then count
    towards the next logged mean return instead of being lost.
    """
    trainer = attached_trainer(module)
    if trainer is None:
        return True
    if trainer.log_every_n_steps == 0:
        return False
    return (trainer.fit_loop.total_batch_idx + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop or module.budget_reached


def log_metrics(module: Any, metrics: dict[str, Tensor | float]) -> None:
    """``module.log_metrics(metrics)``: log ``metrics`` and the episode statistics with the global env step as the x-axis.

    Does nothing on batches that Lightning does not write (see :func:`should_log`).
    """
    if not should_log(module):
        return
    returns, lengths = module.source.pop_finished_episodes()
    if returns:
        module.episode_return.update(torch.tensor(returns, device=module.device))
        module.episode_length.update(torch.tensor(lengths, device=module.device, dtype=torch.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # compute() before any update: the mean is nan, handled below
        mean_return, mean_length = module.episode_return.compute(), module.episode_length.compute()
    module.episode_return.reset()
    module.episode_length.reset()
    if not math.isnan(mean_return.item()):
        metrics = {**metrics, "charts/episodic_return": mean_return, "charts/episodic_length": mean_length}
    metrics = {**metrics, **module.timer.metrics(), "charts/SPS": module.sps, "env_steps": float(module.env_steps)}
    if grad_scaler(module) is not None:
        metrics["charts/skipped_optimizer_steps"] = float(module.skipped_optimizer_steps)
    module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
    # Lightning takes a metric named "step" as the x-axis of every logger.
    module.log("step", torch.tensor(module.env_steps, dtype=torch.float64), on_step=True, on_epoch=False, batch_size=1)


def log_recent_return(module: Any) -> None:
    """For callbacks only (EarlyStopping, ModelCheckpoint with check_on_train_epoch_end): the mean return of each
    rank's last 100 episodes, over all ranks, as ``charts/episodic_return`` at the epoch's end.

    Loggers get ``charts/episodic_return`` at each logged step instead (:func:`log_metrics`).
    """
    recent = list(module.source.recent_returns) if module.collecting else []
    totals = module.trainer.strategy.reduce(torch.tensor([sum(recent), len(recent)], dtype=torch.float64, device=module.device), reduce_op="sum")
    if totals[1] > 0:  # the same on every rank, so all of them log (a collective) or none does
        module.log("charts/episodic_return", totals[0] / totals[1], on_step=False, on_epoch=True, sync_dist=True, logger=False, batch_size=1)
