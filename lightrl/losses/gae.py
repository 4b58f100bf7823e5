"""Generalized Advantage Estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lambda) advantages and the matching returns, for time-major ``[T, N]`` rollouts.

    ``next_values[t]`` is the value of the true successor of step ``t``: the next step's observation,
    or, where the episode ended at ``t``, its final observation. Termination cuts the bootstrap
    (``delta = r - V(s)``); truncation does not (``delta = r + gamma * V(final_obs) - V(s)``). Both
    stop the recursion, so no advantage spans a reset.

    Args:
        rewards: ``[T, N]`` rewards.
        values: ``[T, N]`` values ``V(s_t)`` under the policy that collected the data.
        next_values: ``[T, N]`` values of the successor states, as above.
        terminated: ``[T, N]`` 1 where the episode terminated at ``t`` (a real terminal state).
        truncated: ``[T, N]`` 1 where the episode was cut at ``t`` (time limit).
        gamma: Discount factor.
        gae_lambda: GAE's lambda; 1 gives Monte-Carlo returns bootstrapped at the rollout's end.

    Returns:
        ``(advantages, returns)``, each ``[T, N]``, with ``returns = advantages + values``.

    Raises:
        ValueError: if the inputs do not all have the same ``[T, N]`` shape.
    """
    shapes = {t.shape for t in (rewards, values, next_values, terminated, truncated)}
    if len(shapes) != 1 or rewards.dim() != 2:
        raise ValueError(f"gae expects five [T, N] tensors of one shape, got shapes {sorted(map(tuple, shapes))}.")
    dtype = torch.promote_types(values.dtype, torch.float32)  # float64 inputs keep float64 masks (and gamma)
    not_terminated = 1.0 - terminated.to(dtype)
    not_done = not_terminated * (1.0 - truncated.to(dtype))
    deltas = rewards + gamma * not_terminated * next_values - values
    if deltas.device.type == "cpu" and deltas.dtype in (torch.float32, torch.float64) and not deltas.requires_grad:
        # The same recursion on numpy views: numpy's per-op overhead on one row is far below torch's.
        advantages = torch.empty_like(deltas)
        delta, done, out = deltas.numpy(), not_done.to(deltas.dtype).numpy(), advantages.numpy()
        last = np.zeros_like(delta[0])
        for t in range(rewards.shape[0] - 1, -1, -1):
            last = delta[t] + gamma * gae_lambda * done[t] * last
            out[t] = last
        return advantages, advantages + values
    advantages = torch.empty_like(deltas)
    last = torch.zeros_like(deltas[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = deltas[t] + gamma * gae_lambda * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values
