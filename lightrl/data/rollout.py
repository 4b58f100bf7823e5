"""Preallocated on-policy rollout storage, shaped ``[num_steps, num_envs, ...]``."""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.data.collector import StepResult
from lightrl.data.storage import Observations, action_storage, stack_obs, zeros


class RolloutBuffer:
    """One rollout of ``num_steps`` vector steps: what PPO and A2C learn from.

    Truncated episodes keep their final observation on the side (``truncated_obs``) so that the
    return is bootstrapped from it; terminated ones need none. The observations of a Dict space are a
    dict of tensors, one per key (see :mod:`lightrl.data.storage`).

    Args:
        num_steps: Vector steps per rollout.
        num_envs: Sub-envs in this process.
        observation_space: The single-env observation space.
        action_space: The single-env action space (Discrete, Box, MultiDiscrete or MultiBinary).
        device: Where the tensors live.
    """

    def __init__(self, num_steps: int, num_envs: int, observation_space: spaces.Space, action_space: spaces.Space, device="cpu"):
        self.num_steps, self.num_envs = num_steps, num_envs
        shape = (num_steps, num_envs)
        action_shape, action_dtype = action_storage(action_space)
        self.obs = zeros(shape, observation_space, device)
        self.actions = torch.zeros(shape + action_shape, dtype=action_dtype, device=device)
        self.logprobs = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.terminated = torch.zeros(shape, device=device)
        self.truncated = torch.zeros(shape, device=device)
        self.device = self.rewards.device
        self.truncated_obs: list[tuple[int, int, Observations]] = []
        self._pending: tuple[list[Tensor], ...] = tuple([] for _ in range(7))  # this rollout's steps, per field

    def add(self, t: int, obs: Observations, action: Tensor, logprob: Tensor, value: Tensor, step: StepResult) -> None:
        """Store vector step ``t``: the observation acted on, what the policy did, and what the env returned.

        Steps come in order, ``t = 0, 1, ..., num_steps - 1``. They are kept in lists and written into the
        ``[num_steps, num_envs, ...]`` tensors in one ``torch.stack`` per field at the last step (one op per
        field instead of a row assignment per field and step); read the tensors after that.

        Raises:
            ValueError: if ``t`` is not the next step of the rollout.
        """
        if t == 0:
            self.truncated_obs.clear()
            for column in self._pending:
                column.clear()
        if t != len(self._pending[0]) or t >= self.num_steps:
            raise ValueError(f"RolloutBuffer.add: expected step {len(self._pending[0])} of {self.num_steps}, got t={t}.")
        for column, x in zip(self._pending, (obs, action, logprob, value, step.rewards, step.terminated, step.truncated)):
            column.append(x)
        for i, final in step.final_obs.items():
            if step.truncated[i] and not step.terminated[i]:
                self.truncated_obs.append((t, i, final))
        if t == self.num_steps - 1:
            self._write()

    @torch.no_grad()
    def _write(self) -> None:
        for column, tensor in zip(self._pending, self._columns()):
            if isinstance(tensor, dict):  # Dict observations: key by key
                for key, part in tensor.items():
                    stack_into([obs[key] for obs in column], part)
            else:
                stack_into(column, tensor)

    def _columns(self) -> tuple[Tensor, ...]:
        return (self.obs, self.actions, self.logprobs, self.values, self.rewards, self.terminated, self.truncated)

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

    def stacked_truncated_obs(self) -> Observations:
        """The final observations of the truncated episodes, stacked in ``truncated_obs`` order."""
        return stack_obs([obs for _, _, obs in self.truncated_obs])

    def flatten(self, advantages: Tensor, returns: Tensor) -> dict[str, Tensor]:
        """The rollout as one batch of ``num_steps * num_envs`` samples, the training_step's input."""
        n = self.num_steps * self.num_envs
        return {
            "obs": flat_obs(self.obs, n),
            "actions": self.actions.reshape((n,) + self.actions.shape[2:]),
            "logprobs": self.logprobs.reshape(n),
            "values": self.values.reshape(n),
            "advantages": advantages.reshape(n),
            "returns": returns.reshape(n),
        }


def stack_into(column: list[Tensor], tensor: Tensor) -> None:
    """Write ``torch.stack(column)`` into ``tensor``."""
    if column[0].dtype == tensor.dtype and column[0].device == tensor.device:
        torch.stack(column, out=tensor)
    else:  # e.g. bool terminations, or bf16 values under autocast
        tensor.copy_(torch.stack(column))


def flat_obs(obs: Observations, n: int) -> Observations:
    """``[num_steps, num_envs, ...]`` observations as ``[n, ...]`` (key by key for a dict)."""
    if isinstance(obs, dict):
        return {key: flat_obs(value, n) for key, value in obs.items()}
    return obs.reshape((n,) + obs.shape[2:])
