"""Preallocated on-policy rollout storage, shaped ``[num_steps, num_envs, ...]``."""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.data.collector import StepResult, obs_dtype


class RolloutBuffer:
    """One rollout of ``num_steps`` vector steps: what PPO and A2C learn from.

    Truncated episodes keep their final observation on the side (``truncated_obs``) so that the
    return is bootstrapped from it; terminated ones need none.

    Args:
        num_steps: Vector steps per rollout.
        num_envs: Sub-envs in this process.
        observation_space: The single-env observation space.
        action_space: The single-env action space (Discrete or Box).
        device: Where the tensors live.
    """

    def __init__(self, num_steps: int, num_envs: int, observation_space: spaces.Space, action_space: spaces.Space, device="cpu"):
        self.num_steps, self.num_envs = num_steps, num_envs
        shape = (num_steps, num_envs)
        discrete = isinstance(action_space, spaces.Discrete)
        self.obs = torch.zeros(shape + observation_space.shape, dtype=obs_dtype(observation_space), device=device)
        self.actions = torch.zeros(shape + (() if discrete else action_space.shape), dtype=torch.long if discrete else torch.float32, device=device)
        self.logprobs = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.terminated = torch.zeros(shape, device=device)
        self.truncated = torch.zeros(shape, device=device)
        self.truncated_obs: list[tuple[int, int, Tensor]] = []

    def add(self, t: int, obs: Tensor, action: Tensor, logprob: Tensor, value: Tensor, step: StepResult) -> None:
        """Store vector step ``t``: the observation acted on, what the policy did, and what the env returned."""
        if t == 0:
            self.truncated_obs.clear()
        self.obs[t] = obs
        self.actions[t] = action
        self.logprobs[t] = logprob
        self.values[t] = value
        self.rewards[t] = step.rewards
        self.terminated[t] = step.terminated
        self.truncated[t] = step.truncated
        for i, final in step.final_obs.items():
            if self.truncated[t, i] and not self.terminated[t, i]:
                self.truncated_obs.append((t, i, final))

    def next_values(self, last_value: Tensor, truncated_values: Tensor | None = None) -> Tensor:
        """Values of each step's true successor, as :func:`lightrl.losses.gae` takes them.

        Args:
            last_value: ``[N]`` value of the observation after the last step.
            truncated_values: values of ``truncated_obs``'s final observations, in that order.
        """
        next_values = torch.cat([self.values[1:], last_value.unsqueeze(0)])
        if self.truncated_obs:
            t, i = zip(*((t, i) for t, i, _ in self.truncated_obs))
            next_values[list(t), list(i)] = truncated_values.to(next_values.dtype)
        return next_values

    def stacked_truncated_obs(self) -> Tensor:
        """The final observations of the truncated episodes, stacked in ``truncated_obs`` order."""
        return torch.stack([obs for _, _, obs in self.truncated_obs])

    def flatten(self, advantages: Tensor, returns: Tensor) -> dict[str, Tensor]:
        """The rollout as one batch of ``num_steps * num_envs`` samples, the training_step's input."""
        n = self.num_steps * self.num_envs
        return {
            "obs": self.obs.reshape((n,) + self.obs.shape[2:]),
            "actions": self.actions.reshape((n,) + self.actions.shape[2:]),
            "logprobs": self.logprobs.reshape(n),
            "values": self.values.reshape(n),
            "advantages": advantages.reshape(n),
            "returns": returns.reshape(n),
        }
