"""Vectorized gymnasium environments with explicit autoreset, per-env seeds and episode statistics."""

from __future__ import annotations

import functools
import importlib
import pickle
import signal
import time
from typing import Any, Callable, Sequence, Union

import cloudpickle
import gymnasium as gym
import numpy as np

from lightrl.envs.atari import is_atari, make_atari_env
from lightrl.envs.autoreset import AUTORESET_MODE, warn_env_state_lost
from lightrl.envs.envpool_env import EnvPoolVectorEnv
from lightrl.envs.native import native_factory
from lightrl.errors import EnvError, EnvWorkerDied
from lightrl.safe_checkpoint import open_env_state, sign_env_state

EnvWrapper = Callable[[gym.Env], gym.Env]
#: An ``env_wrappers`` entry: ``{"class_path": ..., "init_args": {...}}`` or a class path alone (YAML, CLI), or an
#: importable callable (Python).
WrapperSpec = Union[dict[str, Any], str, EnvWrapper]
VECTORIZATIONS = ("auto", "native", "sync", "async", "envpool")


def wrapper_spec(entry: WrapperSpec, index: int = 0) -> dict[str, Any]:
    """An ``env_wrappers`` entry as plain data, ``{"class_path": "module.Name", "init_args": {...}}``.

    Callables (a wrapper class, a module-level function, or a ``functools.partial`` of one) become their
    import path, so that the run's hyperparameters, checkpoints and the async actor hold no code.

    Raises:
        ValueError: for an entry that is neither, or a callable that cannot be imported by name (a lambda).
    """
    where = f"env_wrappers[{index}]"
    if isinstance(entry, str):
        return {"class_path": entry, "init_args": {}}
    if isinstance(entry, dict):
        if set(entry) - {"class_path", "init_args"} or not isinstance(entry.get("class_path"), str):
            raise ValueError(f"{where} must be {{'class_path': 'module.Name', 'init_args': {{...}}}}, got {entry!r}.")
        return {"class_path": entry["class_path"], "init_args": dict(entry.get("init_args") or {})}
    init_args: dict[str, Any] = {}
    if isinstance(entry, functools.partial):
        if entry.args:
            raise ValueError(f"{where}: give functools.partial keyword arguments only (the env is the one positional argument), got {entry!r}.")
        entry, init_args = entry.func, dict(entry.keywords)
    name = getattr(entry, "__qualname__", "")
    if not callable(entry) or "<" in name or not getattr(entry, "__module__", None):
        raise ValueError(
            f"{where} must be a wrapper class or a module-level function (importable by name, so that checkpoints can "
            f"rebuild it), or {{'class_path': ..., 'init_args': ...}}; got {entry!r}."
        )
    return {"class_path": f"{entry.__module__}.{name}", "init_args": init_args}


def resolve_wrapper(spec: dict[str, Any], index: int = 0) -> EnvWrapper:
    """The callable ``env -> wrapped env`` that a :func:`wrapper_spec` describes.

    Raises:
        ValueError: if ``class_path`` cannot be imported or is not callable.
    """
    path = spec["class_path"]
    module_name, _, name = path.rpartition(".")
    try:
        target = importlib.import_module(module_name) if module_name else None
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, TypeError) as err:
        raise ValueError(f"env_wrappers[{index}]: cannot import {path!r} ({err}); give a full path such as 'gymnasium.wrappers.ClipAction'.") from None
    if not callable(target):
        raise ValueError(f"env_wrappers[{index}]: {path!r} is not callable; give a wrapper class such as 'gymnasium.wrappers.ClipAction'.")
    return functools.partial(target, **spec["init_args"]) if spec["init_args"] else target


def resolve_wrappers(entries: Sequence[WrapperSpec] | None) -> list[EnvWrapper]:
    """The callables of an ``env_wrappers`` list, each checked (see :func:`wrapper_spec`)."""
    return [resolve_wrapper(wrapper_spec(entry, i), i) for i, entry in enumerate(entries or ())]


class RawReward(gym.Wrapper):
    """The innermost wrapper under the user's ``env_wrappers``: keeps the env's own reward of the last step."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.reward = 0.0

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.reward = reward
        return obs, reward, terminated, truncated, info


class RawEpisodeStatistics(gym.wrappers.RecordEpisodeStatistics):
    """Episode statistics outside the user's ``env_wrappers``, summing the env's raw rewards.

    Outside, so that episodes end where the wrappers end them (a ``TimeLimit``, a life-loss wrapper); raw,
    so that logged returns are the env's, whatever the wrappers do to the reward.

    Args:
        env: The env inside the user's wrappers.
        raw: The :class:`RawReward` directly around the env.
    """

    def __init__(self, env: gym.Env, raw: RawReward):
        super().__init__(env)
        self.raw = raw

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.episode_returns += float(self.raw.reward)
        self.episode_lengths += 1
        if terminated or truncated:
            now = time.perf_counter()
            info["episode"] = {"r": self.episode_returns, "l": self.episode_lengths, "t": round(now - self.episode_start_time, 6)}
            self.episode_start_time = now
        return obs, reward, terminated, truncated, info


def shape_mismatch(space: gym.Space, obs: Any) -> str | None:
    """What is wrong with the shape of ``obs`` for ``space`` (``None`` if nothing; spaces without a fixed shape are not checked)."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(obs, dict):
            return f"a {type(obs).__name__}, not a dict"
        for key, part in space.spaces.items():
            problem = "no such key" if key not in obs else shape_mismatch(part, obs[key])
            if problem:
                return f"{problem} in its {key!r} part"
        return None
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        shape = np.shape(obs)
        return None if shape == space.shape else f"shape {shape}"
    return None


class ObservationShapeCheck(gym.Wrapper):
    """The outermost wrapper: checks the shape of the observations of the first ``reset()`` and ``step()``.

    A wrong shape would otherwise end in numpy's "Output array is the wrong shape" inside the vector env.

    Raises:
        EnvError: naming the env, its observation space and the observation's shape.
    """

    def __init__(self, env: gym.Env, env_id: str):
        super().__init__(env)
        self.env_id = env_id
        self.checks_left = 2  # the first reset and the first step

    def check(self, obs: Any, method: str) -> None:
        """Raise :class:`~lightrl.errors.EnvError` if ``obs``, returned by ``method``, does not have the space's shape."""
        self.checks_left -= 1
        problem = shape_mismatch(self.observation_space, obs)
        if problem:
            raise EnvError(
                f"env {self.env_id!r} returned an observation of {problem} from {method}(), but its observation_space is "
                f"{self.observation_space}. Make reset() and step() return observations of that space, or declare the space they have."
            )

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        if self.checks_left:
            self.check(obs, "reset")
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.checks_left:
            self.check(obs, "step")
        return obs, reward, terminated, truncated, info


def env_seeds(seed: int, num_envs: int, rank: int = 0) -> list[int]:
    """Seeds of the sub-envs of one process: distinct across sub-envs and across DDP ranks.

    Example::

        >>> env_seeds(1, num_envs=4, rank=1)
        [5, 6, 7, 8]
    """
    return [seed + rank * num_envs + i for i in range(num_envs)]


def make_env(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[EnvWrapper] = (),
    env_wrappers: Sequence[EnvWrapper] = (),
) -> gym.Env:
    """Create one environment, with lightrl's presets (Atari), the user's ``env_wrappers`` and raw episode statistics.

    From the inside out: the env, ``env_wrappers``, episode statistics (of the env's raw rewards, ending
    where the wrappers end episodes), then ``wrappers``. An Atari id gets its preset first, whose
    statistics count the raw game score; ``env_wrappers`` go around it. The first observations of
    ``reset()`` and ``step()`` are checked against the observation space (:class:`ObservationShapeCheck`).

    Raises:
        ValueError: if ``env_id`` is not a registered gymnasium id.
    """
    kwargs = dict(env_kwargs or {})
    try:
        if is_atari(env_id):
            env = make_atari_env(env_id, **kwargs)
            for wrapper in env_wrappers:
                env = wrapper(env)
        elif env_wrappers:
            env = raw = RawReward(gym.make(env_id, **kwargs))
            for wrapper in env_wrappers:
                env = wrapper(env)
            env = RawEpisodeStatistics(env, raw)
        else:
            env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id, **kwargs))
    except gym.error.Error as err:
        if isinstance(err, (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound)):
            raise ValueError(f"Unknown env id {env_id!r}: {str(err).rstrip('.')}. Check the spelling, or register the env first.") from None
        raise
    for wrapper in wrappers:
        env = wrapper(env)
    return ObservationShapeCheck(env, env_id)


def make_vec_env(
    env_id: str,
    num_envs: int = 1,
    seed: int = 0,
    rank: int = 0,
    vectorization: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[EnvWrapper] = (),
    env_wrappers: Sequence[EnvWrapper] = (),
) -> gym.vector.VectorEnv:
    """Create ``num_envs`` copies of ``env_id`` stepped together, in SAME_STEP autoreset mode.

    Sub-env ``i`` of DDP rank ``rank`` is seeded with ``seed + rank * num_envs + i`` on the first
    ``reset()``, so every sub-env on every rank has its own stream, and a run is reproducible for a
    given seed. (A native CartPole draws all its sub-envs from one generator, seeded ``seed + rank * num_envs``.) Finished episodes report ``{"r", "l"}`` in ``info["final_info"]["episode"]``; use
    :func:`episode_stats` to read them.

    Args:
        env_id: A registered gymnasium id, e.g. ``"CartPole-v1"`` or ``"ALE/Pong-v5"`` (Atari preset).
        num_envs: Number of sub-envs in this process.
        seed: Base seed of the run.
        rank: Global rank of this process (0 without DDP).
        vectorization: ``"auto"`` (``"native"`` for Atari ids, and for CartPole ids from 4 sub-envs, without
            per-env wrappers; else ``"sync"``), ``"native"`` (the env's own vector env, stepping all sub-envs in one call: numpy for
            CartPole, ale-py's C++ threads for Atari; see :mod:`lightrl.envs.native`), ``"sync"`` (one process,
            a Python loop over the sub-envs), ``"async"`` (a process per sub-env) or ``"envpool"`` (EnvPool's
            C++ envs, for the ids it provides). Wrappers apply to ``"sync"`` and ``"async"`` only.
        env_kwargs: Keyword arguments for ``gym.make``.
        wrappers: Extra per-env wrappers, applied outside lightrl's episode statistics (e.g. video recording).
        env_wrappers: The user's per-env wrappers, applied inside the episode statistics, which still
            sum the env's raw rewards (see :func:`make_env`).

    Example::

        envs = make_vec_env("CartPole-v1", num_envs=8, seed=1)
        obs, info = envs.reset()
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs}.")
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"vectorization must be one of {VECTORIZATIONS}, got {vectorization!r}.")
    if vectorization == "envpool":
        if env_wrappers:
            raise ValueError("env_wrappers do not apply to vectorization='envpool' (EnvPool's envs are C++); use 'sync' or 'async'.")
        return EnvPoolVectorEnv(env_id, num_envs, env_seeds(seed, num_envs, rank)[0], env_kwargs)
    if vectorization in ("auto", "native"):
        factory, reason = native_factory(env_id, env_kwargs, bool(wrappers or env_wrappers), num_envs, known_only=vectorization == "auto")
        if factory is not None:
            return SeededVectorEnv(factory(num_envs), env_seeds(seed, num_envs, rank), env_id)
        if vectorization == "native":
            if env_id not in gym.envs.registry:
                make_env(env_id, env_kwargs).close()  # raises lightrl's error for an unknown id
            raise ValueError(f"vectorization='native' is not available here: {reason}. Use vectorization='sync'.")
    make_env(env_id, env_kwargs, wrappers, env_wrappers).close()  # fail here, in this process, on a bad id
    fns = [lambda: make_env(env_id, env_kwargs, wrappers, env_wrappers) for _ in range(num_envs)]
    vector_cls = gym.vector.AsyncVectorEnv if vectorization == "async" else gym.vector.SyncVectorEnv
    envs = vector_cls(fns, autoreset_mode=AUTORESET_MODE)
    return SeededVectorEnv(envs, env_seeds(seed, num_envs, rank), env_id)


class SeededVectorEnv(gym.vector.VectorWrapper):
    """Seeds each sub-env (and its action space) on the first reset that is given no seed.

    For a synchronous vector env, :meth:`get_state` and :meth:`set_state` capture and restore every
    sub-env (with its wrappers, RNG and episode in progress), which is what lets a resumed run continue
    the same episodes. A native vector env with a ``get_state``/``set_state`` of its own (CartPole's) saves itself.
    """

    def __init__(self, env: gym.vector.VectorEnv, seeds: list[int], env_id: str | None = None):
        super().__init__(env)
        self.seeds = seeds
        self.env_id = env_id
        self._seeded = False
        self.env.action_space.seed(seeds[0])

    def get_state(self) -> dict[str, Any]:
        """The sub-envs' state as pickled bytes, or ``{"error": reason}`` where it cannot be captured.

        Only a :class:`~gymnasium.vector.SyncVectorEnv` holds its sub-envs in this process; the sub-envs
        of an async vector env live in worker processes, some envs (e.g. emulators) cannot be pickled, and
        those that pickle as their constructor arguments (``gymnasium.utils.EzPickle``: MuJoCo) would come
        back as fresh simulations.
        """
        vector = self.env.unwrapped
        space = pickle.dumps(self.env.action_space.np_random.bit_generator.state)
        if not isinstance(vector, gym.vector.SyncVectorEnv):
            native = getattr(vector, "get_state", None)  # a native vector env that can save itself (SameStepCartPole)
            if native is None:
                return {"error": f"{type(vector).__name__} keeps its sub-envs in worker processes"}
            state = native()
            return state if "error" in state else sign_env_state({**state, "action_space": space})
        rebuilt = [type(env.unwrapped).__name__ for env in vector.envs if isinstance(env.unwrapped, gym.utils.EzPickle)]
        if rebuilt:  # e.g. every MuJoCo env: its pickle would restore a fresh simulation, not the episode in progress
            return {"error": f"{rebuilt[0]} pickles as its constructor arguments (gymnasium.utils.EzPickle), not its state"}
        try:
            # cloudpickle (a gymnasium dependency): wrappers such as ClipAction hold lambdas, which pickle refuses.
            envs = cloudpickle.dumps(vector.envs)
        except Exception as err:  # any env attribute may refuse pickling (C++ handles, open files, sockets)
            return {"error": f"{type(vector.envs[0].unwrapped).__name__} cannot be pickled ({type(err).__name__}: {err})"}
        # Signed, so that resume unpickles only what this user's processes wrote (lightrl.safe_checkpoint).
        return sign_env_state({"envs": envs, "action_space": space})

    def set_state(self, state: dict[str, Any]) -> bool:
        """Restore what :meth:`get_state` captured; warn and return False if that was not possible.

        Without a state the sub-envs are reset on the next step, with seeds that differ from the run's
        first ones so that the resumed run does not replay its first episodes.
        """
        vector = self.env.unwrapped
        if "envs" in state:
            opened = open_env_state(state)  # (envs, action-space RNG state), or why not: nothing unsigned is unpickled
            if isinstance(opened, str):
                reason = opened
            elif not isinstance(vector, gym.vector.SyncVectorEnv):
                if getattr(vector, "set_state", None) is not None and vector.set_state(state):
                    self.env.action_space.np_random.bit_generator.state = opened[1]
                    self._seeded = True
                    return True
                reason = f"{type(vector).__name__} cannot restore this state (saved with another vectorization or number of sub-envs?)"
            elif isinstance(opened[0], list) and len(opened[0]) == len(vector.envs):
                vector.close_extras()
                vector.envs = opened[0]
                self.env.action_space.np_random.bit_generator.state = opened[1]
                self._seeded = True
                return True
            elif isinstance(opened[0], list):
                reason = f"the checkpoint has {len(opened[0])} sub-envs, this run {len(vector.envs)}"
            else:
                reason = "the checkpoint holds a native vector env's state; this run uses vectorization='sync'"
        else:
            reason = state.get("error", "the checkpoint has no env state")
        warn_env_state_lost(reason)
        self.seeds = [s + 7919 * len(self.seeds) for s in self.seeds]  # fresh episodes, still distinct per sub-env and rank
        self._seeded = False
        return False

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if seed is None and not self._seeded:
            seed = self.seeds
        self._seeded = True
        try:
            return self.env.reset(seed=seed, options=options)
        except (EOFError, OSError) as err:  # a worker of an async vector env died: its pipe is closed
            raise stop_workers(self.env.unwrapped, self.env_id, err) from None

    def step(self, actions: Any):
        try:
            return self.env.step(actions)
        except (EOFError, OSError) as err:
            raise stop_workers(self.env.unwrapped, self.env_id, err) from None


def stop_workers(vector: gym.vector.VectorEnv, env_id: str | None, err: BaseException) -> BaseException:
    """The error to raise when a call to an async vector env failed: :class:`EnvWorkerDied` naming the dead worker.

    The other workers are terminated and the vector env is marked closed, so that closing it later does
    not wait on the dead worker's pipe. Any other failure is returned as it was.
    """
    processes = getattr(vector, "processes", None)
    if not processes:
        return err
    deadline = time.monotonic() + 2.0  # the pipe closes a moment before the dead worker can be reaped
    while all(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)
    dead = [(i, p) for i, p in enumerate(processes) if p.exitcode is not None]
    if not dead:
        return err
    for process in processes:
        if process.is_alive():
            process.terminate()
    for pipe in vector.parent_pipes:
        pipe.close()
    vector.closed = True  # VectorEnv.close() returns at once: nothing is left to close
    index, process = dead[0]
    how = f"killed by {signal.Signals(-process.exitcode).name}" if process.exitcode < 0 else f"exit code {process.exitcode}"
    return EnvWorkerDied(
        f"sub-env {index} of {len(processes)} ({env_id or 'env'}, vectorization='async', worker pid {process.pid}) died ({how}); "
        "the other workers were stopped. Resume with --ckpt_path last (trainer.fit(..., ckpt_path=...)): last.ckpt holds the run up to its last epoch."
    )


def episode_stats(infos: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-env indices, returns and lengths of the episodes that ended in one vector step (SAME_STEP mode)."""
    final = infos.get("final_info")
    if not final or "episode" not in final:
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0, dtype=np.int64)
    mask = final["_episode"]
    return np.flatnonzero(mask), final["episode"]["r"][mask].astype(np.float64), final["episode"]["l"][mask].astype(np.int64)


def final_observations(infos: dict[str, Any]) -> dict[int, Any]:
    """The last observation of each sub-env whose episode ended in this step, keyed by sub-env index."""
    if "final_obs" not in infos:
        return {}
    return {int(i): infos["final_obs"][i] for i in np.flatnonzero(infos["_final_obs"])}
