"""Errors lightrl raises on purpose, in one module that every layer (data, algorithms, CLI) may import."""

from __future__ import annotations


class NonFiniteError(RuntimeError):
    """NaN or Inf in observations, rewards, losses or gradients: training stops with this error."""


class EnvWorkerDied(RuntimeError):
    """A worker process of a ``vectorization="async"`` vector env died (killed, out of memory, a crash in C code)."""


class EnvError(ValueError):
    """An env that breaks its own contract (an observation outside the shape of its observation space)."""


class ActionMaskError(EnvError):
    """An action mask with no valid action for a sub-env that must act: training stops with this error."""
