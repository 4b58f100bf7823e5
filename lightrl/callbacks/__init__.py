"""Callbacks lightrl modules add to the Trainer: env-step progress bars, checkpoints, interrupts."""

from __future__ import annotations

import warnings
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_warn

from lightrl.callbacks.collector import CloseSourceOnException
from lightrl.callbacks.interrupt import SaveOnInterrupt, TrainingInterrupted
from lightrl.callbacks.progress import EnvStepProgressBar, EnvStepRichProgressBar
from lightrl.checkpoint_io import AtomicCheckpoints

__all__ = ["EnvStepProgressBar", "EnvStepRichProgressBar", "RunCheckpoint", "SaveOnInterrupt", "TrainingInterrupted", "default_callbacks", "default_checkpoints"]


class RunCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that does not warn that its folder "exists and is not empty" when the run resumes from it.

    A resumed run continues in the folder of the checkpoint it resumes from, which is therefore never empty;
    a new run in a folder with checkpoints still gets Lightning's warning. Lightning warns in ``setup``,
    before the Trainer tells whether it resumes; the warning is therefore held until ``on_fit_start``.
    """

    NOT_EMPTY = "Checkpoint directory {} exists and is not empty."
    held_warning = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Lightning's setup, with its warning about a non-empty folder held until ``on_fit_start``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty\.$", category=UserWarning)
            super().setup(trainer, pl_module, stage)
        folder = Path(self.dirpath) if self.dirpath else None
        self.held_warning = stage == "fit" and self.save_top_k != 0 and folder is not None and folder.is_dir() and any(folder.iterdir())

    def on_fit_start(self, trainer, pl_module) -> None:
        """Lightning's warning about a non-empty folder, unless the run resumes."""
        if self.held_warning and trainer.ckpt_path is None:
            rank_zero_warn(self.NOT_EMPTY.format(self.dirpath))


def default_checkpoints(validation: bool = True) -> list[ModelCheckpoint]:
    """The ``ModelCheckpoint`` callbacks (:class:`RunCheckpoint`) lightrl uses in place of Lightning's default one.

    - With validation, the best checkpoint by ``eval/return_mean``, as ``best-step=<env step>.ckpt``
      (first, so that it is ``trainer.checkpoint_callback``).
    - ``last.ckpt``, rewritten at the end of every epoch (Lightning writes it atomically), so that a
      crash loses at most one epoch and ``--ckpt_path last`` continues the run.

    Both save at the end of the training epoch, after that epoch's validation. (A ``ModelCheckpoint``
    with ``save_last=True`` writes ``last.ckpt`` only when it saves a new best, hence two callbacks.)

    Args:
        validation: Whether the run validates (``Trainer(limit_val_batches)`` is not 0).
    """
    last = RunCheckpoint(filename="last", enable_version_counter=False, save_on_train_epoch_end=True)
    if not validation:
        return [last]
    best = RunCheckpoint(monitor="eval/return_mean", mode="max", filename="best-{step}", save_on_train_epoch_end=True)
    return [best, last]


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
    - Lightning's default ``ModelCheckpoint`` becomes :func:`default_checkpoints`' two (the best by
      ``eval/return_mean``, and ``last.ckpt`` every epoch). A ``ModelCheckpoint`` configured by you is kept as it is.
    - :class:`SaveOnInterrupt` and :class:`~lightrl.callbacks.collector.CloseSourceOnException`, unless the
      Trainer already has them (a Trainer used for a second ``fit`` keeps the first one's).
    - :class:`~lightrl.checkpoint_io.AtomicCheckpoints`: checkpoint files are written atomically.
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
        callbacks.extend(default_checkpoints(validation=trainer.limit_val_batches != 0))
    for kind in (SaveOnInterrupt, CloseSourceOnException, AtomicCheckpoints):  # a Trainer used again keeps those of its first run
        if not any(isinstance(c, kind) for c in present):
            callbacks.append(kind())
    return callbacks
