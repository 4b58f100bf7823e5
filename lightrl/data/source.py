"""Experience sources: the one object between an algorithm and its envs.

A source owns the envs (in this process, or in an async actor process) and the storage the algorithm
learns from. The algorithm starts it with its policy, takes from it what ``training_step`` consumes,
publishes its new weights to it after each step, and reads the finished episodes from it:

- :class:`~lightrl.data.rollout_source.RolloutSource` (PPO, A2C): rollouts of ``num_steps`` vector steps
  with GAE, one flat batch each;
- :class:`~lightrl.data.replay_source.ReplaySource` (DQN, SAC, TD3): one vector step at a time into a
  replay buffer, and sampled batches of gradient steps.

Both run their collect loop (:meth:`EnvSource.collect`) on a :class:`~lightrl.data.collector.Collector`
(the one place where vector envs are stepped), here with ``collector="sync"``, or in the actor process
with ``collector="async"``: the actor gets a copy of the source without its envs and storage (see
:mod:`lightrl.data.async_actor`), so both paths collect the same experience for a seed.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Protocol, Sequence, runtime_checkable

import torch

from lightrl.data.async_actor import AsyncActor
from lightrl.data.collector import Collector, CollectorSpec
from lightrl.policies import Policy
from lightrl.timing import IterationTimer

#: The values of ``RLModule(collector=...)``: where the envs run.
COLLECTOR_MODES = ("sync", "async")


@runtime_checkable
class ExperienceSource(Protocol):
    """What an algorithm needs from where its experience comes from; a family adds how to take it
    (``RolloutSource.next_rollout``, ``ReplaySource.collect_step`` and ``sample``)."""

    device: torch.device

    def start(self, policy: Policy, env_steps: int) -> None:
        """Begin collecting with ``policy`` at global env step ``env_steps`` (after a resumed checkpoint is loaded)."""

    def publish(self, policy: Policy) -> None:
        """Make the policy's new weights the ones the next experience is collected with."""

    def pop_finished_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes finished since the last call."""

    @property
    def recent_returns(self) -> Sequence[float]:
        """The returns of the last 100 finished episodes."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue collecting exactly."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""

    def close(self) -> None:
        """Close the envs (and stop the actor process)."""


class EnvSource:
    """The part every source shares: envs here (a :class:`~lightrl.data.collector.Collector`) or in an actor process.

    A subclass implements :meth:`collect` (one piece of experience from a collector; it runs in whichever
    process holds the envs), :meth:`vector_steps` and :meth:`chunk`, and names in ``actor_fields`` the
    attributes the actor's copy needs.

    Args:
        spec: The envs, rank, world size and budget.
        device: Where experience is put.
        timer: Where collection records its time (``inference``, ``env_step``, ``data``).
        acting_context: The context the policy acts in (the Trainer's precision).
        collector: ``"sync"`` (the envs here, stepped by the learner) or ``"async"`` (an actor process).
    """

    #: Whether the actor collects piece ``k`` with exactly the weights after update ``k - 1``.
    lockstep: bool = False
    #: The attributes a copy for the actor process keeps (the envs and storage stay here).
    actor_fields: tuple[str, ...] = ()

    def __init__(
        self,
        spec: CollectorSpec,
        device: torch.device | str = "cpu",
        timer: IterationTimer | None = None,
        acting_context: Callable[[], ContextManager] = nullcontext,
        collector: str = "sync",
    ):
        if collector not in COLLECTOR_MODES:
            raise ValueError(f"collector must be one of {COLLECTOR_MODES}, got {collector!r}.")
        self.spec = spec
        #: Where this process's collection and storage record their time.
        self.timer = timer if timer is not None else IterationTimer()
        #: The actor process's learner end (``collector="async"``), else None.
        self.actor: AsyncActor | None = None
        #: The envs stepped in this process (``collector="sync"``), else None.
        self.collector: Collector | None = None
        if collector == "async":
            self.actor = AsyncActor(spec, self, device)
        else:
            self.collector = Collector(spec.make_envs(), device, self.timer, acting_context, spec.reward_normalizer())
        self._envs: Collector | AsyncActor = self.actor or self.collector
        #: Set by :meth:`close`: the envs are gone, what the source stored stays readable.
        self.closed = False

    def collect(self, policy: Policy, collector: Collector, env_steps: int) -> Any:
        """One piece of experience from ``collector`` with ``policy`` at global env step ``env_steps`` (override this)."""
        raise NotImplementedError

    def vector_steps(self) -> int:
        """Vector steps behind one :meth:`collect`."""
        return 1

    def chunk(self) -> int:
        """Results of :meth:`collect` the actor sends per message."""
        return 1

    def next_piece(self, policy: Policy, env_steps: int) -> Any:
        """The next piece of experience: collected here, or received from the actor process."""
        if self.actor is not None:
            return self.actor.receive()
        return self.collect(policy, self.collector, env_steps)

    @property
    def device(self) -> torch.device:
        """Where experience is put."""
        return self._envs.device

    @device.setter
    def device(self, device: torch.device | str) -> None:
        self._envs.device = torch.device(device)

    def start(self, policy: Policy, env_steps: int) -> None:
        """With ``collector="async"``, start the actor process with a copy of ``policy``; the envs here are ready already."""
        if self.actor is not None:
            self.actor.start(policy, env_steps)

    def publish(self, policy: Policy) -> None:
        """With ``collector="async"``, share the new weights with the actor; here the envs act with ``policy`` itself."""
        if self.actor is not None:
            self.actor.publish(policy)

    def pop_finished_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        return self._envs.pop_finished_episodes()

    @property
    def recent_returns(self) -> Sequence[float]:
        """The returns of the last 100 finished episodes."""
        return self._envs.recent_returns

    def state_dict(self) -> dict[str, Any]:
        """The envs' state, under ``"collector"`` (as checkpoints have always stored it); a subclass adds its storage."""
        return {"collector": self._envs.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self._envs.load_state_dict(state["collector"])

    def forget_episodes(self) -> None:
        """Restart the envs from fresh episodes (a checkpoint from another world size), keeping the statistics."""
        self._envs.load_state_dict({**self._envs.state_dict(), "obs": None, "envs": {"error": "world size changed"}})

    def close(self) -> None:
        """Close the envs (and stop the actor process)."""
        self.closed = True
        self._envs.close()

    def __getstate__(self) -> dict[str, Any]:
        return {key: self.__dict__[key] for key in ("spec", *self.actor_fields)}
