"""What PPO and A2C share: an actor-critic, rollouts of ``num_steps`` vector steps, and GAE."""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from lightrl.algos.base import RLModule, require
from lightrl.compile import maybe_compile
from lightrl.data.rollout import RolloutBuffer
from lightrl.losses import explained_variance, gae
from lightrl.nn.actor_critic import ActorCritic


class OnPolicyAlgorithm(RLModule):
    """Collects a rollout with the current policy, computes GAE, and yields it as one batch.

    Args:
        num_steps: Vector steps per rollout, per sub-env.
        gamma: Discount factor, in (0, 1].
        gae_lambda: GAE's lambda, in [0, 1].
        hidden_sizes: Widths of the actor's and critic's hidden layers (vector observations).
        **kwargs: :class:`~lightrl.algos.base.RLModule`'s arguments.
    """

    def __init__(self, num_steps: int, gamma: float, gae_lambda: float, hidden_sizes: Sequence[int], **kwargs: Any):
        super().__init__(**kwargs)
        require(num_steps > 0, f"num_steps must be a positive integer, got {num_steps}.")
        require(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}.")
        require(0 <= gae_lambda <= 1, f"gae_lambda must be in [0, 1], got {gae_lambda}.")
        require(len(hidden_sizes) > 0 and all(h > 0 for h in hidden_sizes), f"hidden_sizes must be positive widths, got {hidden_sizes}.")

    def build_agent(self) -> None:
        """Check the env's spaces and build the actor-critic, seeded by ``seed`` alone."""
        obs_space, action_space = self.probe_spaces()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.hparams.seed)
            self.agent = ActorCritic(obs_space, action_space, self.hparams.hidden_sizes)
        self._compiled_sample = None  # with compile=True, set in on_fit_start

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.compile:
            self._compiled_sample = maybe_compile(self.agent.sample, True, self.device)

    @property
    def batch_size(self) -> int:
        """Samples per rollout in this process: ``num_envs * num_steps``."""
        return self.hparams.num_envs * self.hparams.num_steps

    @property
    def env_steps_per_batch(self) -> int:
        """Global env steps per rollout: ``num_envs * num_steps`` on every rank."""
        return self.batch_size * self.world_size

    @property
    def num_iterations(self) -> int:
        """Rollouts per rank until the global budget is reached."""
        return math.ceil(self.hparams.total_timesteps / (self.batch_size * self.world_size))

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return self.agent.act(obs, deterministic)

    def generate_batches(self) -> Iterator[dict[str, Tensor]]:
        # Every rank runs the same number of rollouts (env_steps is global), so DDP never waits on a missing batch.
        while not self.budget_reached:
            if self.hparams.collector == "async":  # collected by the actor process, one update behind
                batch = self.collector.next_rollout()
                self.env_steps += self.batch_size * self.world_size
                yield batch
            else:
                yield self.collect_rollout()

    @torch.no_grad()
    def collect_rollout(self) -> dict[str, Tensor]:
        """Step the envs ``num_steps`` times with the current policy; return the flat batch with advantages."""
        collector = self.collector
        if collector.obs is None:
            collector.reset()
        if getattr(self, "rollout", None) is None or self.rollout.obs.device != self.device:
            self.rollout = RolloutBuffer(self.hparams.num_steps, self.hparams.num_envs, self.observation_space, self.action_space, self.device)
        buffer = self.rollout
        timer = self.timer
        tic = timer.start()
        with self.acting_context():
            for t in range(self.hparams.num_steps):
                obs = collector.obs
                action, logprob, value = (self._compiled_sample or self.agent.sample)(obs)
                tic = timer.add("inference", tic)
                step = collector.step(action)
                tic = timer.add("env_step", tic)
                buffer.add(t, obs, action, logprob, value, step)
                tic = timer.add("data", tic)
            self.env_steps += self.hparams.num_steps * self.steps_per_env_step  # once: nn.Module.__setattr__ is slow
            last_value = self.agent.get_value(collector.obs)
            truncated_values = self.agent.get_value(buffer.stacked_truncated_obs()) if buffer.truncated_obs else None
            tic = timer.add("inference", tic)
        advantages, returns = gae(
            buffer.rewards,
            buffer.values,
            buffer.next_values(last_value.float(), truncated_values),
            buffer.terminated,
            buffer.truncated,
            self.hparams.gamma,
            self.hparams.gae_lambda,
        )
        batch = buffer.flatten(advantages, returns)
        timer.add("data", tic)
        return batch

    def linear_lr_schedule(self, optimizer: torch.optim.Optimizer, anneal: bool) -> dict[str, Any]:
        """A LambdaLR that decays the learning rate linearly to 0 over the run when ``anneal`` is set."""
        total = self.num_iterations
        factor = (lambda it: max(1.0 - it / total, 0.0)) if anneal else (lambda it: 1.0)
        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}

    def rollout_diagnostics(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Metrics of the rollout itself: how well the values collected with it explain its returns."""
        return {"losses/explained_variance": explained_variance(batch["values"], batch["returns"])}
