"""What a checkpoint needs beyond Lightning's own state for a run to continue exactly.

Lightning saves the weights, optimizer and LR-scheduler states and its loop counters. A lightrl
checkpoint adds, under ``checkpoint["lightrl"]``, the env-step counter and what identifies the run
(algorithm, spaces, W&B run id), and under ``checkpoint["lightrl_ranks"]`` one entry per DDP rank: the
torch, numpy and python RNG states, the vector env with its episodes in progress, and whatever the
algorithm adds (replay buffer, sampling generators). Everything is stored as tensors, numbers, strings
and bytes, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch.distributed as dist

from lightrl.compat import local_checkpoint
from lightrl.errors import NonFiniteError
from lightrl.rng import rng_state, set_rng_state


def attached_trainer(module: Any) -> Any:
    """The Trainer ``module`` is attached to, or None (``LightningModule.trainer`` raises RuntimeError then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def gather_ranks(state: dict[str, Any], world_size: int) -> list[dict[str, Any]]:
    """Every rank's ``state``, in rank order (a collective: all ranks must call it together)."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [state]
    states: list[Any] = [None] * world_size
    dist.all_gather_object(states, state)
    return states


def class_path(obj: Any) -> str:
    """``module.QualName`` of an object's class, as LightningCLI's ``--model`` takes it."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def check_class(saved: str | None, mine: str, source: str = "the checkpoint") -> None:
    """Raise ``ValueError`` unless a checkpoint written by class ``saved`` can continue a run of ``mine``."""
    if saved is None:
        raise ValueError(f"{source} was not written by a lightrl algorithm (it has no 'lightrl' section); pass a checkpoint from `lightrl fit` or Trainer.fit.")
    if saved != mine:
        raise ValueError(f"{source} is from {saved}, but this run trains {mine}. Resume with --model {saved}, or start without --ckpt_path.")


def check_resume(module: Any, checkpoint: dict[str, Any], source: str = "the checkpoint") -> None:
    """Raise ``ValueError`` saying what differs if ``checkpoint`` cannot continue training ``module``."""
    meta = checkpoint.get("lightrl") or {}
    check_class(meta.get("class_path"), class_path(module), source)
    for kind in ("observation_space", "action_space"):
        saved, current = meta.get(kind), repr(getattr(module, kind, None))
        if saved is not None and saved != current:
            raise ValueError(
                f"{source} was trained on env {meta.get('env_id')!r} with {kind} {saved}, but this run's env "
                f"{module.hparams.env_id!r} has {current}. Resume with the checkpoint's env_id and env_kwargs."
            )


def wandb_run_id(trainer: Any) -> str | None:
    """The id of the trainer's W&B run, kept in checkpoints so that a resumed run logs to the same run.

    ``WandbLogger.version`` is the id of its run once the run exists, else the id it was given (or None);
    unlike ``WandbLogger.experiment`` it never starts a run.
    """
    from lightning.pytorch.loggers import WandbLogger

    for logger in getattr(trainer, "loggers", None) or []:
        if isinstance(logger, WandbLogger):
            return logger.version
    return None


class Resumable:
    """The checkpoint and guard half of :class:`~lightrl.algos.base.RLModule`.

    ``on_save_checkpoint`` adds the run's identity and counters, and each rank's :meth:`rank_state`
    (gathered over DDP ranks); ``on_load_checkpoint`` checks that the checkpoint fits this run and keeps
    the rank states until :meth:`apply_resume_state` hands them back, just before the first collection.
    :meth:`fail_nonfinite` saves the state from before a bad update and stops training.
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the run's identity, its counters and every rank's state to ``checkpoint`` (Lightning hook)."""
        checkpoint["lightrl"] = {
            "env_steps": self.env_steps,
            "class_path": class_path(self),
            "env_id": self.hparams.env_id,
            "observation_space": repr(getattr(self, "observation_space", None)),
            "action_space": repr(getattr(self, "action_space", None)),
            "world_size": self.world_size,
            "wandb_run_id": wandb_run_id(attached_trainer(self)),
        }
        if self.collecting:  # fitting: add each rank's envs, RNGs and algorithm state
            state = self.rank_state()
            local = self._local_checkpoint or self.world_size == 1
            checkpoint["lightrl_ranks"] = [state] if local else gather_ranks(state, self.world_size)
        elif self._final_rank_state is not None and self.world_size == 1:  # after fit: the state it ended with
            checkpoint["lightrl_ranks"] = [self._final_rank_state]

    def rank_state(self) -> dict[str, Any]:
        """This process's part of a checkpoint: RNG states and the source's (extend it in a subclass)."""
        return {"rng": rng_state(), **self.source.state_dict()}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`rank_state` (extend it in a subclass); the RNG states are restored last."""
        self.source.load_state_dict(state)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check that ``checkpoint`` fits this run; keep its rank states for :meth:`apply_resume_state` (Lightning hook)."""
        check_resume(self, checkpoint)
        self.env_steps = checkpoint["lightrl"]["env_steps"]
        self._resume_states = checkpoint.get("lightrl_ranks")

    def apply_resume_state(self) -> None:
        """Continue this rank's envs, RNGs and algorithm state from the checkpoint being resumed, if any."""
        states, self._resume_states = self._resume_states, None
        if states is None or attached_trainer(self) is None:
            return
        if len(states) != self.world_size:
            warnings.warn(
                f"The checkpoint holds the state of {len(states)} process(es) and this run has {self.world_size}: "
                "weights, optimizer and counters are restored, envs restart from fresh episodes and RNGs are not restored.",
                stacklevel=2,
            )
            self.source.forget_episodes()
            return
        state = states[self.trainer.global_rank]
        self.load_rank_state(state)
        set_rng_state(state["rng"])

    def checkpoint_dir(self) -> str:
        """Where this run's checkpoints go: the ModelCheckpoint's folder, else ``<default_root_dir>/checkpoints``."""
        callback = self.trainer.checkpoint_callback
        if callback is not None and callback.dirpath:
            return str(callback.dirpath)
        return os.path.join(self.trainer.default_root_dir, "checkpoints")

    def save_local_checkpoint(self, filename: str) -> str | None:
        """Write a checkpoint from this rank alone (no collective, so it is safe while other ranks run on).

        Returns its path, or None where this Lightning version offers no way to (see
        :func:`lightrl.compat.local_checkpoint`).
        """
        rank = self.trainer.global_rank
        path = os.path.join(self.checkpoint_dir(), filename if rank == 0 else filename.replace(".ckpt", f"-rank{rank}.ckpt"))
        if self.world_size == 1:
            self.trainer.save_checkpoint(path)  # its only collective, a barrier, does nothing in one process
            return path
        self._local_checkpoint = True
        try:
            checkpoint = local_checkpoint(self.trainer)  # Trainer.save_checkpoint would wait for the other ranks
        finally:
            self._local_checkpoint = False
        if checkpoint is None:
            return None
        self.trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
        return path

    def fail_nonfinite(self, what: str) -> None:
        """Save a checkpoint of the state before the bad update, then raise :class:`NonFiniteError`."""
        where = f"{what} at env step {self.env_steps} ({type(self).__name__} on {self.hparams.env_id}, rank {self.trainer.global_rank})"
        path = self.save_local_checkpoint("last.ckpt")
        saved = f"the state from before it is saved in {path}" if path else "this Lightning version cannot save it from one rank"
        raise NonFiniteError(
            f"{where}. Training stopped before this update; {saved}. "
            "Check the env's observations and rewards (e.g. wrap it to clip or normalize them) or lower the learning rate."
        )
