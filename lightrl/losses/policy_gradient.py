"""Policy-gradient loss terms for PPO (Schulman et al. 2017) and A2C (Mnih et al. 2016), as pure functions.

Each returns its named term and diagnostics; the algorithm sums the terms with its coefficients.
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalize(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero-mean, unit-variance copy of ``x`` (advantage normalisation); a single element is only centred."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + eps)


def clipped_surrogate_loss(
    new_logprob: Tensor, old_logprob: Tensor, advantages: Tensor, clip_coef: float, diagnostics: bool = True
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate objective, negated for minimisation.

    Args:
        new_logprob: ``[B]`` log-probabilities of the actions under the current policy.
        old_logprob: ``[B]`` log-probabilities under the policy that collected them.
        advantages: ``[B]`` advantages.
        clip_coef: Clipping coefficient of the probability ratio.
        diagnostics: Compute the diagnostics; ``False`` returns an empty dict and saves nine small ops
            (PPO needs them for one minibatch per epoch only).

    Returns:
        ``(pg_loss, diagnostics)`` with ``approx_kl`` (the low-variance ``(r - 1) - log r`` estimator),
        ``old_approx_kl`` and ``clipfrac``.
    """
    if not new_logprob.shape == old_logprob.shape == advantages.shape:
        raise ValueError(
            f"clipped_surrogate_loss: shapes differ: new_logprob {tuple(new_logprob.shape)}, "
            f"old_logprob {tuple(old_logprob.shape)}, advantages {tuple(advantages.shape)}."
        )
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    if not diagnostics:
        return pg_loss, {}
    with torch.no_grad():
        stats = {
            "old_approx_kl": (-logratio).mean(),
            "approx_kl": ((ratio - 1) - logratio).mean(),
            "clipfrac": ((ratio - 1.0).abs() > clip_coef).float().mean(),
        }
    return pg_loss, stats


def value_loss(new_values: Tensor, returns: Tensor, old_values: Tensor | None = None, clip_coef: float | None = None) -> Tensor:
    """Half mean squared error to the returns; PPO's clipped form when ``old_values`` and ``clip_coef`` are given.

    The clipped form takes the larger of the plain and the clipped error, so the value function gains
    nothing by moving further than ``clip_coef`` from the values that collected the data.
    """
    if new_values.shape != returns.shape:
        raise ValueError(f"value_loss: new_values {tuple(new_values.shape)} and returns {tuple(returns.shape)} differ.")
    v_loss_unclipped = (new_values - returns) ** 2
    if old_values is None or clip_coef is None:
        return 0.5 * v_loss_unclipped.mean()
    v_clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    v_loss_clipped = (v_clipped - returns) ** 2
    return 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()


def policy_gradient_loss(logprob: Tensor, advantages: Tensor) -> Tensor:
    """The vanilla (A2C) policy-gradient loss ``-E[A * log pi(a|s)]``."""
    if logprob.shape != advantages.shape:
        raise ValueError(f"policy_gradient_loss: logprob {tuple(logprob.shape)} and advantages {tuple(advantages.shape)} differ.")
    return -(advantages * logprob).mean()


def explained_variance(values: Tensor, returns: Tensor) -> Tensor:
    """``1 - Var[returns - values] / Var[returns]``: 1 is a perfect critic, 0 no better than a constant, nan if returns are constant."""
    var_returns = returns.var()
    return 1 - (returns - values).var() / var_returns if var_returns > 0 else torch.tensor(float("nan"))
