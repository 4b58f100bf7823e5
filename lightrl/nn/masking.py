"""Invalid-action masking (Huang & Ontañón 2022, https://arxiv.org/abs/2006.14171), as sb3-contrib's MaskablePPO does it.

The observations carry a bool mask (the ``"action_mask"`` entry, see :mod:`lightrl.envs.masks`). The
networks here take the observation without it, and then:

- :class:`MaskedActorCritic` (PPO, A2C): the logits of invalid actions are set to the lowest finite value of
  their dtype (:func:`masked_logits`), so that sampling, the mode and the log-probability never pick them, and
  the entropy is taken over the valid actions only (:func:`masked_entropy`);
- :class:`MaskedQNetwork` (DQN): the Q-values of invalid actions are set the same way, so that the greedy
  action and the target's max (over the next observation's mask) skip them.

A finite value rather than ``-inf``: the softmax of a row is then defined whatever the precision (bf16, fp16),
and ``0 * value`` stays 0 where a product meets it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from gymnasium import spaces
from torch import Tensor

import lightrl.nn.distributions as D
from lightrl.envs.masks import MASK_KEY, OBS_KEY, is_masked, mask_groups, split_mask, unmasked_space
from lightrl.nn.actor_critic import ActorCritic
from lightrl.nn.q_networks import QNetwork


def masked_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """``logits`` with those of invalid actions (``mask`` False) set to the lowest finite value of their dtype.

    Example::

        >>> masked_logits(torch.zeros(1, 3), torch.tensor([[True, False, True]])).softmax(-1)
        tensor([[0.5000, 0.0000, 0.5000]])
    """
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


def masked_entropy(log_probs: Tensor, mask: Tensor) -> Tensor:
    """Entropy of each row's categorical distribution over its valid actions; ``log_probs`` of masked logits."""
    return -torch.where(mask, log_probs.exp() * log_probs, torch.zeros_like(log_probs)).sum(-1)


def check_maskable(observation_space: spaces.Space, action_space: spaces.Space) -> tuple[spaces.Space, bool]:
    """The observation space without the mask, and whether it is the ``"obs"`` entry alone.

    Raises:
        ValueError: if the observations carry no :class:`~lightrl.envs.masks.ActionMask`, or the actions cannot be masked.
    """
    if not is_masked(observation_space):
        raise ValueError(f"masked networks take Dict observations with an 'action_mask' entry (lightrl.envs.masks), got {observation_space}.")
    if mask_groups(action_space) is None:
        raise ValueError(f"action masks need Discrete or 1-D MultiDiscrete actions, got {action_space}.")
    return unmasked_space(observation_space), [key for key in observation_space.spaces if key != MASK_KEY] == [OBS_KEY]


class MaskedActorCritic(ActorCritic):
    """:class:`~lightrl.nn.actor_critic.ActorCritic` whose policy never gives an invalid action its probability.

    The networks are those of the observation space without the mask (the same layers as an unmasked
    agent); the mask acts on the logits only. MultiDiscrete masks hold ``sum(nvec)`` entries, one group per dimension.

    Args:
        observation_space: A Dict with an ``"action_mask"`` entry (:class:`~lightrl.envs.masks.ActionMask`).
        action_space: Discrete or 1-D MultiDiscrete.
        hidden_sizes: Widths of the MLP hidden layers.
        activation: The MLPs' hidden activation, ``"tanh"`` or ``"relu"``.

    Example::

        >>> from lightrl.envs.masks import ActionMask
        >>> space = spaces.Dict({"action_mask": ActionMask([3]), "obs": spaces.Box(-1, 1, (4,))})
        >>> agent = MaskedActorCritic(space, spaces.Discrete(3))
        >>> agent.act({"obs": torch.zeros(2, 4), "action_mask": torch.tensor([[False, True, False]] * 2)})
        tensor([1, 1])
    """

    def __init__(
        self, observation_space: spaces.Dict, action_space: spaces.Space, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
    ):
        inner, unwrap = check_maskable(observation_space, action_space)
        super().__init__(inner, action_space, hidden_sizes, activation)
        self.unwrap = unwrap
        #: The sizes of the mask's groups, one per action dimension.
        self.groups = mask_groups(action_space)

    def get_value(self, obs: dict[str, Tensor]) -> Tensor:
        """``V(s)``, shaped ``[B]`` (the mask plays no part)."""
        return super().get_value(split_mask(obs, self.unwrap)[0])

    def masked_heads(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The masked logits, the value ``[B]`` and the mask."""
        inner, mask = split_mask(obs, self.unwrap)
        logits, value = self.heads(inner)
        return masked_logits(logits, mask), value, mask

    def log_prob_entropy(self, logits: Tensor, mask: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """``(log pi(a|s), entropy over the valid actions)``, each ``[B]``, of masked logits."""
        if self.discrete:
            log_probs = logits.log_softmax(-1)
            return D.categorical_log_prob(logits, action, log_probs), masked_entropy(log_probs, mask)
        log_prob = entropy = 0
        for i, (part, valid) in enumerate(zip(logits.split(self.groups, dim=-1), mask.split(self.groups, dim=-1))):
            log_p = part.log_softmax(-1)
            log_prob = log_prob + D.categorical_log_prob(part, action[..., i], log_p)
            entropy = entropy + masked_entropy(log_p, valid)
        return log_prob, entropy

    def get_action_and_value(self, obs: dict[str, Tensor], action: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sample a valid action (or score the given one) and return ``(action, log_prob, entropy, value)``."""
        logits, value, mask = self.masked_heads(obs)
        if action is None:
            action = self.sample_logits(logits)
        log_prob, entropy = self.log_prob_entropy(logits, mask, action)
        return action, log_prob, entropy, value

    def sample(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """What a rollout needs per step: ``(action, log_prob, value)``."""
        logits, value, _ = self.masked_heads(obs)
        action = self.sample_logits(logits)
        log_prob = D.categorical_log_prob(logits, action) if self.discrete else self.distribution.log_prob(logits, action)
        return action, log_prob, value

    def sample_logits(self, logits: Tensor) -> Tensor:
        """A sampled action of masked logits."""
        return D.categorical_sample(logits) if self.discrete else self.distribution.sample(logits)

    def act(self, obs: dict[str, Tensor], deterministic: bool = False) -> Tensor:
        """A valid action: the most likely if ``deterministic``, else a sample."""
        inner, mask = split_mask(obs, self.unwrap)
        logits = masked_logits(self.head(self.actor, self.features(inner)), mask)
        if not deterministic:
            return self.sample_logits(logits)
        return logits.argmax(-1) if self.discrete else self.distribution.mode(logits)


class MaskedQNetwork(QNetwork):
    """:class:`~lightrl.nn.q_networks.QNetwork` whose Q-values of invalid actions are the lowest finite value.

    Acting greedily then picks a valid action, and the target's ``max`` over the next observation's Q-values
    takes the valid ones only. A row with no valid action (a terminal observation may have none) keeps its
    Q-values unmasked, so that the target stays finite; its bootstrap is multiplied by 0 anyway.

    Args:
        observation_space: A Dict with an ``"action_mask"`` entry (:class:`~lightrl.envs.masks.ActionMask`).
        action_space: A Discrete space.
        hidden_sizes: Widths of the fully connected hidden layers.
        dueling: Dueling head ``Q = V + A - mean(A)`` (the mean over all actions, before masking).
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, hidden_sizes: Sequence[int] = (120, 84), dueling: bool = False):
        inner, unwrap = check_maskable(observation_space, action_space)
        super().__init__(inner, action_space, hidden_sizes, dueling)
        self.unwrap = unwrap

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        """Q-values ``[B, num_actions]``, those of invalid actions at the dtype's lowest finite value."""
        inner, mask = split_mask(obs, self.unwrap)
        q = super().forward(inner)
        mask = mask | ~mask.any(dim=1, keepdim=True)  # no valid action: leave the row as it is
        return masked_logits(q, mask)
