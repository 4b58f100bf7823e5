"""Errors lightrl raises on purpose, in one module that every layer (data, algorithms, CLI) may import."""

from __future__ import annotations


class NonFiniteError(RuntimeError):
    """NaN or Inf in observations, rewards, losses or gradients: training stops with this error."""


class EnvError(ValueError):
    """An env that breaks its own contract (an observation outside the shape of its observation space)."""
