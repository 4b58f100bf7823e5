"""The actor-critic network of PPO and A2C, for Discrete and Box actions, vector or image observations."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

import lightrl.nn.distributions as D
from lightrl.nn.cnn import NatureCNN
from lightrl.nn.mlp import layer_init, mlp, sequential_forward


def is_image_space(space: spaces.Space) -> bool:
    """True for channel-first uint8 image observations, as produced by the Atari preset."""
    return isinstance(space, spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


class ActorCritic(nn.Module):
    """Policy and value networks.

    Vector observations get separate actor and critic MLPs (CleanRL's ``ppo.py``); image observations get
    one Nature-CNN encoder shared by both heads (CleanRL's ``ppo_atari.py``). Box actions use a
    state-independent log standard deviation, as in CleanRL's ``ppo_continuous_action.py``.

    Args:
        observation_space: A Box of flat vectors or (C, H, W) uint8 images.
        action_space: Discrete or 1-D Box.
        hidden_sizes: Widths of the MLP hidden layers.
    """

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Space, hidden_sizes: Sequence[int] = (64, 64)):
        super().__init__()
        self.discrete = isinstance(action_space, spaces.Discrete)
        action_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        if is_image_space(observation_space):
            self.encoder: nn.Module = NatureCNN(observation_space.shape[0])
            self.actor = layer_init(nn.Linear(self.encoder.out_features, action_dim), std=0.01)
            self.critic = layer_init(nn.Linear(self.encoder.out_features, 1), std=1.0)
        else:
            obs_dim = int(np.prod(observation_space.shape))
            self.encoder = nn.Flatten()
            self.actor = mlp(obs_dim, hidden_sizes, action_dim, out_std=0.01)
            self.critic = mlp(obs_dim, hidden_sizes, 1, out_std=1.0)
        self._flat_obs = type(self.encoder) is nn.Flatten
        if not self.discrete:
            self.actor_logstd = nn.Parameter(torch.zeros(action_dim))

    def features(self, obs: Tensor) -> Tensor:
        """The encoder's output: the CNN's features for images, the flattened observations for vectors."""
        if self._flat_obs:
            return obs if obs.dim() == 2 else obs.flatten(1)
        return self.encoder(obs)

    def heads(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """The actor's output (logits or Gaussian mean) and the value ``[B]``."""
        hidden = self.features(obs)
        if self._flat_obs:  # the MLPs without nn.Module's per-layer call overhead (same ops)
            return sequential_forward(self.actor, hidden), sequential_forward(self.critic, hidden).squeeze(-1)
        return self.actor(hidden), self.critic(hidden).squeeze(-1)

    def get_value(self, obs: Tensor) -> Tensor:
        """``V(s)``, shaped ``[B]``."""
        hidden = self.features(obs)
        return (sequential_forward(self.critic, hidden) if self._flat_obs else self.critic(hidden)).squeeze(-1)

    def get_action_and_value(self, obs: Tensor, action: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sample an action (or score the given one) and return ``(action, log_prob, entropy, value)``."""
        out, value = self.heads(obs)
        if self.discrete:
            if action is None:
                action = D.categorical_sample(out)
            log_probs = out.log_softmax(-1)  # once, for both the log-probability and the entropy
            return action, D.categorical_log_prob(out, action, log_probs), D.categorical_entropy(out, log_probs), value
        if action is None:
            action = D.normal_sample(out, self.actor_logstd)
        entropy = D.normal_entropy(self.actor_logstd, out.shape[:-1])
        return action, D.normal_log_prob(out, self.actor_logstd, action), entropy, value

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What a rollout needs per step, without the entropy: ``(action, log_prob, value)``."""
        out, value = self.heads(obs)
        if self.discrete:
            action = D.categorical_sample(out)
            return action, D.categorical_log_prob(out, action), value
        action = D.normal_sample(out, self.actor_logstd)
        return action, D.normal_log_prob(out, self.actor_logstd, action), value

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """The action to take: the mode of the policy if ``deterministic``, else a sample."""
        hidden = self.features(obs)
        out = sequential_forward(self.actor, hidden) if self._flat_obs else self.actor(hidden)
        if self.discrete:
            return out.argmax(-1) if deterministic else D.categorical_sample(out)
        return out if deterministic else D.normal_sample(out, self.actor_logstd)
