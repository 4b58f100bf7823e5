"""The one place where lightrl touches private torch and Lightning interfaces, each behind a version check and a public fallback.

Everything else in lightrl uses public torch and Lightning interfaces only
(``python shared/tools/private_apis.py lightrl`` counts the exceptions outside this module: 0).
What is here, and why:

- :class:`FusedAdam`: ``torch.optim.Adam(fused=True)`` whose ``step()`` calls the fused kernel directly.
  It keeps a measured share of a DQN gradient step (docs/benchmarks.md, "Private fast paths"). Used
  only on the torch versions in :data:`FUSED_ADAM_TORCH_VERSIONS`, where CI checks it bit for bit
  against ``torch.optim.Adam``; on any other version :func:`fused_adam` returns that public optimizer.
- :func:`local_checkpoint`: Lightning's checkpoint of one DDP rank, without the barrier of
  ``Trainer.save_checkpoint``, for the non-finite guard, which fires on one rank while the others run
  on. Lightning has no public way to build a checkpoint without that collective; on Lightning versions
  outside :data:`LOCAL_CHECKPOINT_LIGHTNING_VERSIONS` it returns None and the guard says so.
- :func:`compiler_unavailable_reason` and :func:`is_compiler_error`: torch has no public way to ask
  whether TorchDynamo supports this Python, nor a public base class of its errors.
- :class:`CkptPathHook`: LightningCLI reads ``--ckpt_path`` in its private ``_parse_ckpt_path`` (it loads
  the checkpoint's hyperparameters over the command line's), between parsing and instantiating, and has
  no public hook there. The mixin routes that call to a public :meth:`CkptPathHook.parse_ckpt_path`,
  which lightrl's CLI implements; checked on :data:`CLI_CKPT_PATH_LIGHTNING_VERSIONS` (a test fails on
  a Lightning that no longer makes the call).

To upgrade torch or Lightning: run ``pytest tests/test_compat.py tests/test_optim.py tests/test_run_safety.py``
on the new version, then widen the version range (or leave it: the fallbacks are correct, just slower or
without the one-rank checkpoint).
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
from packaging.version import Version
from torch.optim import optimizer as torch_optimizer

#: ``[lowest, highest)`` torch versions whose private Adam kernel and hooks :class:`FusedAdam` was checked on.
FUSED_ADAM_TORCH_VERSIONS = ("2.13", "2.14")
#: ``[lowest, highest)`` Lightning versions whose checkpoint connector :func:`local_checkpoint` was checked on.
LOCAL_CHECKPOINT_LIGHTNING_VERSIONS = ("2.6", "2.7")
#: ``[lowest, highest)`` Lightning versions whose ``LightningCLI.__init__`` calls ``_parse_ckpt_path()``, see :class:`CkptPathHook`.
CLI_CKPT_PATH_LIGHTNING_VERSIONS = ("2.6", "2.7")


def _in(version: str, versions: tuple[str, str]) -> bool:
    lowest, highest = versions
    return Version(lowest) <= Version(version) < Version(highest)


def _torch_in(versions: tuple[str, str]) -> bool:
    return _in(torch.__version__, versions)


def fused_adam_fast_path() -> bool:
    """Whether this torch is one :class:`FusedAdam`'s direct kernel call was checked on."""
    return _torch_in(FUSED_ADAM_TORCH_VERSIONS) and hasattr(torch, "_fused_adam_")


def _profiling() -> bool:
    return torch._C._autograd._profiler_enabled()


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` whose ``step()`` goes straight to the fused kernel.

    The update, the state and the ``state_dict`` are those of ``torch.optim.Adam``: once every parameter
    has a gradient and a state, ``step()`` makes the two calls that ``torch.optim.Adam`` ends in (the
    step-count increment and the fused kernel) without the per-step grouping and checks around them.
    The first step, a parameter without a gradient, a grad scaler's ``grad_scale``/``found_inf``, options
    the shortcut does not cover (``amsgrad``, ``maximize``, ``decoupled_weight_decay``, a tensor ``lr``)
    and mixed devices or dtypes take ``torch.optim.Adam.step`` as usual.

    ``step()`` and ``zero_grad()`` enter torch's profiler ranges and run the step hooks only when a
    profiler is running or a hook is registered, so that a plain step pays for neither.

    Build it through :func:`fused_adam`, which falls back to ``torch.optim.Adam(fused=True)`` on torch
    versions it was not checked on.
    """

    def __init__(self, params: Any, lr: float = 1e-3, **kwargs: Any):
        super().__init__(params, lr=lr, fused=True, **kwargs)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if (
            _profiling()
            or self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or torch_optimizer._global_optimizer_pre_hooks
            or torch_optimizer._global_optimizer_post_hooks
        ):
            return _HOOKED_STEP(self, closure)
        return self._step(closure)

    step.hooked = True  # torch wraps the step of each Optimizer class in its hook runner unless it is marked

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none or _profiling():
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()  # Lightning's closure runs on_before_optimizer_step (clipping) here
        groups = self._fused_groups()
        if groups is None:
            _ADAM_STEP(self)
            return loss
        with torch.no_grad():
            for group, (params, grads, exp_avgs, exp_avg_sqs, steps) in zip(self.param_groups, groups):
                beta1, beta2 = group["betas"]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(
                    params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                    beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                )  # fmt: skip
        return loss

    def _fused_groups(self) -> list[tuple[list, ...]] | None:
        """Per group ``(params, grads, exp_avgs, exp_avg_sqs, steps)``, or None where the shortcut does not apply."""
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            return None
        groups = []
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"] or group.get("decoupled_weight_decay") or isinstance(group["lr"], torch.Tensor):
                return None
            params = group["params"]
            grads = [p.grad for p in params]
            states = [self.state.get(p) for p in params]
            if not params or not all(states) or any(g is None or g.is_sparse for g in grads):
                return None
            first = params[0]
            if any(p.device != first.device or p.dtype != first.dtype for p in params):
                return None
            groups.append((params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [s["step"] for s in states]))
        return groups


# Adam's own step, without the hook-running wrapper that torch adds per Optimizer class (FusedAdam.step runs the hooks itself).
_ADAM_STEP = getattr(torch.optim.Adam.step, "__wrapped__", torch.optim.Adam.step)
_HOOKED_STEP = torch.optim.Optimizer.profile_hook_step(FusedAdam._step)


def fused_adam(params: Any, lr: float, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel: :class:`FusedAdam` where checked (:func:`fused_adam_fast_path`), else torch's.

    Both compute the same update, bit for bit, and have the same ``state_dict``.
    """
    if fused_adam_fast_path():
        return FusedAdam(params, lr=lr, **kwargs)
    return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)


def local_checkpoint(trainer: L.Trainer) -> dict[str, Any] | None:
    """What ``trainer.save_checkpoint`` would write, built on this rank alone; None where not available.

    The module's ``on_save_checkpoint`` runs as usual, so it must not start a collective either.
    """
    connector = getattr(trainer, "_checkpoint_connector", None)
    if connector is None or not _in(L.__version__, LOCAL_CHECKPOINT_LIGHTNING_VERSIONS):
        return None
    return connector.dump_checkpoint(weights_only=False)


def compiler_unavailable_reason() -> str | None:
    """Why TorchDynamo (``torch.compile``'s frontend) cannot run in this process, or None if it can."""
    try:
        import torch._dynamo
    except Exception as err:  # noqa: BLE001 - whatever stops the import, there is no compiler
        return f"torch._dynamo cannot be imported ({type(err).__name__}: {err})"
    if not torch._dynamo.is_dynamo_supported():
        return "torch._dynamo does not support this Python version"
    return None


def is_compiler_error(err: BaseException) -> bool:
    """Whether ``err`` was raised by the compiler (TorchDynamo or a backend), not by the compiled function."""
    import torch._dynamo

    base = getattr(getattr(torch._dynamo, "exc", None), "TorchDynamoException", None)
    return base is not None and isinstance(err, base)


class CkptPathHook:
    """Mixin for a ``LightningCLI`` subclass: its :meth:`parse_ckpt_path` replaces LightningCLI's reading of ``--ckpt_path``.

    LightningCLI calls the private ``_parse_ckpt_path()`` after parsing the arguments and before it
    instantiates the classes; this mixin's version calls :meth:`parse_ckpt_path` instead.
    """

    def parse_ckpt_path(self) -> None:
        """Read ``--ckpt_path`` from ``self.config`` (override this)."""

    def _parse_ckpt_path(self) -> None:
        self.parse_ckpt_path()
