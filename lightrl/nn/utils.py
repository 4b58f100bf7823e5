"""Helpers over networks' parameters shared by the algorithms."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients for ``module``'s parameters inside the block (gradients still flow through it).

    SAC and TD3 freeze the critics while computing the actor's loss, so its backward pass computes no
    critic gradients.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
