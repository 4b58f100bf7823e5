"""Training a recurrent core on a rollout's sequences, as CleanRL's ``ppo_atari_lstm.py`` does.

A minibatch is a set of whole sub-env sequences (all ``num_steps`` steps of ``num_envs / num_minibatches``
sub-envs; or with ``sequence_length``, chunks of that many steps), and the core is rerun over them from the
state stored at the sequence's start, zeroed at the steps where an episode starts. No padding and no masks: every step of a sequence is a real sample, each minibatch
holds the same number of them, and the losses are those of the memoryless algorithm. sb3-contrib's
RecurrentPPO cuts the rollout at episode boundaries and pads the pieces to a common length instead, which
needs a mask in every loss term and makes minibatches of varying real size; the price here is that a
minibatch cannot be smaller than one sequence.
"""

from __future__ import annotations

from functools import partial
from typing import Iterator, Sequence

import torch
from torch import Tensor

from lightrl.data.storage import Observations, map_obs
from lightrl.nn.recurrent import RecurrentActorCritic


class SequenceReplay:
    """A recurrent actor-critic seen through one set of sequences: :meth:`get_action_and_value` takes observations,
    as :class:`~lightrl.nn.actor_critic.ActorCritic`'s does, so that the memoryless losses (e.g.
    :func:`~lightrl.algos.ppo.ppo_minibatch_loss`) apply unchanged.

    Args:
        agent: The recurrent actor-critic.
        starts: ``[steps, batch]`` bool, True where an observation is an episode's first.
        state: ``[batch, layers, state_size]``, the state before the first step.
    """

    def __init__(self, agent: RecurrentActorCritic, starts: Tensor, state: Tensor):
        self.agent, self.starts, self.state = agent, starts, state

    def get_action_and_value(self, obs: Observations, action: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(action, log_prob, entropy, value)`` of ``[steps * batch]`` time-major observations, the core rerun over them."""
        return self.agent.get_action_and_value(self.agent.replay(obs, self.starts, self.state), action)


def whole_rollout(agent: RecurrentActorCritic, batch: dict[str, Tensor]) -> SequenceReplay:
    """All the sequences of a rollout ``batch`` (A2C's one update)."""
    num_sequences = batch["initial_state"].shape[0]
    return SequenceReplay(agent, batch["episode_starts"].reshape(-1, num_sequences), batch["initial_state"])


def sequence_minibatches(agent: RecurrentActorCritic, batch: dict[str, Tensor], num_minibatches: int, keys: Sequence[str]) -> Iterator[tuple]:
    """One epoch's minibatches: the sequences shuffled and split in ``num_minibatches``; each ``(SequenceReplay, *batch[keys])``
    with the fields of its sequences, flat in time-major order."""
    num_sequences = batch["initial_state"].shape[0]
    starts = batch["episode_starts"].reshape(-1, num_sequences)
    for chosen in torch.randperm(num_sequences, device=starts.device).split(num_sequences // num_minibatches):
        select = partial(of_sequences, num_sequences=num_sequences, chosen=chosen)
        fields = [map_obs(select, batch[key]) for key in keys]
        yield (SequenceReplay(agent, starts[:, chosen], batch["initial_state"][chosen]), *fields)


def of_sequences(x: Tensor, num_sequences: int, chosen: Tensor) -> Tensor:
    """The samples of sequences ``chosen`` in a flat time-major field ``[steps * num_sequences, ...]``, flat again."""
    steps = x.shape[0] // num_sequences
    return x.reshape(steps, num_sequences, *x.shape[1:]).index_select(1, chosen).reshape(steps * len(chosen), *x.shape[1:])
