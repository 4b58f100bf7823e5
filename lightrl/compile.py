"""``compile=True``: ``torch.compile`` of the policy networks and the loss functions, with an eager fallback.

The LightningModule itself is never compiled (Lightning's hooks and logging would break the graphs).
On CUDA the functions are compiled with ``mode="reduce-overhead"``, which replays them as CUDA graphs:
their outputs are cloned, because a CUDA graph overwrites its output buffers at the next replay. Where
``torch.compile`` cannot work (no ``torch._dynamo`` for this Python, or no C++ compiler for TorchInductor's
CPU kernels), or when compiling a function fails, lightrl warns once and runs that function eagerly.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Any, Callable

import torch
from torch import Tensor

from lightrl.compat import compiler_unavailable_reason, is_compiler_error

_warned = False


def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` in this process, or None if it can."""
    reason = compiler_unavailable_reason()
    if reason is not None:
        return reason
    if device.type == "cpu":
        compilers = (os.environ.get("CXX"), "g++", "c++", "clang++")
        if not any(shutil.which(c) for c in compilers if c):
            return "TorchInductor needs a C++ compiler for CPU kernels and none was found (set CXX or install g++)"
    return None


def warn_eager(reason: str) -> None:
    """Warn, once per process, that ``compile=True`` runs eagerly, and why."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"compile=True: torch.compile is unavailable here ({reason}); running eagerly.", RuntimeWarning, stacklevel=3)


def clone_tensors(out: Any) -> Any:
    """``out`` with every tensor in it cloned, through tuples, named tuples, lists and dicts."""
    if isinstance(out, Tensor):
        return out.clone()
    if isinstance(out, tuple):
        items = [clone_tensors(x) for x in out]
        return tuple(items) if type(out) is tuple else type(out)(*items)  # a named tuple keeps its type
    if isinstance(out, list):
        return [clone_tensors(x) for x in out]
    if isinstance(out, dict):
        return {key: clone_tensors(value) for key, value in out.items()}
    return out


class CompiledFunction:
    """``fn`` compiled on first use, falling back to ``fn`` itself (with a warning) if compiling fails.

    Args:
        fn: A function of tensors: a network's forward or a loss.
        device: Where it runs: ``"reduce-overhead"`` (CUDA graphs) on CUDA, the default mode elsewhere.
    """

    def __init__(self, fn: Callable[..., Any], device: torch.device):
        self.fn = fn
        self.cuda_graphs = device.type == "cuda"
        self.compiled: Callable[..., Any] | None = torch.compile(fn, mode="reduce-overhead" if self.cuda_graphs else None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.fn(*args, **kwargs)
        try:
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
                out = self.compiled(*args, **kwargs)
                return clone_tensors(out)
            return self.compiled(*args, **kwargs)
        except Exception as err:
            if not is_compiler_error(err):
                raise  # an error of the function itself, not of the compiler
            self.compiled = None  # a compiler failure: run this function eagerly from now on
            warn_eager(f"compiling {getattr(self.fn, '__qualname__', self.fn)} failed: {type(err).__name__}: {err}")
            return self.fn(*args, **kwargs)


def maybe_compile(fn: Callable[..., Any], enabled: bool, device: torch.device | str) -> Callable[..., Any]:
    """``fn`` compiled with :class:`CompiledFunction` if ``enabled`` and torch.compile works here, else ``fn``.

    Example::

        self.sample = maybe_compile(self.policy.agent.sample, self.hparams.compile, self.device)
    """
    if not enabled:
        return fn
    device = torch.device(device)
    reason = compile_unavailable_reason(device)
    if reason is not None:
        warn_eager(reason)
        return fn
    return CompiledFunction(fn, device)
