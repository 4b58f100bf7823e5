"""Adam and gradient clipping for tiny RL networks, within what Lightning's precision plugins allow."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from lightrl.compat import fused_adam

#: Precision plugins under which lightrl clips gradients with :func:`clip_grad_norm_`; others clip with their own code.
SELF_CLIPPING_PLUGINS = (Precision, MixedPrecision)


def adam(module: L.LightningModule, params: Any, lr: float, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel (the fastest on CPU and GPU) where Lightning allows it, else ``torch.optim.Adam``.

    A fused optimizer unscales inside its own ``step()``: with a grad scaler (``16-mixed``) Lightning would
    not unscale before ``on_before_optimizer_step``, and a precision plugin refuses to clip the gradients of
    such an optimizer. lightrl clips them itself under the standard plugins (``32-true``, ``bf16-mixed``:
    :func:`lightrl.algos.precision.clip_gradients`), so the fused kernel is used there, clipping or not; with
    a grad scaler, with a subclass of ``MixedPrecision`` that clips, and on other devices the default
    implementation is used. The update is the same Adam either way.

    Args:
        module: The LightningModule that owns the parameters (its Trainer decides).
        params: Parameters or parameter groups.
        lr: Learning rate.
        **kwargs: Further ``torch.optim.Adam`` arguments, e.g. ``eps``.
    """
    try:
        plugin = module.trainer.precision_plugin
    except RuntimeError:  # not attached to a Trainer
        plugin = None
    scaler = getattr(plugin, "scaler", None)
    # Lightning's MixedPrecision.clip_gradients refuses a fused optimizer; lightrl calls it only for subclasses.
    amp_clipping = isinstance(plugin, MixedPrecision) and type(plugin) not in SELF_CLIPPING_PLUGINS and module.hparams.get("max_grad_norm") is not None
    if scaler is None and not amp_clipping and module.device.type in ("cpu", "cuda"):
        return fused_adam(params, lr=lr, **kwargs)
    return torch.optim.Adam(params, lr=lr, **kwargs)


@torch.no_grad()
def clip_grad_norm_(params: Iterable[torch.Tensor], max_norm: float) -> float:
    """Scale the gradients of ``params`` so that their global L2 norm is at most ``max_norm``.

    The rule of ``torch.nn.utils.clip_grad_norm_(params, max_norm)``: gradients are multiplied by
    ``max_norm / (norm + 1e-6)`` when that is below 1. Unlike it, this assumes all gradients on one device
    with one dtype (true of lightrl's networks), reads the norm once (a device sync, which the non-finite
    guard needs anyway), leaves the gradients untouched when they are within the bound, and scales
    nothing when the norm is not finite, so that the guard can report the gradients as they were.
    Returns the norm before clipping (NaN or inf when a gradient is not finite).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    # The norm of the per-tensor norms, as torch's: its grouping by device and dtype costs more than the norms here.
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    if math.isfinite(norm) and norm + 1e-6 > max_norm:
        scale = max_norm / (norm + 1e-6)
        for grad in grads:
            grad.mul_(scale)
    return norm


@dataclass
class OptimizerIteration:
    """Set when an :func:`scaler_iteration` block ends: did the grad scaler skip a step?"""

    skipped: bool = False


@contextmanager
def scaler_iteration(scaler: torch.amp.GradScaler | None) -> Iterator[OptimizerIteration]:
    """One step of each optimizer, with the AMP grad ``scaler`` updated once, at the end.

    Lightning's ``16-mixed`` plugin calls ``scaler.update()`` after every ``optimizer.step()``. With
    several optimizers (SAC's critic, actor and alpha) that would change the scale between the steps
    of one iteration. Inside this block the update waits until all of them have stepped. Afterwards
    ``iteration.skipped`` tells whether the scaler skipped a step (inf/NaN gradients). Without a grad
    scaler (32-true, bf16-mixed) it does nothing and ``skipped`` stays False.
    """
    iteration = OptimizerIteration()
    if scaler is None or not scaler.is_enabled():
        yield iteration
        return
    scale = scaler.get_scale()
    scaler.update = lambda new_scale=None: None  # shadows the method until the iteration is over
    try:
        yield iteration
    finally:
        del scaler.update
        scaler.update()
    iteration.skipped = scaler.get_scale() < scale


def grad_scaler(module: L.LightningModule) -> torch.amp.GradScaler | None:
    """The AMP grad scaler of ``module``'s Trainer (``16-mixed``), or None (no scaler, or no Trainer)."""
    try:
        plugin = module.trainer.precision_plugin
    except RuntimeError:  # not attached to a Trainer
        return None
    return getattr(plugin, "scaler", None)
