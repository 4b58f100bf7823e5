"""The experience source of PPO and A2C with a recurrent core: rollouts that carry each sub-env's state.

The state lives where the acting happens (this source, or its copy in the async actor process), one row per
sub-env, zeroed where an episode starts: after a step whose sub-env ended its episode (SAME_STEP autoreset: the
next observation is the new episode's first) and at the first reset of the envs. Each rollout's batch adds
what the update needs to replay the sequences: ``initial_state`` (the state before each sequence's first step,
``[num_sequences, layers, state_size]``) and ``episode_starts`` (True where an observation is an episode's first).
The sequences are the sub-envs' whole rollouts, or with ``sequence_length`` their chunks of that many steps
(sequence ``k * num_envs + i``: chunk ``k`` of sub-env ``i``); every field is flat in the sequences' time-major
order, ``[sequence_length * num_sequences, ...]``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor

from lightrl.data.collector import Collector, CollectorSpec
from lightrl.data.rollout import RolloutBuffer
from lightrl.data.rollout_source import RolloutSource
from lightrl.data.storage import map_obs
from lightrl.nn.recurrent import reset_state
from lightrl.policies import RecurrentActorCriticPolicy


class RecurrentRolloutSource(RolloutSource):
    """:class:`~lightrl.data.rollout_source.RolloutSource` for a :class:`~lightrl.policies.RecurrentActorCriticPolicy`.

    Truncated episodes are bootstrapped from the value of their final observation seen from the state after
    their last step, as sb3-contrib's RecurrentPPO does. The carried state is saved in checkpoints with the envs.

    Args:
        spec: The envs, rank, world size and budget.
        num_steps: Vector steps per rollout, per sub-env.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.
        sequence_length: Steps per sequence (a divisor of ``num_steps``); ``None``: whole rollouts.
        **kwargs: :class:`~lightrl.data.source.EnvSource`'s ``device``, ``timer``, ``acting_context`` and ``collector``.
    """

    actor_fields = (*RolloutSource.actor_fields, "sequence_length", "state", "starts")

    def __init__(self, spec: CollectorSpec, num_steps: int, gamma: float, gae_lambda: float, sequence_length: int | None = None, **kwargs: Any):
        self.sequence_length = sequence_length or num_steps
        #: Each sub-env's state before its current observation ``[num_envs, layers, state_size]``; None: the envs restart.
        self.state: Tensor | None = None
        #: ``[num_envs]`` bool: whether each sub-env's current observation is its episode's first.
        self.starts: Tensor | None = None
        super().__init__(spec, num_steps, gamma, gae_lambda, **kwargs)

    def collect(self, policy: RecurrentActorCriticPolicy, collector: Collector, env_steps: int) -> dict[str, Tensor]:
        """Step the envs ``num_steps`` times with ``policy.explore_with_value``, carrying the state; the flat batch with
        advantages, ``initial_state`` and ``episode_starts``."""
        if collector.obs is None:
            collector.reset()
            self.state = None
        if self.state is None:
            self.state = policy.initial_state(collector.num_envs, collector.device)
            self.starts = torch.ones(collector.num_envs, dtype=torch.bool, device=collector.device)
        buffer = self.buffer
        if buffer is None or buffer.device != collector.device:
            buffer = self.buffer = RolloutBuffer(self.num_steps, collector.num_envs, policy.observation_space, policy.action_space, collector.device)
        timer = collector.timer
        sequence_states, starts, truncated_states = [], [], []
        tic = timer.start()
        with torch.no_grad(), collector.acting_context():
            for t in range(self.num_steps):
                obs = collector.obs
                if t % self.sequence_length == 0:
                    sequence_states.append(self.state)
                action, logprob, value, state = policy.explore_with_value(obs, self.state)
                tic = timer.add("inference", tic)
                step = collector.step(action)
                tic = timer.add("env_step", tic)
                buffer.add(t, obs, action, logprob, value, step)
                # In buffer.truncated_obs's order: the state each truncated episode's final observation is valued from.
                truncated_states += [state[i] for i in step.final_obs if step.truncated[i] and not step.terminated[i]]
                starts.append(self.starts)
                self.starts = step.terminated.bool() | step.truncated.bool()
                self.state = reset_state(state, self.starts)
                tic = timer.add("data", tic)
            last_value = policy.value(collector.obs, self.state)
            truncated_values = policy.value(buffer.stacked_truncated_obs(), torch.stack(truncated_states)) if truncated_states else None
            tic = timer.add("inference", tic)
        batch = self.finish(policy, buffer, last_value, truncated_values, timer, tic)
        batch["episode_starts"] = torch.stack(starts).reshape(-1)
        if self.sequence_length < self.num_steps:
            batch = {key: map_obs(partial(in_sequences, num_envs=collector.num_envs, length=self.sequence_length), value) for key, value in batch.items()}
        batch["initial_state"] = torch.cat(sequence_states).float()
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The envs' state and, under ``"recurrent"``, each sub-env's carried state and episode-start flag."""
        carried = None if self.state is None else {"state": self.state.cpu(), "starts": self.starts.cpu()}
        return {**super().state_dict(), "recurrent": carried}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the carried states with the episodes in progress, or fresh ones where those restart."""
        super().load_state_dict(state)
        carried = state.get("recurrent")
        if self.collector is None or self.collector.obs is None or carried is None:
            self.state = self.starts = None
            return
        self.state, self.starts = carried["state"].to(self.device), carried["starts"].to(self.device)

    def forget_episodes(self) -> None:
        """Restart the envs from fresh episodes, and with them the states."""
        super().forget_episodes()
        self.state = self.starts = None


def in_sequences(x: Tensor, num_envs: int, length: int) -> Tensor:
    """A flat time-major field ``[num_steps * num_envs, ...]`` reordered into the chunks of ``length`` steps of each sub-env:
    flat time-major ``[length * num_sequences, ...]``, sequence ``k * num_envs + i`` being chunk ``k`` of sub-env ``i``."""
    rest = x.shape[1:]
    chunks = x.shape[0] // (num_envs * length)
    return x.reshape(chunks, length, num_envs, *rest).transpose(0, 1).reshape(-1, *rest)
