"""Callbacks lightrl modules add to the Trainer: env-step progress bars, checkpoints, interrupts."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar, TQDMProgressBar

from lightrl.callbacks.interrupt import SaveOnInterrupt, TrainingInterrupted
from lightrl.callbacks.progress import EnvStepProgressBar, EnvStepRichProgressBar

__all__ = ["EnvStepProgressBar", "EnvStepRichProgressBar", "SaveOnInterrupt", "TrainingInterrupted", "default_callbacks", "default_checkpoint"]


def default_checkpoint(validation: bool = True) -> ModelCheckpoint:
    """The plain ``ModelCheckpoint`` lightrl uses in place of Lightning's default one.

    It writes ``last.ckpt`` at the end of every epoch (so a crash loses at most one epoch, and
    ``--ckpt_path last`` continues the run) and, with validation, keeps the checkpoint with the best
    ``eval/return_mean`` as ``best-step=<env step>.ckpt``. Without validation it keeps the newest epoch's.

    Args:
        validation: Whether the run validates (``Trainer(limit_val_batches)`` is not 0).
    """
    if not validation:
        return ModelCheckpoint(save_last=True, save_on_train_epoch_end=True)
    # Saved at the train epoch's end, after that epoch's validation: last.ckpt is rewritten every epoch even when
    # check_val_every_n_epoch > 1, and the best one is judged on the newest evaluation.
    return ModelCheckpoint(monitor="eval/return_mean", mode="max", filename="best-{step}", save_last=True, save_on_train_epoch_end=True)


def is_default_checkpoint(callback: Callback) -> bool:
    """Whether ``callback`` is a ``ModelCheckpoint`` with Lightning's default settings (``enable_checkpointing=True``)."""
    return (
        type(callback) is ModelCheckpoint
        and callback.monitor is None
        and callback.save_last is None
        and callback.dirpath is None
        and callback.filename is None
        and callback.save_top_k == 1
    )


def default_callbacks(module) -> list[Callback]:
    """What an :class:`~lightrl.algos.base.RLModule` adds to its Trainer (``configure_callbacks``).

    - Lightning's TQDM or Rich bar becomes its env-step version.
    - Lightning's default ``ModelCheckpoint`` becomes :func:`default_checkpoint`'s (best by
      ``eval/return_mean``, and ``last.ckpt`` every epoch). A ``ModelCheckpoint`` configured by you is kept as it is.
    - :class:`SaveOnInterrupt`, unless the Trainer already has one.
    """
    trainer = module.trainer
    present = trainer.callbacks
    callbacks: list[Callback] = []
    bar = trainer.progress_bar_callback
    if type(bar) is TQDMProgressBar:
        callbacks.append(EnvStepProgressBar(refresh_rate=bar.refresh_rate))
    elif type(bar) is RichProgressBar:
        callbacks.append(EnvStepRichProgressBar())
    checkpoints = [c for c in present if isinstance(c, ModelCheckpoint)]
    if len(checkpoints) == 1 and is_default_checkpoint(checkpoints[0]):
        callbacks.append(default_checkpoint(validation=trainer.limit_val_batches != 0))
    if not any(isinstance(c, SaveOnInterrupt) for c in present):
        callbacks.append(SaveOnInterrupt())
    return callbacks
