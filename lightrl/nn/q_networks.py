"""Networks of the Q-learning family: DQN's Q-network, SAC's squashed-Gaussian actor, TD3's actor, twin critics.

Layers keep PyTorch's default initialisation, as in CleanRL's ``dqn.py``, ``sac_continuous_action.py`` and
``td3_continuous_action.py`` and in Stable-Baselines3 (only the Nature-CNN uses orthogonal weights).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from lightrl.nn.cnn import NatureCNN
from lightrl.nn.encoders import is_image_space, observation_encoder
from lightrl.nn.mlp import input_major, sequential_forward

#: Bounds of the SAC actor's log standard deviation (CleanRL's ``LOG_STD_MIN``/``LOG_STD_MAX``).
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def dense(in_features: int, hidden_sizes: Sequence[int], out_features: int | None = None) -> nn.Sequential:
    """``Linear``-``ReLU`` layers ``in -> hidden_sizes (-> out)`` with PyTorch's default initialisation."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden_sizes:
        layers += [input_major(nn.Linear(width, size)), nn.ReLU()]
        width = size
    if out_features is not None:
        layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def action_bounds(action_space: spaces.Box) -> tuple[Tensor, Tensor]:
    """``(scale, bias)`` that map ``[-1, 1]`` onto the bounds of ``action_space``.

    Raises:
        ValueError: if a bound is infinite (a tanh-squashed policy needs a bounded action space).
    """
    low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(
            f"The action space {action_space} has infinite bounds; SAC and TD3 squash actions into [low, high]. "
            "Wrap the env with gymnasium.wrappers.ClipAction or RescaleAction to give it finite bounds."
        )
    scale = torch.tensor((high - low) / 2.0, dtype=torch.float32)
    bias = torch.tensor((high + low) / 2.0, dtype=torch.float32)
    return scale, bias


def flat_features(obs: Tensor | dict[str, Tensor], encoder: nn.Module | None) -> Tensor:
    """The float32 vectors the MLPs of SAC and TD3 take: flat Box observations as they are, others encoded."""
    return obs.flatten(1).float() if encoder is None else encoder(obs)


class QNetwork(nn.Module):
    """Q-values of every discrete action, with an optional dueling head (Wang et al. 2016).

    Vector observations go through ``Linear``-``ReLU`` layers of widths ``hidden_sizes``. Image observations
    (``(C, H, W)`` uint8) go through the Nature-CNN (Mnih et al. 2015), whose linear layer has
    ``hidden_sizes[0]`` units (512 in the paper); any further ``hidden_sizes`` follow it. Other
    observations are encoded first (:func:`lightrl.nn.encoders.observation_encoder`), then go through the
    ``hidden_sizes`` layers.

    Args:
        observation_space: A Box of flat vectors or ``(C, H, W)`` uint8 images, a Discrete, a 1-D MultiDiscrete,
            a MultiBinary, or a Dict of those.
        action_space: A Discrete space.
        hidden_sizes: Widths of the fully connected hidden layers.
        dueling: Split the head into a state value and action advantages, ``Q = V + A - mean(A)``.

    Example::

        >>> q = QNetwork(spaces.Box(-1, 1, (4,)), spaces.Discrete(2), (64, 64), dueling=True)
        >>> q(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        hidden_sizes: Sequence[int] = (120, 84),
        dueling: bool = False,
    ):
        super().__init__()
        num_actions = int(action_space.n)
        encoder = observation_encoder(observation_space)
        if is_image_space(observation_space):
            cnn = NatureCNN(observation_space.shape[0], features_dim=hidden_sizes[0], image_size=observation_space.shape[1:])
            self.encoder: nn.Module = nn.Sequential(cnn, dense(hidden_sizes[0], hidden_sizes[1:]))
        elif encoder is not None:
            self.encoder = nn.Sequential(encoder, dense(encoder.out_features, hidden_sizes))
        else:
            self.encoder = dense(int(np.prod(observation_space.shape)), hidden_sizes)
        width = hidden_sizes[-1]
        self.dueling = dueling
        self.head = nn.Linear(width, num_actions)  # the advantages when dueling
        self.value_head = nn.Linear(width, 1) if dueling else None

    def forward(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """Q-values ``[B, num_actions]``."""
        hidden = sequential_forward(self.encoder, obs)  # same ops as self.encoder(obs), less call overhead
        advantages = F.linear(hidden, self.head.weight, self.head.bias)
        if self.value_head is None:
            return advantages
        return self.value_head(hidden) + advantages - advantages.mean(dim=1, keepdim=True)


class TwinQ(nn.Module):
    """Two independent critics ``Q1(s, a)`` and ``Q2(s, a)`` (clipped double Q, Fujimoto et al. 2018).

    Args:
        obs_dim: Size of a flat observation (of the encoder's output with ``encoder``).
        action_dim: Size of an action.
        hidden_sizes: Widths of each critic's hidden layers.
        encoder: A parameter-free encoder of observations other than flat Boxes
            (:func:`lightrl.nn.encoders.observation_encoder`); None for flat Box observations.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int] = (256, 256), encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.qf1 = dense(obs_dim + action_dim, hidden_sizes, 1)
        self.qf2 = dense(obs_dim + action_dim, hidden_sizes, 1)

    def forward(self, obs: Tensor | dict[str, Tensor], actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(Q1, Q2)``, each shaped ``[B]``."""
        x = torch.cat([flat_features(obs, self.encoder), actions], dim=1)
        return sequential_forward(self.qf1, x).squeeze(-1), sequential_forward(self.qf2, x).squeeze(-1)

    def q1(self, obs: Tensor | dict[str, Tensor], actions: Tensor) -> Tensor:
        """``Q1`` alone, ``[B]`` (TD3's actor loss)."""
        return sequential_forward(self.qf1, torch.cat([flat_features(obs, self.encoder), actions], dim=1)).squeeze(-1)


class SquashedGaussianActor(nn.Module):
    """SAC's policy: a Gaussian squashed by tanh into the action bounds (Haarnoja et al. 2018).

    As in CleanRL's ``sac_continuous_action.py``: the log standard deviation is squashed into
    ``[LOG_STD_MIN, LOG_STD_MAX]`` by tanh, and the log-probability is corrected for the tanh and for the
    rescaling to the action bounds. Sampling uses plain tensor ops, not ``torch.distributions``.

    Args:
        obs_dim: Size of a flat observation (of the encoder's output with ``encoder``).
        action_space: A bounded 1-D Box.
        hidden_sizes: Widths of the hidden layers.
        encoder: As for :class:`TwinQ`.
    """

    def __init__(self, obs_dim: int, action_space: spaces.Box, hidden_sizes: Sequence[int] = (256, 256), encoder: nn.Module | None = None):
        super().__init__()
        action_dim = int(np.prod(action_space.shape))
        self.encoder = encoder
        self.trunk = dense(obs_dim, hidden_sizes)
        self.fc_mean = nn.Linear(hidden_sizes[-1], action_dim)
        self.fc_logstd = nn.Linear(hidden_sizes[-1], action_dim)
        scale, bias = action_bounds(action_space)
        self.register_buffer("action_scale", scale)
        self.register_buffer("action_bias", bias)

    def forward(self, obs: Tensor | dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean and log standard deviation of the Gaussian before squashing, ``[B, action_dim]`` each."""
        hidden = sequential_forward(self.trunk, flat_features(obs, self.encoder))
        log_std = torch.tanh(self.fc_logstd(hidden))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        return self.fc_mean(hidden), log_std

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """A reparameterised action in the env's bounds and its log-probability ``[B]``."""
        mean, log_std = self(obs)
        eps = torch.randn_like(mean)
        y = torch.tanh(mean + log_std.exp() * eps)
        log_prob = -0.5 * eps.pow(2) - log_std - _LOG_SQRT_2PI
        log_prob = log_prob - torch.log(self.action_scale * (1 - y.pow(2)) + 1e-6)
        return y * self.action_scale + self.action_bias, log_prob.sum(-1)

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """The squashed mean if ``deterministic``, else the action of :meth:`sample` without its log-probability."""
        mean, log_std = self(obs)
        if not deterministic:
            mean = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(mean) * self.action_scale + self.action_bias


class DeterministicActor(nn.Module):
    """TD3's policy ``tanh(mlp(s))`` rescaled to the action bounds (Fujimoto et al. 2018).

    Args:
        obs_dim: Size of a flat observation (of the encoder's output with ``encoder``).
        action_space: A bounded 1-D Box.
        hidden_sizes: Widths of the hidden layers.
        encoder: As for :class:`TwinQ`.
    """

    def __init__(self, obs_dim: int, action_space: spaces.Box, hidden_sizes: Sequence[int] = (256, 256), encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.net = dense(obs_dim, hidden_sizes, int(np.prod(action_space.shape)))
        scale, bias = action_bounds(action_space)
        self.register_buffer("action_scale", scale)
        self.register_buffer("action_bias", bias)

    def forward(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """Actions ``[B, action_dim]`` within the bounds."""
        return torch.tanh(sequential_forward(self.net, flat_features(obs, self.encoder))) * self.action_scale + self.action_bias
