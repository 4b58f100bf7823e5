"""Action distributions as plain tensor functions: torch.distributions' values, without a distribution object per call.

Discrete (categorical) and Box (diagonal Gaussian) actions use the functions; MultiDiscrete and MultiBinary
actions the small :class:`MultiCategorical` and :class:`Bernoulli` objects, which :func:`action_distribution`
picks by the action space.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
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


class MultiCategorical:
    """Independent categorical distributions, one per dimension of a MultiDiscrete action (Stable-Baselines3's).

    The logits of all dimensions come concatenated, ``[B, sum(nvec)]``; actions are ``[B, len(nvec)]`` integers.
    Log-probabilities and entropies are summed over the dimensions.

    Args:
        nvec: The number of values of each dimension.

    Example::

        >>> dist = MultiCategorical([2, 3])
        >>> dist.log_prob(torch.zeros(1, 5), torch.tensor([[1, 2]]))  # log(1/2) + log(1/3)
        tensor([-1.7918])
    """

    def __init__(self, nvec: list[int]):
        self.nvec = [int(n) for n in nvec]

    def sample(self, logits: Tensor) -> Tensor:
        """One action per row, each dimension by the Gumbel-max trick."""
        return torch.stack([categorical_sample(part) for part in logits.split(self.nvec, dim=-1)], dim=-1)

    def mode(self, logits: Tensor) -> Tensor:
        """The most likely value of each dimension."""
        return torch.stack([part.argmax(-1) for part in logits.split(self.nvec, dim=-1)], dim=-1)

    def log_prob_entropy(self, logits: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(log pi(a|s), entropy)``, each ``[B]``, from one ``log_softmax`` per dimension."""
        log_prob = entropy = 0
        for i, part in enumerate(logits.split(self.nvec, dim=-1)):
            log_p = part.log_softmax(-1)
            log_prob = log_prob + categorical_log_prob(part, actions[..., i], log_p)
            entropy = entropy + categorical_entropy(part, log_p)
        return log_prob, entropy

    def log_prob(self, logits: Tensor, actions: Tensor) -> Tensor:
        """``log pi(a|s)`` summed over the dimensions, ``[B]``."""
        return self.log_prob_entropy(logits, actions)[0]


class Bernoulli:
    """Independent Bernoulli distributions, one per dimension of a MultiBinary action.

    Logits ``[B, n]``; actions ``[B, n]`` of 0.0 and 1.0 (float, as the rollout stores them; the collector
    gives the env int8). Log-probabilities and entropies are summed over the dimensions.

    Example::

        >>> Bernoulli().log_prob(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 1.0]]))  # 3 * log(1/2)
        tensor([-2.0794])
    """

    def sample(self, logits: Tensor) -> Tensor:
        """One action per row: each dimension 1 with probability ``sigmoid(logit)``."""
        return (torch.rand_like(logits) < torch.sigmoid(logits)).to(logits.dtype)

    def mode(self, logits: Tensor) -> Tensor:
        """1 where the probability is above one half."""
        return (logits > 0).to(logits.dtype)

    def log_prob_entropy(self, logits: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(log pi(a|s), entropy)``, each ``[B]``.

        ``log p(a) = a * l - softplus(l)`` and the entropy is ``softplus(l) - sigmoid(l) * l`` for a logit ``l``.
        """
        softplus = F.softplus(logits)
        log_prob = (actions * logits - softplus).sum(-1)
        entropy = (softplus - torch.sigmoid(logits) * logits).sum(-1)
        return log_prob, entropy

    def log_prob(self, logits: Tensor, actions: Tensor) -> Tensor:
        """``log pi(a|s)`` summed over the dimensions, ``[B]``."""
        return self.log_prob_entropy(logits, actions)[0]


def action_distribution(space: spaces.Space) -> MultiCategorical | Bernoulli | None:
    """The distribution object of a MultiDiscrete or MultiBinary action space; None for Discrete and Box,
    whose distributions are the plain functions above (the actor-critic calls them directly)."""
    if isinstance(space, spaces.MultiDiscrete):
        return MultiCategorical(space.nvec.reshape(-1).tolist())
    if isinstance(space, spaces.MultiBinary):
        return Bernoulli()
    return None


def action_dim(space: spaces.Space) -> int:
    """Outputs of the actor for ``space``: logits per value (Discrete, MultiDiscrete), per bit (MultiBinary),
    or Gaussian means (Box)."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec.sum())
    return int(np.prod(space.shape))
