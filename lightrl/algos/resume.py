"""What a checkpoint needs beyond Lightning's own state for a run to continue exactly.

Lightning saves the weights, optimizer and LR-scheduler states and its loop counters. A lightrl
checkpoint adds, under ``checkpoint["lightrl"]``, the env-step counter and what identifies the run
(algorithm, spaces, W&B run id), and under ``checkpoint["lightrl_ranks"]`` one entry per DDP rank: the
torch, numpy and python RNG states, the vector env with its episodes in progress, and whatever the
algorithm adds (replay buffer, sampling generators). Everything is stored as tensors, numbers, strings
and bytes, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def rng_state() -> dict[str, Any]:
    """The global torch (CPU and CUDA), numpy and python RNG states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


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
