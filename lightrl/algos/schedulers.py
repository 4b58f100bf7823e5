"""LR schedulers under manual optimization: stepped by interval and frequency, ``ReduceLROnPlateau`` on its monitor.

Lightning steps no scheduler when a module optimizes manually, as lightrl's algorithms do, and it drops
the ``monitor`` and ``strict`` keys of ``configure_optimizers``' scheduler configs (with a warning that
they are ignored). lightrl keeps them instead (see :func:`keep_scheduler_monitors`) and steps every
scheduler as Lightning would under automatic optimization (:func:`step_lr_schedulers`). A resume with a
longer budget continues each ``LambdaLR`` on the new budget from its first step (:func:`resume_lambda_schedules`).
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

#: Keys of a scheduler config that Lightning ignores under manual optimization.
PLATEAU_KEYS = ("monitor", "strict", "reduce_on_plateau")


def split_scheduler_monitors(config: Any) -> tuple[Any, dict[Any, tuple[str, bool]]]:
    """``configure_optimizers``' return value without the plateau keys, and ``{scheduler: (monitor, strict)}``.

    Handles the forms Lightning accepts: an optimizer, a list of them, ``([optimizers], [schedulers])``, a
    dict ``{"optimizer", "lr_scheduler", "monitor"}`` whose ``lr_scheduler`` is a scheduler or a config
    dict, and a list of such dicts.
    """
    monitors: dict[Any, tuple[str, bool]] = {}

    def scheduler_config(entry: Any, monitor: str | None = None) -> Any:
        if not isinstance(entry, dict) or "scheduler" not in entry:
            if monitor is not None:
                monitors[entry] = (monitor, True)
            return entry
        kept = {k: v for k, v in entry.items() if k not in PLATEAU_KEYS}
        monitor = entry.get("monitor", monitor)
        if monitor is not None:
            monitors[entry["scheduler"]] = (monitor, entry.get("strict", True))
        return kept

    def optimizer_config(entry: Any) -> Any:
        if not isinstance(entry, dict) or "lr_scheduler" not in entry:
            return entry
        kept = {k: v for k, v in entry.items() if k != "monitor"}
        kept["lr_scheduler"] = scheduler_config(entry["lr_scheduler"], entry.get("monitor"))
        return kept

    if isinstance(config, dict):
        return optimizer_config(config), monitors
    if isinstance(config, (list, tuple)) and len(config) == 2 and all(isinstance(part, (list, tuple)) for part in config):
        optimizers, schedulers = config
        return (optimizers, [scheduler_config(s) for s in schedulers]), monitors
    if isinstance(config, (list, tuple)):
        return type(config)(optimizer_config(c) for c in config), monitors
    return config, monitors


def keep_scheduler_monitors(cls: type) -> None:
    """Wrap the ``configure_optimizers`` of class ``cls`` (if it defines one) so that its schedulers' monitors land in
    ``module.scheduler_monitors``; ``RLModule.__init_subclass__`` calls it for every algorithm class."""
    own = cls.__dict__.get("configure_optimizers")
    if own is None or getattr(own, "keeps_scheduler_monitors", False):
        return

    @functools.wraps(own)
    def wrapper(module: Any) -> Any:
        config, module.scheduler_monitors = split_scheduler_monitors(own(module))
        return config

    wrapper.keeps_scheduler_monitors = True
    cls.configure_optimizers = wrapper


def step_lr_schedulers(module: Any, interval: str) -> None:
    """Step ``module``'s LR schedulers configured with this ``interval``, as Lightning does under automatic optimization.

    lightrl's algorithms optimize manually, and Lightning then steps no scheduler itself. The
    algorithms call this with ``"step"`` at the end of each ``training_step``; the module does so
    with ``"epoch"`` at each epoch's end, after validation. A ``ReduceLROnPlateau`` steps on its
    ``monitor`` (e.g. ``eval/return_mean``), and each scheduler honours its ``frequency``. The monitors
    are those :func:`keep_scheduler_monitors` kept (``RLModule`` wraps every ``configure_optimizers``).
    """
    trainer = module.trainer
    count = trainer.fit_loop.total_batch_idx if interval == "step" else trainer.current_epoch
    for config in trainer.lr_scheduler_configs:
        if config.interval != interval or (count + 1) % config.frequency:
            continue
        value = None
        monitor, strict = module.scheduler_monitors.get(config.scheduler, (None, True))
        if monitor is not None:
            value = trainer.callback_metrics.get(monitor)
            if value is None:
                if strict:
                    raise MisconfigurationException(
                        f"The LR scheduler monitors {monitor!r}, which was not logged; logged metrics: "
                        f"{sorted(trainer.callback_metrics)}. Validation logs eval/return_mean."
                    )
                continue
        elif isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise MisconfigurationException(
                'ReduceLROnPlateau needs a metric: return {"optimizer": ..., "lr_scheduler": {"scheduler": ..., '
                '"monitor": "eval/return_mean"}} from configure_optimizers.'
            )
        module.lr_scheduler_step(config.scheduler, value)


def resume_lambda_schedules(trainer: Any) -> None:
    """After a resume, set each ``LambdaLR``'s learning rates to its lambda at the restored step.

    A checkpoint restores the optimizer with the learning rate the last step set, computed with the
    budget the run had then; a resume with a longer ``total_timesteps`` (PPO's ``anneal_lr``, which
    ends at 0) would otherwise train its first step at that rate and only then jump to the new budget's.
    Each ``LambdaLR`` that is its optimizer's only scheduler gets ``base_lr * lr_lambda(last_epoch)``, with
    the lambda of this run (which reads this run's budget), so the schedule continues as a run started with
    the new budget would be at that step. With an unchanged budget these are the restored rates, bit for
    bit, so an interrupted run still resumes exactly.
    Does nothing without a ``ckpt_path``: a fresh run starts at ``lr_lambda(0)`` already.
    """
    if trainer.ckpt_path is None:
        return
    configs = trainer.lr_scheduler_configs
    schedulers_of = Counter(id(getattr(config.scheduler, "optimizer", None)) for config in configs)
    for config in configs:
        scheduler = config.scheduler
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) or schedulers_of[id(scheduler.optimizer)] > 1:
            continue  # chained schedulers set the rate together: one lambda alone cannot recompute it
        for group, base_lr, lr_lambda in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            lr = base_lr * lr_lambda(scheduler.last_epoch)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
