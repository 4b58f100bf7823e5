"""A recurrent core (LSTM or GRU) between the observation encoder and the actor-critic heads of PPO and A2C.

The state of a batch of sub-envs is one tensor ``[batch, layers, state_size]`` (batch first, so that row ``i``
is sub-env ``i``'s): an LSTM's ``h`` and ``c`` side by side (``state_size = 2 * hidden``), a GRU's ``h``; with a
core of the critic's own, the actor's state and the critic's side by side. One tensor is what sources carry,
checkpoints save, the async actor keeps and export takes as its ``state`` input.

An episode starts from the zero state: whoever carries the state zeroes the rows of sub-envs whose episode
ended (:func:`reset_state`), and a replayed sequence is reset at the same steps (:meth:`RecurrentCore.sequence`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightrl.nn.actor_critic import ActorCritic
from lightrl.nn.cnn import NatureCNN
from lightrl.nn.encoders import FlatVector, is_image_space, observation_encoder
from lightrl.nn.mlp import sequential_forward

#: The values of the ``recurrent`` hyperparameter that build a core.
RECURRENT_KINDS = ("lstm", "gru")

#: What a recurrent actor-critic's heads take: the actor's and the critic's core outputs (the same tensor when shared).
Memory = tuple[Tensor, Tensor]


def reset_state(state: Tensor, starts: Tensor) -> Tensor:
    """``state`` with the rows of sub-envs whose episode starts (``starts`` True) set to zero.

    Example::

        >>> reset_state(torch.ones(2, 1, 3), torch.tensor([True, False]))[:, 0]
        tensor([[0., 0., 0.],
                [1., 1., 1.]])
    """
    return state * (~starts.bool()).to(state.dtype).view(-1, *([1] * (state.dim() - 1)))


class RecurrentCore(nn.Module):
    """An ``nn.LSTM`` or ``nn.GRU`` (time-major) whose state is one batch-first tensor ``[batch, layers, state_size]``.

    Weights are orthogonal and biases zero, as in CleanRL's ``ppo_atari_lstm.py``.

    Args:
        kind: ``"lstm"`` or ``"gru"``.
        input_size: Features per step.
        hidden_size: The core's output size (an LSTM's state holds twice as many numbers: ``h`` and ``c``).
        num_layers: Stacked layers.
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        if kind not in RECURRENT_KINDS:
            raise ValueError(f"recurrent must be one of {RECURRENT_KINDS} or None, got {kind!r}.")
        self.lstm = kind == "lstm"
        self.rnn = (nn.LSTM if self.lstm else nn.GRU)(input_size, hidden_size, num_layers)
        for name, param in self.rnn.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)
        self.hidden_size = hidden_size
        self.state_size = 2 * hidden_size if self.lstm else hidden_size

    def forward(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Run ``x`` ``[steps, batch, features]`` from ``state``: ``(outputs [steps, batch, hidden], next state)``, no resets."""
        layers_first = state.transpose(0, 1)
        if self.lstm:
            h, c = layers_first.split(self.hidden_size, dim=-1)
            out, (h, c) = self.rnn(x, (h.contiguous(), c.contiguous()))
            return out, torch.cat([h, c], dim=-1).transpose(0, 1)
        out, h = self.rnn(x, layers_first.contiguous())
        return out, h.transpose(0, 1)

    def sequence(self, x: Tensor, starts: Tensor, state: Tensor) -> Tensor:
        """The outputs ``[steps, batch, hidden]`` of ``x`` ``[steps, batch, features]`` run from ``state``, each sub-env's
        state zeroed where ``starts`` ``[steps, batch]`` is True.

        Each sub-env's sequence is cut where its episodes start, and the pieces run as one batch in one call of the
        LSTM or GRU: the first piece of each sub-env from its row of ``state``, the others from zeros, all padded at
        their end to the longest (padding only follows a piece's steps, so it changes none of their outputs). The
        outputs go back to their steps. Where padding would more than double the steps run (one sub-env's long piece
        beside many short ones), the whole batch runs instead from one step where some sub-env starts an episode to
        the next, one call each.
        """
        steps, batch = starts.shape
        begins = starts.clone()
        begins[0] = True  # where a piece begins
        if not begins[1:].any():
            return self(x, reset_state(state, starts[0]))[0]
        counts = begins.sum(dim=0)  # pieces per sub-env
        offsets = counts.cumsum(0) - counts  # the first piece of each sub-env
        piece = begins.long().cumsum(0) - 1 + offsets  # [steps, batch]: the piece each step belongs to
        time = torch.arange(steps, device=x.device).unsqueeze(1).expand(steps, batch)
        num_pieces = int(counts.sum())
        piece_begin = torch.zeros(num_pieces, dtype=torch.long, device=x.device)
        piece_begin[piece[begins]] = time[begins]
        position = time - piece_begin[piece]  # each step's place in its piece
        longest = int(position.max()) + 1
        if longest * num_pieces > 2 * steps * batch:
            return self.between_starts(x, starts, state)
        padded = x.new_zeros(longest, num_pieces, x.shape[-1])
        padded[position, piece] = x
        initial = state.new_zeros(num_pieces, *state.shape[1:])
        initial[offsets] = reset_state(state, starts[0])
        return self(padded, initial)[0][position, piece]

    def between_starts(self, x: Tensor, starts: Tensor, state: Tensor) -> Tensor:
        """:meth:`sequence`'s outputs, the whole batch run from each step where some sub-env starts an episode to the next."""
        cuts = (starts[1:].any(dim=1).nonzero().flatten() + 1).tolist()
        outputs = []
        for begin, end in zip([0, *cuts], [*cuts, starts.shape[0]]):
            out, state = self(x[begin:end], reset_state(state, starts[begin]))
            outputs.append(out)
        return torch.cat(outputs)


def feature_encoder(space: spaces.Space) -> nn.Module:
    """The encoder in front of the core: the Nature-CNN for images, else that of :func:`~lightrl.nn.encoders.observation_encoder`
    (flattened vectors for a Box). Its ``out_features`` is the core's input size."""
    if is_image_space(space):
        return NatureCNN(space.shape[0], image_size=space.shape[1:])
    return observation_encoder(space) or FlatVector(space)


class RecurrentActorCritic(ActorCritic):
    """:class:`~lightrl.nn.actor_critic.ActorCritic` with a recurrent core after the observation encoder.

    observation -> encoder (MLP input, Nature-CNN or Dict encoder) -> LSTM/GRU -> actor and critic MLPs. The
    heads, distributions and their methods are :class:`ActorCritic`'s, built over the core's output:
    ``get_action_and_value``, ``sample``, ``act`` and ``get_value`` take the :data:`Memory` that :meth:`remember`
    (one step) or :meth:`replay` (sequences) return instead of observations. With ``critic_shares_core=False`` the
    critic has a core of its own (sb3-contrib's ``enable_critic_lstm``).

    Args:
        observation_space: As :class:`ActorCritic` takes it.
        action_space: Discrete, 1-D Box, MultiDiscrete or MultiBinary.
        hidden_sizes: Widths of the actor and critic MLPs after the core.
        recurrent: ``"lstm"`` or ``"gru"``.
        recurrent_size: The core's hidden size.
        recurrent_layers: Stacked layers of the core.
        critic_shares_core: Whether the critic reads the actor's core (CleanRL) or has its own (sb3-contrib's default).
        activation: The hidden activation of the actor and critic MLPs, ``"tanh"`` or ``"relu"``.

    Example::

        >>> agent = RecurrentActorCritic(spaces.Box(-1, 1, (4,)), spaces.Discrete(2), recurrent="gru", recurrent_size=8)
        >>> memory, state = agent.remember(torch.zeros(3, 4), agent.initial_state(3))
        >>> agent.act(memory, deterministic=True).shape, state.shape
        (torch.Size([3]), torch.Size([3, 1, 8]))
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        recurrent: str = "lstm",
        recurrent_size: int = 128,
        recurrent_layers: int = 1,
        critic_shares_core: bool = True,
        activation: str = "tanh",
    ):
        super().__init__(spaces.Box(-np.inf, np.inf, (recurrent_size,), np.float32), action_space, hidden_sizes, activation)
        #: The encoder of the observations, in front of the core (the base class's ``encoder`` sees the core's output).
        self.obs_encoder = feature_encoder(observation_space)
        self.core = RecurrentCore(recurrent, self.obs_encoder.out_features, recurrent_size, recurrent_layers)
        self.critic_core = None if critic_shares_core else RecurrentCore(recurrent, self.obs_encoder.out_features, recurrent_size, recurrent_layers)
        cores = 1 if critic_shares_core else 2
        #: The shape of one sub-env's state: ``(layers, state_size)``.
        self.state_shape = (recurrent_layers, cores * self.core.state_size)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
        """The zero state of ``batch_size`` sub-envs at the start of their episodes."""
        return torch.zeros(batch_size, *self.state_shape, device=device)

    def remember(self, obs: Tensor, state: Tensor) -> tuple[Memory, Tensor]:
        """One step: the cores' outputs for ``obs`` ``[batch, ...]`` from ``state`` ``[batch, layers, state_size]``, and the next state.

        Returns:
            ``((actor features, critic features), next state)``, the features ``[batch, recurrent_size]``.
        """
        x = self.obs_encoder(obs).unsqueeze(0)
        if self.critic_core is None:
            out, state = self.core(x, state)
            return (out[0], out[0]), state
        actor_state, critic_state = state.split(self.core.state_size, dim=-1)
        actor, actor_state = self.core(x, actor_state)
        critic, critic_state = self.critic_core(x, critic_state)
        return (actor[0], critic[0]), torch.cat([actor_state, critic_state], dim=-1)

    def replay(self, obs: Tensor, starts: Tensor, state: Tensor) -> Memory:
        """The cores' outputs ``[steps * batch, recurrent_size]`` over sequences, as :meth:`remember` gave them step by step.

        Args:
            obs: ``steps`` of observations of ``batch`` sub-envs, time-major and flat: ``[steps * batch, ...]``.
            starts: ``[steps, batch]`` bool, True where an observation is an episode's first: the state is zeroed there.
            state: ``[batch, layers, state_size]``, the state before the first step.
        """
        features = self.obs_encoder(obs)
        x = features.reshape(starts.shape[0], -1, features.shape[-1])
        if self.critic_core is None:
            actor = critic = self.core.sequence(x, starts, state)
        else:
            actor_state, critic_state = state.split(self.core.state_size, dim=-1)
            actor, critic = self.core.sequence(x, starts, actor_state), self.critic_core.sequence(x, starts, critic_state)
        return actor.reshape(-1, actor.shape[-1]), critic.reshape(-1, critic.shape[-1])

    def features(self, memory: Memory) -> Tensor:
        """The actor's input: its core's output."""
        return memory[0]

    def heads(self, memory: Memory) -> tuple[Tensor, Tensor]:
        """The actor's output (logits or Gaussian mean) and the value ``[B]``, each from its core's output."""
        return sequential_forward(self.actor, memory[0]), sequential_forward(self.critic, memory[1]).squeeze(-1)

    def get_value(self, memory: Memory) -> Tensor:
        """``V(s)``, shaped ``[B]``, from the critic's core output."""
        return sequential_forward(self.critic, memory[1]).squeeze(-1)
