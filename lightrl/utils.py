"""Small helpers shared by the CLI and the evaluation code."""

from __future__ import annotations

from lightrl.safe_checkpoint import load_module

__all__ = ["load_module"]
