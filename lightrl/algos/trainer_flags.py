"""Trainer flags that cannot apply to an RL module, refused before any env is created, with the setting to use."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightrl.budget import check_budget


class UnsupportedTrainerFlag(MisconfigurationException):
    """A Trainer flag that cannot apply to a lightrl algorithm; the message names the lightrl setting to use."""


def batch_setting(module: Any) -> str:
    """The hyperparameters that set how much experience one update sees: the algorithm family's ``batch_setting``."""
    return getattr(module, "batch_setting", "the size of the batches your training_step takes")


def check_trainer_flags(trainer: Any, module: Any) -> None:
    """Raise :class:`UnsupportedTrainerFlag` for a Trainer flag that cannot apply to ``module`` (when fitting).

    lightrl's algorithms optimize manually (several optimizer steps per batch), are fed by an endless
    stream of fresh experience, and end at ``total_timesteps``, so:

    - ``gradient_clip_val``: clip with the algorithm's ``max_grad_norm`` instead.
    - ``accumulate_grad_batches > 1``: every batch is new experience collected with the current
      weights; make the batch larger instead.
    - ``min_epochs`` / ``min_steps``: the run ends at ``total_timesteps``; raise that instead.
    - ``overfit_batches``: there is no fixed set of batches to overfit; use a small ``total_timesteps``.
    """
    if trainer.state.fn != TrainerFn.FITTING:  # validate, test and predict neither optimize nor collect
        return
    name = type(module).__name__
    clip = "max_grad_norm"
    problems = []
    if trainer.gradient_clip_val:
        problems.append(f"Trainer(gradient_clip_val={trainer.gradient_clip_val}) does not apply to {name}: set its {clip} instead.")
    if trainer.accumulate_grad_batches > 1:
        problems.append(
            f"Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) does not apply to {name}: each batch is fresh "
            f"experience from the current policy; make the batch larger with {batch_setting(module)}."
        )
    # Lightning turns min_steps into min_epochs=1 by itself: name min_steps first.
    if (trainer.min_steps or 0) > 0 or (trainer.min_epochs or 0) > 1:
        flag = f"min_steps={trainer.min_steps}" if trainer.min_steps else f"min_epochs={trainer.min_epochs}"
        problems.append(f"Trainer({flag}) does not apply to {name}: the run ends at total_timesteps; raise total_timesteps instead.")
    if trainer.overfit_batches:
        problems.append(f"Trainer(overfit_batches={trainer.overfit_batches}) does not apply to {name}: use a small total_timesteps instead.")
    if problems:
        raise UnsupportedTrainerFlag(problems[0])
    check_budget(trainer, module)
