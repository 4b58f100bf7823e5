"""Ctrl-C and preemption (SIGINT, SIGTERM) end training with a ``last`` checkpoint to resume from."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lightrl.algos.resume import checkpoint_dir


class TrainingInterrupted(SystemExit):
    """Raised after the interrupt checkpoint is saved; exits with ``128 + signal number`` (130 for Ctrl-C)."""


class SaveOnInterrupt(Callback):
    """On SIGINT or SIGTERM, finish the current update, save ``last.ckpt`` and stop.

    The signal only sets a flag; at the end of the training step in progress every DDP rank agrees to
    stop, the checkpoint is written (with the envs, RNGs and, if enabled, the replay buffer, so the run
    continues exactly), and :class:`TrainingInterrupted` ends ``fit``. A second Ctrl-C stops at once,
    without a checkpoint. SIGTERM is what SLURM and Kubernetes send before preempting a job. Resume with
    ``lightrl fit ... --ckpt_path last`` or ``trainer.fit(model, ckpt_path=path)``.

    lightrl modules add this callback themselves; the handlers are installed only while fitting, and
    only in the main thread (Python delivers signals there).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.checkpoint_path: str | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(f"\nlightrl: {signal.Signals(signum).name} received; saving a checkpoint after the current update "
              "(Ctrl-C again to stop at once).", file=sys.stderr, flush=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:  # a signal may reach one rank first: all ranks must stop at the same step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        signum = self.received or signal.SIGTERM
        self.checkpoint_path = f"{checkpoint_dir(trainer)}/last.ckpt"
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)  # the whole state, to resume from
        if trainer.is_global_zero:
            print(f"lightrl: stopped at env step {pl_module.env_steps}; checkpoint saved to {self.checkpoint_path}. "
                  "Resume with --ckpt_path last (or this path).", file=sys.stderr, flush=True)
        raise TrainingInterrupted(128 + signum)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
