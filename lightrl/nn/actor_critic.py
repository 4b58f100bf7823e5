"""The actor-critic network of PPO and A2C: Discrete, Box, MultiDiscrete and MultiBinary actions; Box
(vector or image), Discrete, MultiDiscrete, MultiBinary and Dict observations."""

from __future__ import annotations

from typing import Sequence

import torch
from gymnasium import spaces
from torch import Tensor, nn

import lightrl.nn.distributions as D
from lightrl.nn.cnn import NatureCNN
from lightrl.nn.encoders import OneHot, is_image_space, observation_encoder
from lightrl.nn.mlp import ACTIVATIONS, layer_init, mlp, sequential_forward


class ActorCritic(nn.Module):
    """Policy and value networks.

    Vector observations get separate actor and critic MLPs (CleanRL's ``ppo.py``); image observations get
    one Nature-CNN encoder shared by both heads (CleanRL's ``ppo_atari.py``). Other observations go through
    an encoder shared by both (:mod:`lightrl.nn.encoders`: one-hot for Discrete and MultiDiscrete, bits as
    floats for MultiBinary, and for a Dict a CNN per image part and the others flattened, concatenated), then through separate actor and critic MLPs,
    as Stable-Baselines3's ``MultiInputPolicy`` does. Box actions use a state-independent log standard
    deviation, as in CleanRL's ``ppo_continuous_action.py``; MultiDiscrete actions a categorical per
    dimension, MultiBinary actions a Bernoulli per bit (:mod:`lightrl.nn.distributions`).

    Args:
        observation_space: A Box of flat vectors or (C, H, W) uint8 images, a Discrete, a 1-D MultiDiscrete, a
            MultiBinary, or a Dict of those.
        action_space: Discrete, 1-D Box, MultiDiscrete or MultiBinary.
        hidden_sizes: Widths of the MLP hidden layers.
        activation: The MLPs' hidden activation, ``"tanh"`` (CleanRL, SB3's PPO) or ``"relu"``.
    """

    def __init__(
        self, observation_space: spaces.Space, action_space: spaces.Space, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
    ):
        super().__init__()
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.gaussian = isinstance(action_space, spaces.Box)
        #: MultiDiscrete and MultiBinary actions' distribution; None for Discrete and Box (plain functions).
        self.distribution = D.action_distribution(action_space)
        action_dim = D.action_dim(action_space)
        encoder = observation_encoder(observation_space)
        if is_image_space(observation_space):
            self.encoder: nn.Module = NatureCNN(observation_space.shape[0], image_size=observation_space.shape[1:])
            self.actor = layer_init(nn.Linear(self.encoder.out_features, action_dim), std=0.01)
            self.critic = layer_init(nn.Linear(self.encoder.out_features, 1), std=1.0)
        else:
            self.encoder = nn.Flatten() if encoder is None else encoder
            features = int(torch.Size(observation_space.shape).numel()) if encoder is None else encoder.out_features
            self.actor = mlp(features, hidden_sizes, action_dim, ACTIVATIONS[activation], out_std=0.01)
            self.critic = mlp(features, hidden_sizes, 1, ACTIVATIONS[activation], out_std=1.0)
        self._flat_obs = type(self.encoder) is nn.Flatten
        self._mlp_heads = not isinstance(self.encoder, NatureCNN)
        #: Discrete observations: the MLPs take their indices, and their first layers look up weight columns.
        self._index_obs = type(self.encoder) is OneHot
        if self.gaussian:
            self.actor_logstd = nn.Parameter(torch.zeros(action_dim))

    def features(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """What the actor and critic take: the CNN's features for images, the flattened observations for vectors,
        the indices of Discrete observations (see :meth:`head`), the encoded (one-hot, concatenated) observations
        for the other spaces."""
        if self._flat_obs:
            return obs if obs.dim() == 2 else obs.flatten(1)
        if self._index_obs:
            return self.encoder.index(obs)
        return self.encoder(obs)

    def head(self, net: nn.Module, features: Tensor) -> Tensor:
        """``net`` (the actor or the critic) on :meth:`features`: an MLP without nn.Module's per-layer call overhead
        (the same ops), whose first layer looks up its weight's columns for Discrete observations."""
        return sequential_forward(net, features, self._index_obs) if self._mlp_heads else net(features)

    def heads(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """The actor's output (logits or Gaussian mean) and the value ``[B]``."""
        hidden = self.features(obs)
        return self.head(self.actor, hidden), self.head(self.critic, hidden).squeeze(-1)

    def get_value(self, obs: Tensor) -> Tensor:
        """``V(s)``, shaped ``[B]``."""
        return self.head(self.critic, self.features(obs)).squeeze(-1)

    def get_action_and_value(self, obs: Tensor, action: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sample an action (or score the given one) and return ``(action, log_prob, entropy, value)``."""
        out, value = self.heads(obs)
        if self.discrete:
            if action is None:
                action = D.categorical_sample(out)
            log_probs = out.log_softmax(-1)  # once, for both the log-probability and the entropy
            return action, D.categorical_log_prob(out, action, log_probs), D.categorical_entropy(out, log_probs), value
        if self.gaussian:
            if action is None:
                action = D.normal_sample(out, self.actor_logstd)
            entropy = D.normal_entropy(self.actor_logstd, out.shape[:-1])
            return action, D.normal_log_prob(out, self.actor_logstd, action), entropy, value
        if action is None:
            action = self.distribution.sample(out)
        log_prob, entropy = self.distribution.log_prob_entropy(out, action)
        return action, log_prob, entropy, value

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What a rollout needs per step, without the entropy: ``(action, log_prob, value)``."""
        out, value = self.heads(obs)
        if self.discrete:
            action = D.categorical_sample(out)
            return action, D.categorical_log_prob(out, action), value
        if self.gaussian:
            action = D.normal_sample(out, self.actor_logstd)
            return action, D.normal_log_prob(out, self.actor_logstd, action), value
        action = self.distribution.sample(out)
        return action, self.distribution.log_prob(out, action), value

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """The action to take: the mode of the policy if ``deterministic``, else a sample."""
        out = self.head(self.actor, self.features(obs))
        if self.discrete:
            return out.argmax(-1) if deterministic else D.categorical_sample(out)
        if self.gaussian:
            return out if deterministic else D.normal_sample(out, self.actor_logstd)
        return self.distribution.mode(out) if deterministic else self.distribution.sample(out)
