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
from contextlib import contextmanager
from typing import Any, Iterator

import torch.distributed as dist

from lightrl.compat import local_checkpoint
from lightrl.errors import ActionMaskError, NonFiniteError
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


def checkpoint_metadata(module: Any) -> dict[str, Any]:
    """``checkpoint["lightrl"]``: the run's identity (algorithm, env, spaces, W&B run) and its env-step counter."""
    return {
        "env_steps": module.env_steps,
        "class_path": class_path(module),
        "env_id": module.hparams.env_id,
        "observation_space": repr(getattr(module, "observation_space", None)),
        "action_space": repr(getattr(module, "action_space", None)),
        "world_size": module.world_size,
        "wandb_run_id": wandb_run_id(attached_trainer(module)),
    }


def save_run_state(module: Any, checkpoint: dict[str, Any]) -> None:
    """``RLModule.on_save_checkpoint``: add the run's identity and env-step counter, and every rank's state."""
    checkpoint["lightrl"] = checkpoint_metadata(module)
    module.rank_state.save(checkpoint)


def load_run_state(module: Any, checkpoint: dict[str, Any]) -> None:
    """``RLModule.on_load_checkpoint``: check that ``checkpoint`` fits ``module``, and take its env-step counter and rank states.

    Under validate, test and predict the training callbacks' states are dropped (they use the weights only),
    and the acting networks of checkpoints written before the policies existed move under ``policy.``.
    """
    check_resume(module, checkpoint)
    trainer = attached_trainer(module)
    if trainer is not None and trainer.state.fn != "fit":
        # validate, test and predict use the weights: the training callbacks' states (their folders, best scores) are not theirs.
        checkpoint.pop("callbacks", None)
    module.env_steps = checkpoint["lightrl"]["env_steps"]
    module.rank_state.keep(checkpoint)
    # Checkpoints written before the policies existed keep the acting networks at the top level
    # ("agent.*", "q_network.*", "actor.*"); they now live under "policy.".
    state = checkpoint.get("state_dict")
    if state is not None:
        own = module.state_dict().keys()
        for key in [k for k in state if k not in own and f"policy.{k}" in own]:
            state[f"policy.{key}"] = state.pop(key)


def checkpoint_dir(trainer: Any) -> str:
    """Where a run's checkpoints go: the ModelCheckpoint's folder, else ``<default_root_dir>/checkpoints``."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.dirpath:
        return str(callback.dirpath)
    return os.path.join(trainer.default_root_dir, "checkpoints")


class RankState:
    """This process's part of a run that Lightning's checkpoint does not hold, with its own ``state_dict``.

    The global torch, numpy and python RNG states, the experience source's state (the vector env with its
    episodes in progress, and the replay buffer and its sampler) and the policy's exploration generator.
    :meth:`save` gathers every rank's into ``checkpoint["lightrl_ranks"]``; :meth:`keep` holds a loaded
    checkpoint's until :meth:`resume` restores them, at the first batch, once Lightning has set up.

    Args:
        module: The :class:`~lightrl.algos.base.RLModule` whose :attr:`source` and :attr:`policy` it saves.
    """

    def __init__(self, module: Any):
        self.module = module
        #: The ranks' states of the checkpoint being resumed, until :meth:`resume`.
        self.pending: list[dict[str, Any]] | None = None
        #: The state a fit ended with, so that a checkpoint saved after ``fit`` can still continue the run.
        self.final: dict[str, Any] | None = None
        #: Set while one rank writes a checkpoint alone (:func:`save_local_checkpoint`): no collective then.
        self.local_only = False

    def state_dict(self) -> dict[str, Any]:
        """This process's RNG states, its source's state and its policy's exploration generator."""
        state = {"rng": rng_state(), **self.module.source.state_dict()}
        exploration = self.module.policy.exploration
        if exploration is not None:
            state["explorer"] = exploration.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the RNG states last."""
        self.module.source.load_state_dict(state)
        if "explorer" in state:
            self.module.policy.exploration.generator.set_state(state["explorer"])
        set_rng_state(state["rng"])

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Add every rank's state to ``checkpoint`` while fitting (a collective under DDP), or the one a fit ended with."""
        module = self.module
        if module.collecting:
            state, world_size = self.state_dict(), module.world_size
            checkpoint["lightrl_ranks"] = [state] if self.local_only or world_size == 1 else gather_ranks(state, world_size)
        elif self.final is not None and module.world_size == 1:
            checkpoint["lightrl_ranks"] = [self.final]

    def keep(self, checkpoint: dict[str, Any]) -> None:
        """Hold the rank states of a checkpoint being loaded for :meth:`resume`."""
        self.pending = checkpoint.get("lightrl_ranks")

    def resume(self) -> None:
        """Continue this rank's envs, RNGs and storage from the checkpoint being resumed, if any."""
        states, self.pending = self.pending, None
        trainer = attached_trainer(self.module)
        if states is None or trainer is None:
            return
        if len(states) != trainer.world_size:
            warnings.warn(
                f"The checkpoint holds the state of {len(states)} process(es) and this run has {trainer.world_size}: "
                "weights, optimizer and counters are restored, envs restart from fresh episodes and RNGs are not restored.",
                stacklevel=2,
            )
            self.module.source.forget_episodes()
            return
        self.load_state_dict(states[trainer.global_rank])


def save_local_checkpoint(module: Any, filename: str) -> str | None:
    """Write a checkpoint from this rank alone (no collective, so it is safe while other ranks run on).

    Returns its path, or None where this Lightning version offers no way to (see
    :func:`lightrl.compat.local_checkpoint`).
    """
    trainer = module.trainer
    rank = trainer.global_rank
    path = os.path.join(checkpoint_dir(trainer), filename if rank == 0 else filename.replace(".ckpt", f"-rank{rank}.ckpt"))
    if trainer.world_size == 1:
        trainer.save_checkpoint(path, weights_only=False)  # its only collective, a barrier, does nothing in one process
        return path
    module.rank_state.local_only = True
    try:
        checkpoint = local_checkpoint(trainer)  # Trainer.save_checkpoint would wait for the other ranks
    finally:
        module.rank_state.local_only = False
    if checkpoint is None:
        return None
    trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
    return path


@contextmanager
def stop_on_nonfinite(module: Any) -> Iterator[None]:
    """Collect inside this block: a NaN or Inf from the envs, or an action mask with no valid action, then saves the
    state and stops, as a bad loss does."""
    try:
        yield
    except NonFiniteError as err:
        fail_nonfinite(module, str(err))
    except ActionMaskError as err:
        where = f"{err} At env step {module.env_steps} ({type(module).__name__}, rank {module.trainer.global_rank})"
        raise ActionMaskError(f"{where}; training stopped, {save_state_before(module)}.") from None


def save_state_before(module: Any) -> str:
    """Save a checkpoint of the state before the failure (``last.ckpt``); say where it is."""
    path = save_local_checkpoint(module, "last.ckpt")
    return f"the state from before it is saved in {path}" if path else "this Lightning version cannot save it from one rank"


def fail_nonfinite(module: Any, what: str) -> None:
    """Save a checkpoint of the state before the bad update, then raise :class:`NonFiniteError`."""
    where = f"{what} at env step {module.env_steps} ({type(module).__name__} on {module.hparams.env_id}, rank {module.trainer.global_rank})"
    saved = save_state_before(module)
    raise NonFiniteError(
        f"{where}. Training stopped before this update; {saved}. "
        "Check the env's observations and rewards (e.g. wrap it to clip or normalize them) or lower the learning rate."
    )
