"""Targets and losses of the Q-learning family (DQN, SAC, TD3) as pure functions."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

DQN_LOSSES = ("huber", "mse")


def _flat(x: Tensor, name: str, batch: int) -> Tensor:
    """``x`` as a ``[batch]`` vector; ``[batch, 1]`` (a critic's output) is accepted too."""
    if x.dim() == 2 and x.shape[1] == 1:
        x = x.squeeze(1)
    if tuple(x.shape) != (batch,):
        raise ValueError(f"{name} must have shape [{batch}] or [{batch}, 1], got {tuple(x.shape)}.")
    return x


def _batch(x: Tensor, name: str) -> int:
    if x.dim() not in (1, 2):
        raise ValueError(f"{name} must have shape [B] or [B, 1], got {tuple(x.shape)}.")
    return x.shape[0]


def _discount(gamma: float | Tensor, batch: int) -> float | Tensor:
    return _flat(gamma, "gamma", batch) if isinstance(gamma, Tensor) and gamma.dim() > 0 else gamma


def _detached(x: float | Tensor) -> float | Tensor:
    return x.detach() if isinstance(x, Tensor) else x


def td_target(rewards: Tensor, next_q: Tensor, terminations: Tensor, gamma: float | Tensor) -> Tensor:
    """One-step (or n-step) TD target ``rewards + gamma * (1 - terminations) * next_q``.

    Args:
        rewards: ``[B]`` rewards (or n-step discounted sums).
        next_q: ``[B]`` (or ``[B, 1]``) value of the next observations.
        terminations: ``[B]`` 1 where the episode terminated: no bootstrap. Truncations must be 0 here.
        gamma: Discount factor, or ``[B]`` per-sample discounts (``ReplayBuffer.sample(...)["discounts"]``).

    Raises:
        ValueError: if the shapes do not match.
    """
    batch = _batch(rewards, "rewards")
    rewards = _flat(rewards, "rewards", batch)
    next_q = _flat(next_q, "next_q", batch)
    terminations = _flat(terminations, "terminations", batch)
    return rewards + _discount(gamma, batch) * (1.0 - terminations.float()) * next_q


def dqn_target(
    next_q_target: Tensor,
    rewards: Tensor,
    terminations: Tensor,
    gamma: float | Tensor,
    next_q_online: Tensor | None = None,
) -> Tensor:
    """DQN target: the target network's max Q, or Double DQN's when ``next_q_online`` is given.

    Double DQN (van Hasselt et al., 2016) picks the next action with the online network and evaluates
    it with the target network, which removes max-operator overestimation.

    Args:
        next_q_target: ``[B, A]`` target-network Q-values of the next observations.
        rewards: ``[B]`` rewards.
        terminations: ``[B]`` 1 where the episode terminated.
        gamma: Discount factor, or ``[B]`` per-sample discounts.
        next_q_online: ``[B, A]`` online-network Q-values of the next observations, for Double DQN.

    Raises:
        ValueError: if the shapes do not match.
    """
    if next_q_target.dim() != 2:
        raise ValueError(f"next_q_target must have shape [B, num_actions], got {tuple(next_q_target.shape)}.")
    if next_q_online is None:
        next_q = next_q_target.max(dim=1).values
    else:
        if next_q_online.shape != next_q_target.shape:
            raise ValueError(
                f"next_q_online {tuple(next_q_online.shape)} and next_q_target {tuple(next_q_target.shape)} "
                "must have the same shape."
            )
        next_actions = next_q_online.argmax(dim=1, keepdim=True)
        next_q = next_q_target.gather(1, next_actions).squeeze(1)
    return td_target(rewards, next_q, terminations, gamma)


def dqn_loss(q_taken: Tensor, target: Tensor, loss: str = "huber") -> tuple[Tensor, dict[str, Tensor]]:
    """Regression of the Q-values of the taken actions on their TD targets.

    Args:
        q_taken: ``[B]`` online Q-values of the actions in the batch.
        target: ``[B]`` TD targets; gradients never flow through them (they are detached).
        loss: ``"huber"`` (smooth L1 with delta 1, as in the Nature DQN) or ``"mse"`` (CleanRL's default).

    Returns:
        The loss, and diagnostics ``{"q_values": mean Q, "td_error": mean |Q - target|}`` (detached).

    Raises:
        ValueError: on an unknown ``loss`` or if the shapes differ.
    """
    if loss not in DQN_LOSSES:
        raise ValueError(f"loss must be one of {DQN_LOSSES}, got {loss!r}.")
    if q_taken.shape != target.shape:
        raise ValueError(
            f"q_taken {tuple(q_taken.shape)} and target {tuple(target.shape)} must have the same shape; "
            "gather the Q-value of the taken action first, e.g. q.gather(1, actions[:, None]).squeeze(1)."
        )
    target = target.detach()
    value = F.smooth_l1_loss(q_taken, target) if loss == "huber" else F.mse_loss(q_taken, target)
    diagnostics = {
        "q_values": q_taken.detach().mean(),
        "td_error": (q_taken.detach() - target).abs().mean(),
    }
    return value, diagnostics


def polyak_update(target_params: Iterable[Tensor], online_params: Iterable[Tensor], tau: float) -> None:
    """In place, ``target = (1 - tau) * target + tau * online``; ``tau = 1`` copies the online parameters.

    Args:
        target_params: Parameters (or buffers) of the target network, e.g. ``target.parameters()``.
        online_params: The matching parameters of the online network, in the same order.
        tau: Interpolation factor in ``[0, 1]``.

    Raises:
        ValueError: if ``tau`` is outside ``[0, 1]`` or the two lists differ in length.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}.")
    target_params, online_params = list(target_params), list(online_params)
    if len(target_params) != len(online_params):
        raise ValueError(
            f"target_params ({len(target_params)}) and online_params ({len(online_params)}) must have the "
            "same length; pass the parameters of two networks with the same architecture."
        )
    if not target_params:
        return
    with torch.no_grad():
        for target, online in zip(target_params, online_params):
            if tau == 1.0:
                target.copy_(online)
            else:
                target.lerp_(online, tau)


def sac_critic_target(
    next_q1: Tensor,
    next_q2: Tensor,
    next_log_pi: Tensor,
    rewards: Tensor,
    terminations: Tensor,
    gamma: float | Tensor,
    alpha: float | Tensor,
) -> Tensor:
    """SAC soft target ``r + gamma * (1 - d) * (min(Q1', Q2') - alpha * log_pi(a'|s'))``.

    Args:
        next_q1: ``[B]`` (or ``[B, 1]``) first target critic at the next observations and sampled actions.
        next_q2: The second target critic.
        next_log_pi: Log-probabilities of the sampled next actions.
        rewards: ``[B]`` rewards.
        terminations: ``[B]`` 1 where the episode terminated.
        gamma: Discount factor, or ``[B]`` per-sample discounts.
        alpha: Entropy coefficient (a tensor is detached).

    Raises:
        ValueError: if the shapes do not match.
    """
    batch = _batch(rewards, "rewards")
    min_q = torch.min(_flat(next_q1, "next_q1", batch), _flat(next_q2, "next_q2", batch))
    soft_value = min_q - _detached(alpha) * _flat(next_log_pi, "next_log_pi", batch)
    return td_target(rewards, soft_value, terminations, gamma)


def sac_actor_loss(q1_pi: Tensor, q2_pi: Tensor, log_pi: Tensor, alpha: float | Tensor) -> Tensor:
    """SAC policy loss ``mean(alpha * log_pi - min(Q1, Q2))`` at actions sampled from the current policy.

    Raises:
        ValueError: if the shapes do not match.
    """
    batch = _batch(log_pi, "log_pi")
    min_q = torch.min(_flat(q1_pi, "q1_pi", batch), _flat(q2_pi, "q2_pi", batch))
    return (_detached(alpha) * _flat(log_pi, "log_pi", batch) - min_q).mean()


def sac_alpha_loss(log_alpha: Tensor, log_pi: Tensor, target_entropy: float) -> Tensor:
    """Entropy-coefficient loss ``mean(-exp(log_alpha) * (log_pi + target_entropy))`` (CleanRL's form).

    ``log_pi`` is detached: this loss only trains ``log_alpha``.
    """
    return (-log_alpha.exp() * (log_pi + target_entropy).detach()).mean()


def twin_q_loss(qf1_a_values: Tensor, qf2_a_values: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Both critics regressed on one target (SAC, TD3): ``(qf1_loss + qf2_loss, qf1_loss, qf2_loss, qf1_values, qf2_values)``.

    The values are cast to fp32 first, so that the loss is in full precision under autocast.
    """
    qf1_a_values, qf2_a_values = qf1_a_values.float(), qf2_a_values.float()
    qf1_loss = F.mse_loss(qf1_a_values, target)
    qf2_loss = F.mse_loss(qf2_a_values, target)
    return qf1_loss + qf2_loss, qf1_loss, qf2_loss, qf1_a_values, qf2_a_values


def td3_target(
    next_q1: Tensor, next_q2: Tensor, rewards: Tensor, terminations: Tensor, gamma: float | Tensor
) -> Tensor:
    """TD3 clipped double-Q target ``r + gamma * (1 - d) * min(Q1', Q2')`` (Fujimoto et al., 2018).

    Raises:
        ValueError: if the shapes do not match.
    """
    batch = _batch(rewards, "rewards")
    min_q = torch.min(_flat(next_q1, "next_q1", batch), _flat(next_q2, "next_q2", batch))
    return td_target(rewards, min_q, terminations, gamma)


def smoothed_target_action(
    target_actions: Tensor,
    policy_noise: float,
    noise_clip: float,
    low: float | Tensor,
    high: float | Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TD3 target policy smoothing: add clipped Gaussian noise to the target actor's actions, then clamp.

    As in CleanRL, the noise ``clip(N(0, policy_noise), -noise_clip, noise_clip)`` is expressed in units of
    the action scale ``(high - low) / 2``, so ``policy_noise`` and ``noise_clip`` work for any action range.

    Args:
        target_actions: ``[B, action_dim]`` actions of the target actor at the next observations.
        policy_noise: Standard deviation of the noise, relative to the action scale.
        noise_clip: Bound on the absolute noise, relative to the action scale.
        low: Lower action bound(s), a float or ``[action_dim]``.
        high: Upper action bound(s), a float or ``[action_dim]``.
        generator: Random generator for reproducible noise.
    """
    low = torch.as_tensor(low, dtype=target_actions.dtype, device=target_actions.device)
    high = torch.as_tensor(high, dtype=target_actions.dtype, device=target_actions.device)
    noise = torch.randn(
        target_actions.shape, generator=generator, dtype=target_actions.dtype, device=target_actions.device
    )
    clipped_noise = (noise * policy_noise).clamp(-noise_clip, noise_clip) * (high - low) / 2.0
    return torch.clamp(target_actions + clipped_noise, low, high)
