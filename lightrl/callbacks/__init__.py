"""Callbacks lightrl modules add to the Trainer: env-step progress bars, evaluation checkpoints, interrupts."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar, TQDMProgressBar

from lightrl.callbacks.evaluation import EvalCheckpoint
from lightrl.callbacks.interrupt import SaveOnInterrupt, TrainingInterrupted
from lightrl.callbacks.progress import EnvStepProgressBar, EnvStepRichProgressBar

__all__ = ["EnvStepProgressBar", "EnvStepRichProgressBar", "EvalCheckpoint", "SaveOnInterrupt", "TrainingInterrupted", "default_callbacks"]


def default_callbacks(module) -> list[Callback]:
    """What an :class:`~lightrl.algos.base.RLModule` adds to its Trainer (``configure_callbacks``).

    - Lightning's TQDM or Rich bar becomes its env-step version.
    - A plain ``ModelCheckpoint`` whose ``save_last`` was left unset saves ``last.ckpt``, to resume from.
    - :class:`SaveOnInterrupt`, unless the Trainer already has one.
    - With ``eval_frequency > 0``, :class:`EvalCheckpoint`, unless the Trainer already has one. As a
      ``ModelCheckpoint`` it takes the place of the Trainer's default checkpoint callback.
    """
    try:
        trainer = module.trainer
    except RuntimeError:  # not attached to a Trainer
        trainer = None
    present = [] if trainer is None else trainer.callbacks
    callbacks: list[Callback] = []
    bar = trainer.progress_bar_callback if trainer is not None else None
    if type(bar) is TQDMProgressBar:
        callbacks.append(EnvStepProgressBar(refresh_rate=bar.refresh_rate))
    elif type(bar) is RichProgressBar:
        callbacks.append(EnvStepRichProgressBar())
    for checkpoint in present:
        if type(checkpoint) is ModelCheckpoint and checkpoint.save_last is None:
            checkpoint.save_last = True
    if not any(isinstance(c, SaveOnInterrupt) for c in present):
        callbacks.append(SaveOnInterrupt())
    hp = module.hparams
    if hp.eval_frequency > 0 and not any(isinstance(c, EvalCheckpoint) for c in present):
        callbacks.append(EvalCheckpoint(hp.eval_frequency, hp.eval_episodes, hp.capture_video))
    return callbacks
