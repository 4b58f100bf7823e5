"""What a collector makes of its envs and a policy: on-policy rollouts, or off-policy transitions.

The same code runs in the training process (``collector="sync"``) and in the async actor process, so that
both collect exactly the same experience for a seed. An experience object is picklable: the async actor
gets a copy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightrl.data.collector import Collector
from lightrl.data.rollout import RolloutBuffer
from lightrl.losses import gae
from lightrl.policies import ActorCriticPolicy, ExploringPolicy

#: Most vector steps of off-policy experience the async actor sends in one message.
MAX_CHUNK = 256


class Rollouts:
    """On-policy experience: ``num_steps`` vector steps with the current policy, then GAE; one flat batch.

    The async actor collects rollout ``k`` with exactly the weights after update ``k - 1`` (``lockstep``).

    Args:
        num_steps: Vector steps per rollout, per sub-env.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.
    """

    lockstep = True

    def __init__(self, num_steps: int, gamma: float, gae_lambda: float):
        self.num_steps, self.gamma, self.gae_lambda = num_steps, gamma, gae_lambda
        self.buffer: RolloutBuffer | None = None  # the last rollout, allocated on first use

    def vector_steps(self) -> int:
        """Vector steps behind one :meth:`collect`."""
        return self.num_steps

    def chunk(self, steps_per_env_step: int) -> int:
        """Results of :meth:`collect` the async actor sends per message: one rollout."""
        return 1

    def collect(self, policy: ActorCriticPolicy, collector: Collector, env_steps: int) -> dict[str, Tensor]:
        """Step the envs ``num_steps`` times with ``policy.sample``; return the flat batch with advantages.

        With observation normalization, ``obs`` holds the normalized observations and ``raw_obs`` the env's.
        """
        if collector.obs is None:
            collector.reset()
        buffer = self.buffer
        if buffer is None or buffer.device != collector.device:
            buffer = self.buffer = RolloutBuffer(self.num_steps, collector.num_envs, policy.observation_space, policy.action_space, collector.device)
        timer, sample = collector.timer, policy.sample
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

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "buffer": None}  # the copy allocates its own


class Transitions:
    """Off-policy experience: one vector step with the policy's exploring actions, as ``ReplayBuffer.add`` takes it.

    The async actor sends the steps of one update phase (``train_frequency`` env steps, at most
    :data:`MAX_CHUNK` vector steps) per message and acts with the latest weights it has (no ``lockstep``).

    Args:
        train_frequency: Global env steps between update phases.
    """

    lockstep = False

    def __init__(self, train_frequency: int):
        self.train_frequency = train_frequency

    def vector_steps(self) -> int:
        """Vector steps behind one :meth:`collect`."""
        return 1

    def chunk(self, steps_per_env_step: int) -> int:
        """Vector steps the async actor sends per message: one update phase."""
        return min(MAX_CHUNK, max(1, self.train_frequency // steps_per_env_step))

    def collect(self, policy: ExploringPolicy, collector: Collector, env_steps: int) -> tuple:
        """One vector step at global env step ``env_steps``: ``(obs, actions, rewards, terminated, truncated, next_obs, final_obs)``."""
        obs = collector.obs if collector.obs is not None else collector.reset()
        policy.exploration.env_steps = env_steps  # the warm-up and the epsilon schedule follow the global count
        timer = collector.timer
        tic = timer.start()
        with torch.no_grad(), collector.acting_context():
            actions = policy.explore(obs)
        tic = timer.add("inference", tic)
        step = collector.step(actions)
        timer.add("env_step", tic)
        return obs, actions, step.rewards, step.terminated, step.truncated, step.next_obs, step.final_obs
