"""Trainer flags that cannot apply to an RL module, refused before any env is created, with the setting to use;
and the logging cadence that replaces Lightning's default ``log_every_n_steps`` (:func:`set_log_cadence`)."""

from __future__ import annotations

import weakref
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


#: ``Trainer(log_every_n_steps)``'s default: a Trainer that still has it was left to lightrl's cadence.
LIGHTNING_LOG_EVERY_N_STEPS = 50
#: The cadence :func:`set_log_cadence` chose, per Trainer, so that a reused Trainer gets the next module's.
_chosen_cadence: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def log_cadence(log_interval: int, env_steps_per_batch: int) -> int:
    """Training steps between log points: about one per ``log_interval`` env steps, at least one per step.

    Example::

        >>> log_cadence(1000, 512)  # PPO's default rollout of 4 x 128 env steps: every rollout
        1
        >>> log_cadence(1000, 8)  # SAC's training step of 8 update phases: every 125 steps
        125
    """
    return max(1, log_interval // env_steps_per_batch)


def set_log_cadence(trainer: Any, module: Any) -> None:
    """Log about every ``module.log_interval`` env steps when fitting, unless ``log_every_n_steps`` was set.

    Lightning's default ``log_every_n_steps=50`` counts training steps, and one training step of an RL
    algorithm is a whole rollout (PPO) or several update phases (SAC): 50 of them can be a whole short
    run, whose curves would then be empty. A Trainer that still has that default gets
    :func:`log_cadence` of the module's ``log_interval`` and ``env_steps_per_batch`` instead; any other value
    (``0`` included) is kept, and so is 50 for a module whose training steps vary in size
    (``env_steps_per_batch`` is None). The last training step is logged whatever the cadence (see
    :func:`lightrl.algos.training_log.should_log`). The default ``log_interval`` (2048, SB3's default PPO
    rollout) is not smaller because a log point costs Lightning about a quarter of a millisecond per metric.
    """
    if trainer.state.fn != TrainerFn.FITTING:
        return
    current = trainer.log_every_n_steps
    if current != LIGHTNING_LOG_EVERY_N_STEPS and current != _chosen_cadence.get(trainer):
        return  # the user's
    per_batch = module.env_steps_per_batch
    cadence = LIGHTNING_LOG_EVERY_N_STEPS if per_batch is None else log_cadence(module.log_interval, per_batch)
    trainer.log_every_n_steps = _chosen_cadence[trainer] = cadence
