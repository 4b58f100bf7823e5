"""Small helpers shared by the CLI and the evaluation code."""

from __future__ import annotations

import importlib

import torch


def load_module(ckpt_path: str):
    """Load any lightrl algorithm from its checkpoint, whichever class wrote it."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    class_path = checkpoint.get("lightrl", {}).get("class_path")
    if class_path is None:
        raise ValueError(f"{ckpt_path} was not written by a lightrl algorithm (it has no 'lightrl' entry).")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.load_from_checkpoint(ckpt_path, map_location="cpu")
