"""The experience source of PPO and A2C: rollouts of ``num_steps`` vector steps with GAE, one flat batch each."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightrl.data.collector import Collector, CollectorSpec
from lightrl.data.rollout import RolloutBuffer
from lightrl.data.source import EnvSource
from lightrl.losses import gae
from lightrl.policies import ActorCriticPolicy, Policy
from lightrl.timing import IterationTimer


class RolloutSource(EnvSource):
    """On-policy experience: ``num_steps`` vector steps with the current policy, then GAE; one flat batch.

    With ``collector="async"`` the actor process collects rollout ``k`` with exactly the weights after
    update ``k - 1`` (``lockstep``), so a run repeats exactly for a seed.

    Args:
        spec: The envs, rank, world size and budget.
        num_steps: Vector steps per rollout, per sub-env.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.
        **kwargs: :class:`~lightrl.data.source.EnvSource`'s ``device``, ``timer``, ``acting_context`` and ``collector``.
    """

    lockstep = True
    actor_fields = ("num_steps", "gamma", "gae_lambda", "buffer")

    def __init__(
        self,
        spec: CollectorSpec,
        num_steps: int,
        gamma: float,
        gae_lambda: float,
        **kwargs: Any,
    ):
        self.num_steps, self.gamma, self.gae_lambda = num_steps, gamma, gae_lambda
        #: The last rollout collected in this process (None before the first, or with ``collector="async"``).
        self.buffer: RolloutBuffer | None = None  # the actor's copy gets None and allocates its own
        super().__init__(spec, **kwargs)

    def vector_steps(self) -> int:
        """Vector steps behind one rollout."""
        return self.num_steps

    def next_rollout(self, policy: ActorCriticPolicy, env_steps: int) -> dict[str, Tensor]:
        """The next rollout as a flat batch with advantages, collected with ``policy`` (or, async, its copy)."""
        return self.next_piece(policy, env_steps)

    def collect(self, policy: ActorCriticPolicy, collector: Collector, env_steps: int) -> dict[str, Tensor]:
        """Step the envs ``num_steps`` times with ``policy.explore_with_value``; return the flat batch with advantages.

        With observation normalization, ``obs`` holds the normalized observations and ``raw_obs`` the env's.
        """
        if collector.obs is None:
            collector.reset()
        buffer = self.buffer
        if buffer is None or buffer.device != collector.device:
            buffer = self.buffer = RolloutBuffer(self.num_steps, collector.num_envs, policy.observation_space, policy.action_space, collector.device)
        timer, sample = collector.timer, policy.explore_with_value
        tic = timer.start()
        with torch.no_grad(), collector.acting_context():
            for t in range(self.num_steps):
                obs = collector.obs
                action, logprob, value = sample(obs)
                tic = timer.add("inference", tic)
                step = collector.step(action)
                tic = timer.add("env_step", tic)
                buffer.add(t, obs, action, logprob, value, step)
                tic = timer.add("data", tic)
            last_value = policy.value(collector.obs)
            truncated_values = policy.value(buffer.stacked_truncated_obs()) if buffer.truncated_obs else None
            tic = timer.add("inference", tic)
        return self.finish(policy, buffer, last_value, truncated_values, timer, tic)

    def finish(self, policy: Policy, buffer: RolloutBuffer, last_value: Tensor, truncated_values: Tensor | None, timer: IterationTimer, tic: float) -> dict[str, Tensor]:
        """The full ``buffer`` as a flat batch with GAE's advantages and returns; ``last_value``: the value after its last
        step, ``truncated_values``: those of its truncated episodes' final observations. Its time counts as ``data``."""
        advantages, returns = gae(
            buffer.rewards,
            buffer.values,
            buffer.next_values(last_value.float(), truncated_values),
            buffer.terminated,
            buffer.truncated,
            self.gamma,
            self.gae_lambda,
        )
        batch = buffer.flatten(advantages, returns)
        if policy.obs_normalizer is not None:
            # What the networks saw while acting: normalized by the statistics of this policy (the actor's copy
            # with collector="async"), frozen during the rollout. The raw ones update the statistics.
            batch["raw_obs"] = batch["obs"]
            batch["obs"] = policy.obs_normalizer(batch["obs"])
        timer.add("data", tic)
        return batch
