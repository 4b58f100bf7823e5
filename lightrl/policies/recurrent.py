"""PPO's and A2C's policy with a recurrent core: the actions depend on the observation and on a state carried between steps.

The state is explicit: every method takes it and the stepping ones return the next state, so that whoever
acts keeps it (the rollout source per training sub-env, evaluation per evaluation sub-env, a deployment per
env). An episode starts from :meth:`RecurrentActorCriticPolicy.initial_state` (zeros); the caller zeroes a
sub-env's row where its episode ends (:func:`lightrl.nn.recurrent.reset_state`).
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.data.storage import leading_tensor
from lightrl.nn.recurrent import RecurrentActorCritic
from lightrl.policies.base import Policy


class RecurrentActorCriticPolicy(Policy):
    """Acts with a :class:`~lightrl.nn.recurrent.RecurrentActorCritic`: the mode deterministically, a sample to explore.

    :meth:`act` and :meth:`explore` without a state act as at an episode's first step (the zero state), as
    ``trainer.predict`` on a batch of first observations does.

    Args:
        agent: The recurrent actor-critic (trained by the LightningModule as ``policy.agent``).
        observation_space: The env's single observation space.
        action_space: Discrete, 1-D Box, MultiDiscrete or MultiBinary.

    Example::

        >>> agent = RecurrentActorCritic(spaces.Box(-1, 1, (4,)), spaces.Discrete(2), recurrent_size=8)
        >>> policy = RecurrentActorCriticPolicy(agent, spaces.Box(-1, 1, (4,)), spaces.Discrete(2))
        >>> actions, state = policy.act_with_state(torch.zeros(3, 4), policy.initial_state(3))
        >>> actions.shape, state.shape
        (torch.Size([3]), torch.Size([3, 1, 16]))
    """

    def __init__(self, agent: RecurrentActorCritic, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__(observation_space, action_space)
        self.agent = agent

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
        """The zero state of ``batch_size`` sub-envs, ``[batch_size, layers, state_size]``."""
        return self.agent.initial_state(batch_size, device)

    def act_with_state(self, obs: Tensor, state: Tensor, deterministic: bool = True) -> tuple[Tensor, Tensor]:
        """``(actions, next state)``: the mode clipped into the bounds if ``deterministic``, else a sample (unclipped)."""
        memory, state = self.agent.remember(self.preprocess(obs), state)
        actions = self.agent.act(memory, deterministic=deterministic)
        return (self.clip(actions) if deterministic else actions), state

    def act(self, obs: Tensor, state: Tensor | None = None) -> Tensor:
        """Deterministic actions, from ``state`` (default: the zero state of an episode's first step)."""
        return self.act_with_state(obs, self.state_or_zeros(obs, state))[0]

    def explore(self, obs: Tensor, state: Tensor | None = None) -> Tensor:
        """Sampled actions, from ``state`` (default: the zero state)."""
        return self.act_with_state(obs, self.state_or_zeros(obs, state), deterministic=False)[0]

    def explore_with_value(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """What a rollout stores per step, and the next state: ``(action, log_prob, value, next state)``."""
        memory, state = self.agent.remember(self.preprocess(obs), state)
        return (*self.agent.sample(memory), state)

    def value(self, obs: Tensor, state: Tensor) -> Tensor:
        """``V(s)`` ``[B]`` of ``obs`` seen from ``state``."""
        memory, _ = self.agent.remember(self.preprocess(obs), state)
        return self.agent.get_value(memory)

    def state_or_zeros(self, obs: Tensor | dict[str, Tensor], state: Tensor | None) -> Tensor:
        """``state``, or the zero state of as many sub-envs as ``obs`` has rows."""
        if state is not None:
            return state
        leading = leading_tensor(obs)
        return self.initial_state(leading.shape[0], leading.device)
