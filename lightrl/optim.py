"""Optimizers built for speed on tiny RL networks, within what Lightning's precision plugins allow."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision


def adam(module: L.LightningModule, params: Any, lr: float, **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused kernel (the fastest on CPU and GPU) where Lightning allows it.

    A fused optimizer unscales inside its own ``step()``: with a grad scaler (``16-mixed``) Lightning would
    not unscale before ``on_before_optimizer_step``, and under mixed precision it refuses to clip the
    gradients of such an optimizer. There, and on other devices, the default implementation is used.
    The update is the same Adam either way.

    Args:
        module: The LightningModule that owns the parameters (its Trainer decides).
        params: Parameters or parameter groups.
        lr: Learning rate.
        **kwargs: Further ``torch.optim.Adam`` arguments, e.g. ``eps``.
    """
    trainer = module._trainer
    plugin = trainer.precision_plugin if trainer is not None else None
    scaler = getattr(plugin, "scaler", None)
    amp_clipping = isinstance(plugin, MixedPrecision) and module.hparams.get("max_grad_norm") is not None
    fused = scaler is None and not amp_clipping and module.device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, fused=fused or None, **kwargs)
