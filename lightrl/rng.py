"""The process-wide RNG states (torch, CUDA, numpy, python), captured and restored as checkpoint-safe values."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch


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


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Leave the global torch, numpy and python RNGs as they were, so that evaluation never changes training."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from the torch RNG seeded with ``seed`` alone, and leave the global one as it was.

    Networks are built inside it, so that every DDP rank starts from the same weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def seed_all(seed: int) -> None:
    """Seed the global python, numpy and torch RNGs (a process's collection and sampling draws)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
