"""Precision around an :class:`~lightrl.algos.base.RLModule`'s updates: the acting context, the grad scaler, clipping, non-finite guards.

The Trainer owns precision (``32-true``, ``bf16-mixed``, ``16-mixed``). These helpers make acting run in the
same precision as training (:func:`acting_context`), update the AMP grad scaler once per iteration of
several optimizers (:func:`optimizer_iteration`), clip the true (unscaled) gradients of each parameter
group (:func:`clip_gradients`) and stop on a NaN or Inf loss before it reaches the weights (:func:`check_finite_loss`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, ContextManager, Iterator

import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor

from lightrl.algos.resume import attached_trainer, fail_nonfinite
from lightrl.optim import SELF_CLIPPING_PLUGINS, OptimizerIteration, clip_grad_norm_, grad_scaler, scaler_iteration


def acting_context(module: Any) -> ContextManager:
    """The Trainer's precision context, so that acting runs in the same precision as training (none without a Trainer).

    Under ``bf16-mixed`` and ``16-mixed`` it is the plugin's autocast with its weight-cast cache on (Lightning
    turns it off for training): a rollout casts each weight once instead of once per vector step.
    """
    trainer = attached_trainer(module)
    if trainer is None:
        return torch.autocast("cpu", enabled=False)
    plugin = trainer.precision_plugin
    if type(plugin) is MixedPrecision:
        return cached_autocast(plugin.device, torch.bfloat16 if plugin.precision == "bf16-mixed" else torch.half)
    return plugin.forward_context()


@contextmanager
def cached_autocast(device: str, dtype: torch.dtype) -> Iterator[None]:
    """``torch.autocast`` with the cast cache, emptied on exit even when nested in another autocast (whose exit
    would not empty it), so that no cast outlives an optimizer step. For acting only: nothing steps inside."""
    try:
        with torch.autocast(device, dtype=dtype, cache_enabled=True):
            yield
    finally:
        torch.clear_autocast_cache()


@contextmanager
def optimizer_iteration(module: Any) -> Iterator[OptimizerIteration]:
    """One step of each of ``module``'s optimizers, with the AMP grad scaler updated once, at the end (see :func:`lightrl.optim.scaler_iteration`).

    Afterwards ``iteration.skipped`` tells whether the scaler skipped a step (inf/NaN gradients), so
    that target networks are not moved towards weights that did not change; ``module.skipped_optimizer_steps``
    counts those steps.

    Example::

        with optimizer_iteration(self) as iteration:
            ...  # backward and step each optimizer once
        if not iteration.skipped:
            polyak_update(self.target.parameters(), self.online.parameters(), tau)
    """
    with scaler_iteration(grad_scaler(module)) as iteration:
        yield iteration
    module.skipped_optimizer_steps += int(iteration.skipped)


def check_finite_loss(module: Any, loss: Tensor) -> None:
    """Save the state and raise :class:`~lightrl.errors.NonFiniteError` if ``loss`` holds a NaN or Inf."""
    finite = math.isfinite(loss.item()) if loss.numel() == 1 else bool(torch.isfinite(loss).all())  # item(): one scalar read, no reduction
    if not finite:
        fail_nonfinite(module, f"{'NaN' if bool(torch.isnan(loss).any()) else 'Inf'} in the loss")


def clip_gradients(module: Any, optimizer: torch.optim.Optimizer, max_grad_norm: float | None) -> None:
    """Clip the gradients of each of ``optimizer``'s parameter groups to ``max_grad_norm`` (None: no clipping).

    Called from ``on_before_optimizer_step``, after the AMP scaler has unscaled the gradients, so the
    clipped norm is the true one. Each parameter group is clipped on its own, as if it had its own
    optimizer (SAC's actor and entropy coefficient). Non-finite gradients without a grad scaler (which
    skips such steps itself) save the state and raise :class:`~lightrl.errors.NonFiniteError`.
    """
    if max_grad_norm is None:
        return
    if type(module.trainer.precision_plugin) not in SELF_CLIPPING_PLUGINS:  # e.g. FSDP: the plugin's own clipping
        module.clip_gradients(optimizer, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")
        return
    for group in optimizer.param_groups:
        norm = clip_grad_norm_(group["params"], max_grad_norm)  # torch's rule; see lightrl.optim
        if not math.isfinite(norm) and grad_scaler(module) is None:  # a grad scaler skips such steps itself
            fail_nonfinite(module, f"{'NaN' if math.isnan(norm) else 'Inf'} in the gradients")
