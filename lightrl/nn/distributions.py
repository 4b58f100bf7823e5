"""Action distributions as plain tensor functions: torch.distributions' values, without a distribution object per call."""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def categorical_sample(logits: Tensor) -> Tensor:
    """Sample one action per row by the Gumbel-max trick."""
    return (logits - torch.empty_like(logits).exponential_().log()).argmax(-1)


def categorical_log_prob(logits: Tensor, actions: Tensor, log_probs: Tensor | None = None) -> Tensor:
    """``log pi(a|s)`` for integer ``actions``; pass ``log_probs = logits.log_softmax(-1)`` if already computed."""
    log_probs = logits.log_softmax(-1) if log_probs is None else log_probs
    return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def categorical_entropy(logits: Tensor, log_probs: Tensor | None = None) -> Tensor:
    """Entropy of each row's categorical distribution; ``log_probs`` as in :func:`categorical_log_prob`."""
    log_p = logits.log_softmax(-1) if log_probs is None else log_probs
    return -(log_p.exp() * log_p).sum(-1)


def normal_sample(mean: Tensor, log_std: Tensor) -> Tensor:
    """Sample from a diagonal Gaussian."""
    return mean + log_std.exp() * torch.randn_like(mean)


def normal_log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """Log-density of ``actions`` under a diagonal Gaussian, summed over action dimensions."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)


def normal_entropy(log_std: Tensor, batch_shape: torch.Size) -> Tensor:
    """Entropy of a diagonal Gaussian, summed over action dimensions, broadcast to ``batch_shape``."""
    return (0.5 + _LOG_SQRT_2PI + log_std).sum(-1).expand(batch_shape)
