"""PPO's and A2C's policy: the actor-critic, whose value head the rollouts also need."""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.compile import maybe_compile
from lightrl.nn.actor_critic import ActorCritic
from lightrl.policies.base import Policy


class ActorCriticPolicy(Policy):
    """Acts with an :class:`~lightrl.nn.actor_critic.ActorCritic`: the mode deterministically, a sample to explore.

    Besides :meth:`act` and :meth:`explore`, on-policy collection uses :meth:`explore_with_value` (the action with its
    log-probability and value) and :meth:`value`. Exploration draws from the process's torch RNG.

    Args:
        agent: The actor-critic (trained by the LightningModule, which reaches it as ``policy.agent``).
        observation_space: The env's single observation space.
        action_space: Discrete, 1-D Box, MultiDiscrete or MultiBinary.

    Example::

        >>> agent = ActorCritic(spaces.Box(-1, 1, (4,)), spaces.Discrete(2))
        >>> ActorCriticPolicy(agent, spaces.Box(-1, 1, (4,)), spaces.Discrete(2)).act(torch.zeros(3, 4)).shape
        torch.Size([3])
    """

    def __init__(self, agent: ActorCritic, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__(observation_space, action_space)
        self.agent = agent

    def act(self, obs: Tensor) -> Tensor:
        """The most likely action (Discrete) or the Gaussian mean clipped into the bounds (Box)."""
        return self.clip(self.agent.act(self.preprocess(obs), deterministic=True))

    def explore(self, obs: Tensor) -> Tensor:
        """A sampled action (unclipped for Box: the collector clips it for the env)."""
        return self.agent.act(self.preprocess(obs), deterministic=False)

    def explore_with_value(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What a rollout stores per step: ``(action, log_prob, value)``."""
        return self.compiled.get("explore_with_value", self.agent.sample)(self.preprocess(obs))

    def value(self, obs: Tensor) -> Tensor:
        """``V(s)``, shaped ``[B]``."""
        return self.agent.get_value(self.preprocess(obs))

    def compile_acting(self, device: torch.device | str) -> None:
        self.compiled = {"explore_with_value": maybe_compile(self.agent.sample, True, device)}
