"""``collector="async"``: an actor process steps the envs and acts while the learner trains.

The actor process gets a copy of the algorithm's :class:`~lightrl.policies.Policy` (with its exploration
state) and of its experience source (:class:`~lightrl.data.rollout_source.RolloutSource` or
:class:`~lightrl.data.replay_source.ReplaySource`, without their envs and storage), never the
LightningModule. It makes its vector env as the sync path makes it
(:class:`~lightrl.data.collector.CollectorSpec`: ``make_vec_env(seed, rank)``) and runs the source's
``collect``, so seeds and exploration are those of a sync run. Its policy's weights are
refreshed from copies in torch shared memory, which the learner overwrites after each training step
under a lock, bumping a version counter. Experience travels back through a bounded queue as numpy arrays:

- ``lockstep`` experience (on-policy rollouts, advantages and returns already computed): rollout ``k`` is
  collected with exactly the weights after update ``k - 1`` (the actor waits for them; two shared slots,
  alternating, keep them while the learner publishes the next), so the learner always trains on data
  **one rollout** behind its weights, and a run repeats exactly for a seed. PPO stays correct (its
  importance ratio uses the log-probabilities the actor recorded); A2C becomes slightly off-policy.
- other experience (off-policy transitions): one message per chunk of vector steps (one update phase,
  at most 256 vector steps); the learner stores each transition and runs the sync path's replay-ratio
  and target-update logic on its own count of received env steps, so updates fall due at exactly the
  same global env steps. The actor sets the policy's exploration env step (epsilon, the
  ``learning_starts`` warm-up) from its own global env-step count, which is exactly the count the sync
  path would use for that transition; it may run up to ``QUEUE_CHUNKS`` chunks ahead of the learner, and
  the learner publishes its weights after each ``training_step`` (``phases_per_training_step`` update
  phases), so the actor's weights may lag that many phases more.
"""

from __future__ import annotations

import copy
import os
import queue as queue_module
import signal
import traceback
import warnings
import weakref
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from lightrl.data.collector import Collector, CollectorSpec, EpisodeStats
from lightrl.envs.autoreset import warn_env_state_lost
from lightrl.errors import ActionMaskError, NonFiniteError
from lightrl.policies import Policy
from lightrl.rng import seed_all

#: ``spawn``: the learner has started torch's OpenMP threads by the time the actor starts, and a forked
#: child of a multi-threaded process may deadlock. Spawn costs a few seconds of imports, once per fit.
START_METHOD = "spawn"
#: Off-policy chunks the actor may queue ahead of the learner.
QUEUE_CHUNKS = 2
NO_ENV_STATE = {"error": "collector='async' keeps its envs in the actor process"}


class AsyncActor(EpisodeStats):
    """The learner's end of the actor process: receives experience, publishes weights, shuts it down.

    A source (:class:`~lightrl.data.source.EnvSource`) holds one in place of its envs with
    ``collector="async"``. The actor acts in full precision, on the CPU, timed apart from the learner.

    Args:
        spec: The envs, rank, world size and budget.
        source: What the actor collects with (its ``collect``); the actor gets a copy without envs or storage.
        device: Where received tensors are put.
    """

    def __init__(self, spec: CollectorSpec, source: Any, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        super().__init__()
        self.obs = None  # the current observation lives in the actor process
        self.resumed = False
        self.spec, self.source = spec, source
        self._ctx = mp.get_context(START_METHOD)
        self._lockstep = source.lockstep
        self._shared: list[Policy] = []
        self._version = self._ctx.Value("q", 0)
        # Lockstep: rollout k waits for k - 1 published updates (two credits to start, one per update).
        self._credits = self._ctx.Semaphore(2) if self._lockstep else None
        self._queue = self._ctx.Queue(maxsize=1 if self._lockstep else QUEUE_CHUNKS)
        self._stop = self._ctx.Event()
        self._process: mp.Process | None = None
        self._pending: deque[Any] = deque()
        self._finalizer: weakref.finalize | None = None

    @property
    def process(self) -> mp.Process | None:
        """The actor process, once started."""
        return self._process

    @property
    def shared_policies(self) -> list[Policy]:
        """The policy copies in shared memory the actor reads its weights from (two in lockstep), once started."""
        return self._shared

    def start(self, policy: Policy, env_steps: int) -> None:
        """Start the actor process (once) with a copy of ``policy`` (weights and exploration state) and the global env-step count.

        Called before the first batch, after a checkpoint being resumed has been loaded.
        """
        if self._process is not None:
            return
        # Version v in slot v % 2, so that in lockstep the actor can read version k - 1 while v = k + 1 is written.
        slots = 2 if self._lockstep else 1
        self._shared = [copy.deepcopy(policy).cpu().share_memory() for _ in range(slots)]
        args = (self.spec, self.source, self._shared, self._version, self._credits, self._queue, self._stop,
                env_steps, self.resumed, os.getpid())  # fmt: skip
        self._process = self._ctx.Process(target=actor_main, args=args, name="lightrl-actor", daemon=True)
        self._process.start()
        self._finalizer = weakref.finalize(self, shutdown, self._process, self._stop, self._queue)

    def publish(self, policy: Policy) -> None:
        """Copy the policy's new weights into shared memory; the actor reads them before its next batch."""
        with self._version.get_lock():
            self._version.value += 1
            copy_state(self._shared[self._version.value % len(self._shared)], policy)
        if self._credits is not None:
            self._credits.release()

    def _next_message(self) -> list[Any]:
        while True:
            try:
                kind, payload, episodes = self._queue.get(timeout=1.0)
                break
            except queue_module.Empty:
                if self._process is None or not self._process.is_alive():
                    code = None if self._process is None else self._process.exitcode
                    raise RuntimeError(f"The async collector's actor process is not running (exit code {code}).") from None
        if kind == "error":
            error_type, message = payload
            if error_type == "NonFiniteError":
                raise NonFiniteError(message)
            if error_type == "ActionMaskError":
                raise ActionMaskError(message)
            raise RuntimeError(f"The async collector's actor process failed with {error_type}: {message}\n{episodes}")
        self.add_episodes(*episodes)
        return payload

    def receive(self) -> Any:
        """The next piece of experience from the actor, as tensors on :attr:`device`."""
        if not self._pending:
            self._pending.extend(self._next_message())
        return to_tensors(self._pending.popleft(), self.device)

    def state_dict(self) -> dict[str, Any]:
        """Episode statistics only: the envs are in the actor process, so a resumed run restarts them."""
        return {
            "obs": None,
            "envs": dict(NO_ENV_STATE),
            **self.episode_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore the episode statistics; the envs restart from fresh episodes (with a warning). Returns False."""
        self.load_episode_state(state)
        warn_env_state_lost(state["envs"].get("error", "collector='async' cannot restore env state"))
        self.resumed = True
        return False

    def close(self) -> None:
        """Stop the actor process and wait for it (then terminate it if it does not stop)."""
        if self._finalizer is not None:
            self._finalizer()


def to_tensors(value: Any, device: torch.device) -> Any:
    """numpy arrays, in dicts, tuples and lists, as tensors on ``device`` (the containers kept)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value).to(device)
    if isinstance(value, dict):
        return {key: to_tensors(v, device) for key, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_tensors(v, device) for v in value)
    return value


def to_numpy(value: Any) -> Any:
    """Tensors, in dicts, tuples and lists, as numpy copies (the queue pickles them later, in a thread)."""
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, dict):
        return {key: to_numpy(v) for key, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_numpy(v) for v in value)
    return value


def shutdown(process: mp.Process, stop: Any, queue: Any, timeout: float = 10.0) -> None:
    """Ask the actor to stop, drain the queue so that it is not blocked on a put, join; terminate if it hangs."""
    stop.set()
    waited = 0.0
    while process.is_alive() and waited < timeout:
        try:
            while True:
                queue.get_nowait()
        except (queue_module.Empty, OSError, ValueError):
            pass
        process.join(timeout=0.1)
        waited += 0.1
    if process.is_alive():
        process.terminate()
        process.join(timeout=2.0)
    if process.is_alive():
        process.kill()
        process.join()
    queue.close()
    queue.join_thread()


def copy_state(target: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s parameters and buffers into ``target`` in place (across devices)."""
    with torch.no_grad():
        for t, s in zip(target.state_dict().values(), source.state_dict().values()):
            t.copy_(s)


# ----------------------------------------------------------------------------- the actor process
def actor_main(spec, source, shared, version, credits, queue, stop, env_steps, resumed, parent) -> None:
    """Entry point of the actor process: collect until the budget is reached or the learner says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the learner decides
    torch.set_num_threads(1)
    collector = None

    def put(message: tuple) -> bool:
        while not stop.is_set() and os.getppid() == parent:
            try:
                queue.put(message, timeout=0.1)
                return True
            except queue_module.Full:
                pass
        return False

    def wait_credit() -> bool:
        while not stop.is_set() and os.getppid() == parent:
            if credits.acquire(timeout=0.1):
                return True
        return False

    def wait_for_stop(timeout: float | None = None) -> None:
        # Keeps the queue's feeder thread alive until the learner has taken everything (or is gone).
        waited = 0.0
        while not stop.wait(0.5) and os.getppid() == parent and (timeout is None or waited < timeout):
            waited += 0.5

    policy = copy.deepcopy(shared[0])  # the actor's own copy, refreshed from the shared ones
    seen = -1

    def refresh(wanted: int | None = None) -> None:
        """Load version ``wanted`` (lockstep), or the latest one if it is new."""
        nonlocal seen
        with version.get_lock():
            latest = version.value
            if wanted is None and latest == seen:
                return
            seen = latest if wanted is None else wanted
            copy_state(policy, shared[seen % len(shared)])

    try:
        seed_all(spec.seed + spec.rank)
        envs = spec.make_envs()
        if resumed:  # the learner warned: fresh episodes with seeds that differ from the run's first ones
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                envs.set_state(dict(NO_ENV_STATE))
            if policy.exploration is not None:  # nor replay the exploration of the run's start
                policy.exploration.reseed(policy.exploration.seed + env_steps)
        collector = Collector(envs, "cpu", reward_normalizer=spec.reward_normalizer())
        chunk = source.chunk()
        env_steps_per_collect = source.vector_steps() * spec.steps_per_env_step
        batches = 0
        while env_steps < spec.total_timesteps and not stop.is_set():
            if source.lockstep:
                if not wait_credit():
                    break
                refresh(max(batches - 1, 0))
            else:
                refresh()
            pieces = []
            for _ in range(chunk):
                pieces.append(to_numpy(source.collect(policy, collector, env_steps)))
                env_steps += env_steps_per_collect
                if env_steps >= spec.total_timesteps:
                    break
            batches += 1
            if not put(("experience", pieces, collector.pop_finished_episodes())):
                break
        wait_for_stop()
    except BaseException as err:  # report any failure to the learner instead of leaving it waiting
        put(("error", (type(err).__name__, str(err)), traceback.format_exc()))
        wait_for_stop(timeout=30)
    finally:
        # With the learner alive, its shutdown() drains the queue: flush the last message before exiting, since one
        # cut off mid-write would leave the learner blocked reading the rest. With the learner gone, nobody reads.
        if os.getppid() != parent:
            queue.cancel_join_thread()
        if collector is not None:
            collector.close()
