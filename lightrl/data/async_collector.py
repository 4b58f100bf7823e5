"""``collector="async"``: an actor process steps the envs and acts while the learner trains.

The actor process rebuilds the algorithm from its hyperparameters (with ``collector="sync"``) and runs
the algorithm's own collection code (``collect_rollout`` for PPO/A2C, ``collect_step`` for DQN/SAC/TD3)
on its own vector env, made as the sync path makes it (``make_vec_env(seed, rank)``), so seeds and
exploration are those of a sync run. Its acting networks (``acting_networks``, e.g. PPO's ``agent``) are
refreshed from copies in torch shared memory, which the learner overwrites after each update under a
lock, bumping a version counter. Experience travels back through a bounded queue as numpy arrays:

- on-policy: one message per rollout (advantages and returns already computed). Rollout ``k`` is
  collected with exactly the weights after update ``k - 1`` (the actor waits for them; two shared
  slots, alternating, keep them while the learner publishes the next), so the learner always trains on
  data **one rollout** behind its weights, and a run repeats exactly for a seed. PPO stays correct (its
  importance ratio uses the log-probabilities the actor recorded); A2C becomes slightly off-policy.
- off-policy: one message per chunk of vector steps (one update phase, at most 256 vector steps); the
  learner stores each transition and runs the sync path's replay-ratio and target-update logic on its
  own count of received env steps, so updates fall due at exactly the same global env steps. The
  actor computes epsilon (and the ``learning_starts`` warm-up) from its own global env-step count, which
  is exactly the count the sync path would use for that transition; it may run up to ``QUEUE_CHUNKS``
  chunks ahead of the learner, and the learner publishes its weights after each ``training_step``
  (``phases_per_training_step`` update phases), so the actor's weights may lag that many phases more.
"""

from __future__ import annotations

import copy
import os
import queue as queue_module
import random
import signal
import traceback
import warnings
import weakref
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from lightrl.data.collector import Collector, EpisodeStats, NonFiniteError
from lightrl.envs.vector import warn_env_state_lost

COLLECTORS = ("sync", "async")
#: ``spawn``: the learner has started torch's OpenMP threads by the time the actor starts, and a forked
#: child of a multi-threaded process may deadlock. Spawn costs a few seconds of imports, once per fit.
START_METHOD = "spawn"
#: Off-policy chunks the actor may queue ahead of the learner.
QUEUE_CHUNKS = 2
MAX_CHUNK = 256
NO_ENV_STATE = {"error": "collector='async' keeps its envs in the actor process"}


class AsyncCollector(EpisodeStats):
    """The learner's end of the actor process: receives experience, publishes weights, shuts it down.

    Stands in for :class:`~lightrl.data.collector.Collector` on the module (episode statistics,
    ``state_dict``, ``close``); the module calls :meth:`start` before its first batch, then
    :meth:`next_rollout` or :meth:`next_transition`, and :meth:`publish` after each update.

    Args:
        module: The algorithm (``supports_async_collector = True``), on CPU, before fitting.
        rank: Global rank of this process.
        world_size: Number of DDP processes.
        device: Where received tensors are put.
    """

    def __init__(self, module: Any, rank: int, world_size: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        super().__init__()
        self.obs = None  # the current observation lives in the actor process
        self.resumed = False
        self._on_policy = hasattr(module, "collect_rollout")
        self._names = tuple(module.acting_networks)
        self._spec = (type(module), dict(module.hparams), rank, world_size)
        self._ctx = mp.get_context(START_METHOD)
        # On-policy: version v in slot v % 2, so the actor can read version k - 1 while v = k + 1 is written.
        slots = 2 if self._on_policy else 1
        self._shared = [{name: copy.deepcopy(getattr(module, name)).cpu().share_memory() for name in self._names} for _ in range(slots)]
        self._version = self._ctx.Value("q", 0)
        # On-policy: rollout k waits for k - 1 published updates (two credits to start, one per update).
        self._credits = self._ctx.Semaphore(2) if self._on_policy else None
        self._queue = self._ctx.Queue(maxsize=1 if self._on_policy else QUEUE_CHUNKS)
        self._stop = self._ctx.Event()
        self._process: mp.Process | None = None
        self._pending: deque[tuple] = deque()
        self._finalizer: weakref.finalize | None = None

    @property
    def process(self) -> mp.Process | None:
        """The actor process, once started."""
        return self._process

    def start(self, module: Any) -> None:
        """Start the actor process (once), with the module's current weights and global env-step count.

        Called before the first batch, after a checkpoint being resumed has been loaded.
        """
        if self._process is not None:
            return
        env_steps = module.env_steps
        for slot in self._shared:
            for name in self._names:
                copy_state(slot[name], getattr(module, name))
        args = (*self._spec, self._shared, self._version, self._credits, self._queue, self._stop, env_steps, self.resumed, os.getpid())
        self._process = self._ctx.Process(target=actor_main, args=args, name="lightrl-actor", daemon=True)
        self._process.start()
        self._finalizer = weakref.finalize(self, shutdown, self._process, self._stop, self._queue)

    def publish(self, module: Any) -> None:
        """Copy the acting networks' new weights into shared memory; the actor reads them before its next batch."""
        with self._version.get_lock():
            self._version.value += 1
            for name in self._names:
                copy_state(self._shared[self._version.value % len(self._shared)][name], getattr(module, name))
        if self._credits is not None:
            self._credits.release()

    def _receive(self) -> Any:
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
            raise RuntimeError(f"The async collector's actor process failed with {error_type}: {message}\n{episodes}")
        self.add_episodes(*episodes)
        return payload

    def next_rollout(self) -> dict[str, Tensor]:
        """The next rollout from the actor, as the flat batch ``collect_rollout`` returns."""
        return {key: torch.from_numpy(value).to(self.device) for key, value in self._receive().items()}

    def next_transition(self) -> tuple:
        """The next vector step from the actor, as the arguments of ``ReplayBuffer.add``."""
        if not self._pending:
            self._pending.extend(self._receive())
        obs, actions, rewards, terminated, truncated, next_obs, final_obs = self._pending.popleft()
        to = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        return to(obs), to(actions), to(rewards), to(terminated), to(truncated), to(next_obs), {i: to(o) for i, o in final_obs.items()}

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


class CloseAsyncCollector(Callback):
    """Stops the actor process when ``fit`` fails: Lightning then skips the module's ``teardown``."""

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(pl_module.collector, AsyncCollector):
            pl_module.collector.close()


# ----------------------------------------------------------------------------- the actor process
def actor_module(cls: type, hparams: dict[str, Any], world_size: int) -> Any:
    """The algorithm as the actor runs it: no Trainer, collection only, the run's world size."""

    class Actor(cls):
        world_size = property(lambda self: world_size)

    Actor.__name__ = Actor.__qualname__ = cls.__name__
    return Actor(**{**hparams, "collector": "sync", "check_env": False})


class TransitionSink:
    """Takes the place of the replay buffer in the actor: keeps each vector step as numpy copies."""

    def __init__(self) -> None:
        self.steps: list[tuple] = []

    def add(self, obs, actions, rewards, terminated, truncated, next_obs, final_obs) -> None:
        """Keep one vector step, with ``ReplayBuffer.add``'s arguments."""
        n = lambda t: t.detach().cpu().numpy().copy()  # noqa: E731 (the queue pickles later, in a thread)
        self.steps.append((n(obs), n(actions), n(rewards), n(terminated), n(truncated), n(next_obs), {i: n(o) for i, o in final_obs.items()}))

    def pop(self) -> list[tuple]:
        """The vector steps kept since the last call."""
        steps, self.steps = self.steps, []
        return steps


def actor_main(cls, hparams, rank, world_size, shared, version, credits, queue, stop, env_steps, resumed, parent) -> None:
    """Entry point of the actor process: collect until the budget is reached or the learner says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the learner decides
    torch.set_num_threads(1)
    module = None

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

    seen = -1

    def refresh(wanted: int | None = None) -> None:
        """Load version ``wanted`` (on-policy), or the latest one if it is new (off-policy)."""
        nonlocal seen
        with version.get_lock():
            latest = version.value
            if wanted is None and latest == seen:
                return
            seen = latest if wanted is None else wanted
            for name, net in shared[seen % len(shared)].items():
                copy_state(getattr(module, name), net)

    try:
        from lightrl.envs.vector import make_vec_env

        module = actor_module(cls, hparams, world_size)
        hp = module.hparams
        seed = hp.seed + rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        envs = make_vec_env(hp.env_id, hp.num_envs, hp.seed, rank, hp.vectorization, hp.env_kwargs)
        if resumed:  # the learner warned: fresh episodes with seeds that differ from the run's first ones
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                envs.set_state(dict(NO_ENV_STATE))
        module.collector = Collector(envs, "cpu")
        module.env_steps = env_steps
        on_policy = hasattr(module, "collect_rollout")
        if not on_policy:
            module.replay_buffer = TransitionSink()
            module.after_env_step = lambda before, after: None  # target networks are the learner's business
            module._explorer = torch.Generator().manual_seed(hp.seed + rank + 10_000 + (env_steps if resumed else 0))
            chunk = min(MAX_CHUNK, max(1, hp.train_frequency // module.steps_per_env_step))
            module.collector.reset()
        rollouts = 0
        while not module.budget_reached and not stop.is_set():
            if on_policy:
                if not wait_credit():
                    break
                refresh(max(rollouts - 1, 0))
                rollouts += 1
                batch = module.collect_rollout()
                message = ("rollout", {k: v.cpu().numpy().copy() for k, v in batch.items()}, module.collector.pop_finished_episodes())
            else:
                refresh()
                for _ in range(chunk):
                    module.collect_step()
                    if module.budget_reached:
                        break
                message = ("steps", module.replay_buffer.pop(), module.collector.pop_finished_episodes())
            if not put(message):
                break
        wait_for_stop()
    except BaseException as err:  # report any failure to the learner instead of leaving it waiting
        put(("error", (type(err).__name__, str(err)), traceback.format_exc()))
        wait_for_stop(timeout=30)
    finally:
        queue.cancel_join_thread()
        if module is not None and isinstance(getattr(module, "collector", None), Collector):
            module.collector.close()
