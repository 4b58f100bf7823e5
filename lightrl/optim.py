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


@torch.no_grad()
def clip_grad_norm_(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``optimizer``'s parameters so that their global L2 norm is at most ``max_norm``.

    The result is that of ``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (same ops, bit for bit), in
    about half the time: it skips the grouping of tensors by device and dtype, so all gradients must be on
    one device with one dtype (true of lightrl's networks). Returns the norm before clipping.
    """
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total_norm + 1e-6), max=1.0))
    return total_norm
