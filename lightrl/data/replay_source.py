"""The experience source of DQN, SAC and TD3: one vector step at a time into a replay buffer, sampled in update phases."""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightrl.data.collector import Collector, CollectorSpec
from lightrl.data.replay import ReplayBuffer
from lightrl.data.source import EnvSource
from lightrl.policies import ExploringPolicy, Policy

#: Most vector steps of off-policy experience the async actor sends in one message.
MAX_CHUNK = 256


def updates_due(before: int, after: int, learning_starts: int, train_frequency: int, gradient_steps: int) -> int:
    """Gradient steps that fall due when the global env-step count goes from ``before`` to ``after``.

    One update phase of ``gradient_steps`` for each multiple of ``train_frequency`` in ``(before, after]``
    past ``learning_starts``, as in Stable-Baselines3 (``num_timesteps > learning_starts``).
    """
    start = max(before, learning_starts)
    if after <= start:
        return 0
    return (after // train_frequency - start // train_frequency) * gradient_steps


class ReplaySource(EnvSource):
    """Off-policy experience: each vector step's transitions go into a :class:`~lightrl.data.replay.ReplayBuffer`.

    :meth:`collect_step` takes one vector step with the policy's exploring actions and stores it (with
    ``collector="async"`` the actor took it: it is stored here); :meth:`updates_due` says how many gradient
    steps fall due; :meth:`sample` draws them. The actor sends one update phase (``train_frequency`` env
    steps, at most :data:`MAX_CHUNK` vector steps) per message and acts with the latest weights it has.

    Args:
        spec: The envs, rank, world size and budget.
        buffer_size: Transitions kept, per process.
        batch_size: Transitions per gradient step, per process.
        gamma: Discount factor of n-step returns.
        n_step: Steps summed into each sampled reward.
        train_frequency: Global env steps between update phases.
        save_replay_buffer: Include the replay buffer in :meth:`state_dict` (checkpoints), to resume exactly.
        replay_buffer: A buffer to continue filling (a module's next fit), else one is allocated by :meth:`allocate`.
        sampler: The generator that draws the samples, with ``replay_buffer``.
        **kwargs: :class:`~lightrl.data.source.EnvSource`'s ``device``, ``timer``, ``acting_context`` and ``collector``.
    """

    actor_fields = ("train_frequency",)

    def __init__(
        self,
        spec: CollectorSpec,
        buffer_size: int,
        batch_size: int,
        gamma: float,
        n_step: int,
        train_frequency: int,
        save_replay_buffer: bool = False,
        replay_buffer: ReplayBuffer | None = None,
        sampler: torch.Generator | None = None,
        **kwargs: Any,
    ):
        self.buffer_size, self.batch_size, self.gamma, self.n_step = buffer_size, batch_size, gamma, n_step
        self.train_frequency = train_frequency
        self.save_replay_buffer = save_replay_buffer
        self.replay_buffer, self.sampler = replay_buffer, sampler
        #: Set by :meth:`load_state_dict` from a checkpoint without the replay buffer (the algorithm refills it).
        self.resumed_without_replay_buffer = False
        self._logged_size = False
        super().__init__(spec, **kwargs)

    def allocate(self, observation_space: spaces.Space, action_space: spaces.Space, device: torch.device, seed: int) -> None:
        """Allocate the replay buffer on ``device`` and seed the sampler, unless this source continues a buffer."""
        if self.replay_buffer is None:
            self.replay_buffer = ReplayBuffer.for_spaces(self.buffer_size, self.spec.num_envs, observation_space, action_space, device)
            self.sampler = torch.Generator(device).manual_seed(seed)

    def chunk(self) -> int:
        """Vector steps the async actor sends per message: one update phase."""
        return min(MAX_CHUNK, max(1, self.train_frequency // self.spec.steps_per_env_step))

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

    def collect_step(self, policy: ExploringPolicy, env_steps: int) -> None:
        """One vector step with the policy's exploring actions, stored in the replay buffer.

        With ``normalize_obs`` the raw observations are added to the policy's statistics.
        """
        transition = self.next_piece(policy, env_steps)
        tic = self.timer.start()
        self.replay_buffer.add(*transition)
        if policy.obs_normalizer is not None:
            policy.obs_normalizer.accumulate(transition[0])
        self.timer.add("data", tic)

    def sample(self, policy: Policy, num_gradient_steps: int) -> dict[str, Any]:
        """``num_gradient_steps * batch_size`` transitions in one draw, shaped ``[num_gradient_steps, batch_size, ...]``.

        The buffer keeps raw observations; with ``normalize_obs`` they are normalized here by the current
        statistics, as Stable-Baselines3 does.
        """
        data = self.replay_buffer.sample(num_gradient_steps * self.batch_size, self.n_step, self.gamma, self.sampler)
        normalizer = policy.obs_normalizer
        if normalizer is not None:
            data = {**data, "observations": normalizer(data["observations"]), "next_observations": normalizer(data["next_observations"])}
        return {key: steps_view(value, num_gradient_steps, self.batch_size) for key, value in data.items()}

    def state_dict(self) -> dict[str, Any]:
        """The envs' state and the sampler's; the replay buffer's too with ``save_replay_buffer``."""
        state = {**super().state_dict(), "sampler": self.sampler.get_state()}
        if self.save_replay_buffer:
            state["replay_buffer"] = self.replay_buffer.state_dict()
            if not self._logged_size:
                size = sum(t.nbytes for t in state["replay_buffer"].values() if isinstance(t, Tensor))
                rank_zero_info(f"lightrl: checkpoints include the replay buffer ({size / 2**20:.1f} MiB per process).")
                self._logged_size = True
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the replay buffer only if it was saved)."""
        super().load_state_dict(state)
        self.sampler.set_state(state["sampler"])
        if "replay_buffer" in state:
            self.replay_buffer.load_state_dict(state["replay_buffer"])
        self.resumed_without_replay_buffer = "replay_buffer" not in state


def steps_view(value: Tensor | dict[str, Tensor], num_gradient_steps: int, batch_size: int) -> Tensor | list[dict[str, Tensor]]:
    """``[num_gradient_steps * batch_size, ...]`` samples as ``[num_gradient_steps, batch_size, ...]``; a list of ``num_gradient_steps``
    dicts for Dict observations (what the training loops iterate over, one gradient step each)."""
    if isinstance(value, dict):
        parts = {key: steps_view(part, num_gradient_steps, batch_size) for key, part in value.items()}
        return [{key: part[i] for key, part in parts.items()} for i in range(num_gradient_steps)]
    return value.view(num_gradient_steps, batch_size, *value.shape[1:])
