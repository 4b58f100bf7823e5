"""The off-policy algorithms' policies: DQN's epsilon-greedy, SAC's squashed Gaussian, TD3's Gaussian noise."""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.compile import maybe_compile
from lightrl.data.storage import leading_tensor
from lightrl.envs.masks import MASK_KEY
from lightrl.nn.masking import MaskedQNetwork
from lightrl.nn.q_networks import DeterministicActor, QNetwork, SquashedGaussianActor
from lightrl.policies.base import ExploringPolicy


def linear_schedule(start_e: float, end_e: float, duration: int, t: int) -> float:
    """Value that goes linearly from ``start_e`` at ``t = 0`` to ``end_e`` at ``t = duration``, then stays.

    Example::

        >>> linear_schedule(1.0, 0.1, duration=10, t=5)
        0.55

    Raises:
        ValueError: if ``duration <= 0`` or ``t < 0``.
    """
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}.")
    if t < 0:
        raise ValueError(f"t must be non-negative, got {t}.")
    slope = (end_e - start_e) / duration
    value = slope * t + start_e
    return max(value, end_e) if end_e <= start_e else min(value, end_e)


class EpsilonGreedyPolicy(ExploringPolicy):
    """DQN's policy: the greedy action, or with probability epsilon a uniformly random one.

    Epsilon decays linearly from ``start_e`` to ``end_e`` over the first ``exploration_steps`` global env
    steps; each sub-env draws its own coin from the exploration generator. With a
    :class:`~lightrl.nn.masking.MaskedQNetwork` the greedy and the random actions are valid ones.

    Args:
        q_network: The online Q-network.
        observation_space: The env's single observation space.
        action_space: A Discrete space.
        start_e: Initial epsilon.
        end_e: Final epsilon.
        exploration_steps: Global env steps over which epsilon decays.
        learning_starts: Global env steps of uniformly random actions.
    """

    def __init__(
        self,
        q_network: QNetwork,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        start_e: float = 1.0,
        end_e: float = 0.05,
        exploration_steps: float = 0.0,
        learning_starts: int = 0,
    ):
        super().__init__(observation_space, action_space, learning_starts)
        self.q_network = q_network
        self.start_e, self.end_e, self.exploration_steps = start_e, end_e, exploration_steps

    def epsilon_at(self, env_steps: int) -> float:
        """Epsilon at global env step ``env_steps``."""
        if self.exploration_steps <= 0:
            return self.end_e
        return linear_schedule(self.start_e, self.end_e, self.exploration_steps, env_steps)

    def act(self, obs: Tensor) -> Tensor:
        """The greedy actions ``[B]``."""
        return self.q_network(self.preprocess(obs)).argmax(dim=1)

    def explore_after_warmup(self, obs: Tensor) -> Tensor:
        """Epsilon-greedy actions at the exploration state's env step."""
        leading = leading_tensor(obs)
        n = leading.shape[0]
        explore = torch.rand(n, generator=self.exploration.generator) < self.epsilon_at(self.exploration.env_steps)
        if bool(explore.all()):  # skip the forward pass: every sub-env acts at random
            return self.uniform_actions(obs)
        actions = self.compiled.get("q", self.q_network)(self.preprocess(obs)).argmax(dim=1)
        if bool(explore.any()):
            actions = torch.where(explore.to(actions.device), self.uniform_actions(obs), actions)
        return actions

    def uniform_actions(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """Uniformly random actions; with action masks (a :class:`~lightrl.nn.masking.MaskedQNetwork`), uniform among the valid ones."""
        if not isinstance(self.q_network, MaskedQNetwork):
            return super().uniform_actions(obs)
        mask = obs[MASK_KEY]
        # The largest of uniform draws over the valid actions is a uniformly drawn valid action.
        draws = torch.rand(mask.shape, generator=self.exploration.generator).to(mask.device)
        return torch.where(mask, draws, -1.0).argmax(dim=1)

    def compile_acting(self, device: torch.device | str) -> None:
        self.compiled = {"q": maybe_compile(self.q_network, True, device)}


class SquashedGaussianPolicy(ExploringPolicy):
    """SAC's policy: the squashed mean deterministically, a squashed Gaussian sample to explore.

    Exploration samples from the process's torch RNG (after the warm-up, whose uniform actions come from the
    exploration generator).

    Args:
        actor: SAC's actor.
        observation_space: The env's single observation space.
        action_space: A bounded 1-D Box.
        learning_starts: Global env steps of uniformly random actions.
    """

    def __init__(self, actor: SquashedGaussianActor, observation_space: spaces.Space, action_space: spaces.Box, learning_starts: int = 0):
        super().__init__(observation_space, action_space, learning_starts)
        self.actor = actor

    def act(self, obs: Tensor) -> Tensor:
        """``tanh(mean)`` scaled into the bounds."""
        return self.clip(self.actor.act(self.preprocess(obs), deterministic=True).float())

    def explore_after_warmup(self, obs: Tensor) -> Tensor:
        """A sample of the squashed Gaussian, in the bounds."""
        return self.compiled.get("act", self.actor.act)(self.preprocess(obs)).float()

    def compile_acting(self, device: torch.device | str) -> None:
        self.compiled = {"act": maybe_compile(self.actor.act, True, device)}


class GaussianNoisePolicy(ExploringPolicy):
    """TD3's policy: the deterministic actor, plus Gaussian noise to explore (Fujimoto et al. 2018).

    Args:
        actor: TD3's actor.
        observation_space: The env's single observation space.
        action_space: A bounded 1-D Box.
        exploration_noise: Standard deviation of the noise, relative to the action scale ``(high - low) / 2``.
        learning_starts: Global env steps of uniformly random actions.
    """

    def __init__(self, actor: DeterministicActor, observation_space: spaces.Space, action_space: spaces.Box,
                 exploration_noise: float = 0.1, learning_starts: int = 0):  # fmt: skip
        super().__init__(observation_space, action_space, learning_starts)
        self.actor = actor
        self.exploration_noise = exploration_noise

    def act(self, obs: Tensor) -> Tensor:
        """The actor's action, in the bounds."""
        return self.clip(self.actor(self.preprocess(obs)).float())

    def explore_after_warmup(self, obs: Tensor) -> Tensor:
        """The actor's action plus noise from the exploration generator, clipped into the bounds."""
        actions = self.compiled.get("actor", self.actor)(self.preprocess(obs)).float()
        scale, bias = self.actor.action_scale, self.actor.action_bias
        noise = torch.randn(actions.shape, generator=self.exploration.generator).to(actions.device)
        return torch.clamp(actions + noise * (scale * self.exploration_noise), bias - scale, bias + scale)

    def compile_acting(self, device: torch.device | str) -> None:
        self.compiled = {"actor": maybe_compile(self.actor, True, device)}
