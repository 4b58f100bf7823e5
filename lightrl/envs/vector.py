"""Vectorized gymnasium environments with explicit autoreset, per-env seeds and episode statistics."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pickle

import gymnasium as gym
import numpy as np

from lightrl.envs.atari import is_atari, make_atari_env
from lightrl.envs.autoreset import AUTORESET_MODE, warn_env_state_lost
from lightrl.envs.envpool_env import EnvPoolVectorEnv

EnvWrapper = Callable[[gym.Env], gym.Env]
VECTORIZATIONS = ("sync", "async", "envpool")


def env_seeds(seed: int, num_envs: int, rank: int = 0) -> list[int]:
    """Seeds of the sub-envs of one process: distinct across sub-envs and across DDP ranks.

    Example::

        >>> env_seeds(1, num_envs=4, rank=1)
        [5, 6, 7, 8]
    """
    return [seed + rank * num_envs + i for i in range(num_envs)]


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, wrappers: Sequence[EnvWrapper] = ()) -> gym.Env:
    """Create one environment, with lightrl's presets (Atari) and episode statistics innermost.

    Raises:
        ValueError: if ``env_id`` is not a registered gymnasium id.
    """
    kwargs = dict(env_kwargs or {})
    try:
        if is_atari(env_id):
            env = make_atari_env(env_id, **kwargs)
        else:
            env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id, **kwargs))
    except gym.error.Error as err:
        if isinstance(err, (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound)):
            raise ValueError(f"Unknown env id {env_id!r}: {str(err).rstrip('.')}. Check the spelling, or register the env first.") from None
        raise
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def make_vec_env(
    env_id: str,
    num_envs: int = 1,
    seed: int = 0,
    rank: int = 0,
    vectorization: str = "sync",
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[EnvWrapper] = (),
) -> gym.vector.VectorEnv:
    """Create ``num_envs`` copies of ``env_id`` stepped together, in SAME_STEP autoreset mode.

    Sub-env ``i`` of DDP rank ``rank`` is seeded with ``seed + rank * num_envs + i`` on the first
    ``reset()``, so every sub-env on every rank has its own stream, and a run is reproducible for a
    given seed. Finished episodes report ``{"r", "l"}`` in ``info["final_info"]["episode"]``; use
    :func:`episode_stats` to read them.

    Args:
        env_id: A registered gymnasium id, e.g. ``"CartPole-v1"`` or ``"ALE/Pong-v5"`` (Atari preset).
        num_envs: Number of sub-envs in this process.
        seed: Base seed of the run.
        rank: Global rank of this process (0 without DDP).
        vectorization: ``"sync"`` (one process; fastest for cheap envs), ``"async"`` (a process per sub-env)
            or ``"envpool"`` (EnvPool's C++ envs, for the ids it provides; ``wrappers`` do not apply).
        env_kwargs: Keyword arguments for ``gym.make``.
        wrappers: Extra per-env wrappers, applied after lightrl's own.

    Example::

        envs = make_vec_env("CartPole-v1", num_envs=8, seed=1)
        obs, info = envs.reset()
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs}.")
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"vectorization must be one of {VECTORIZATIONS}, got {vectorization!r}.")
    if vectorization == "envpool":
        return EnvPoolVectorEnv(env_id, num_envs, env_seeds(seed, num_envs, rank)[0], env_kwargs)
    make_env(env_id, env_kwargs, wrappers).close()  # fail here, in this process, on a bad id
    fns = [lambda: make_env(env_id, env_kwargs, wrappers) for _ in range(num_envs)]
    vector_cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
    envs = vector_cls(fns, autoreset_mode=AUTORESET_MODE)
    return SeededVectorEnv(envs, env_seeds(seed, num_envs, rank))


class SeededVectorEnv(gym.vector.VectorWrapper):
    """Seeds each sub-env (and its action space) on the first reset that is given no seed.

    For a synchronous vector env, :meth:`get_state` and :meth:`set_state` capture and restore every
    sub-env (with its wrappers, RNG and episode in progress), which is what lets a resumed run continue
    the same episodes.
    """

    def __init__(self, env: gym.vector.VectorEnv, seeds: list[int]):
        super().__init__(env)
        self.seeds = seeds
        self._seeded = False
        self.env.action_space.seed(seeds[0])

    def get_state(self) -> dict[str, Any]:
        """The sub-envs' state as pickled bytes, or ``{"error": reason}`` where it cannot be captured.

        Only a :class:`~gymnasium.vector.SyncVectorEnv` holds its sub-envs in this process; the sub-envs
        of an async vector env live in worker processes, and some envs (e.g. emulators) cannot be pickled.
        """
        vector = self.env.unwrapped
        if not isinstance(vector, gym.vector.SyncVectorEnv):
            return {"error": f"{type(vector).__name__} keeps its sub-envs in worker processes"}
        try:
            envs = pickle.dumps(vector.envs)
        except Exception as err:  # any env attribute may refuse pickling (C++ handles, open files, sockets)
            return {"error": f"{type(vector.envs[0].unwrapped).__name__} cannot be pickled ({type(err).__name__}: {err})"}
        return {"envs": envs, "action_space": pickle.dumps(self.env.action_space.np_random.bit_generator.state)}

    def set_state(self, state: dict[str, Any]) -> bool:
        """Restore what :meth:`get_state` captured; warn and return False if that was not possible.

        Without a state the sub-envs are reset on the next step, with seeds that differ from the run's
        first ones so that the resumed run does not replay its first episodes.
        """
        if "envs" in state:
            vector = self.env.unwrapped
            envs = pickle.loads(state["envs"])
            if len(envs) == len(vector.envs):
                vector.close_extras()
                vector.envs = envs
                self.env.action_space.np_random.bit_generator.state = pickle.loads(state["action_space"])
                self._seeded = True
                return True
            reason = f"the checkpoint has {len(envs)} sub-envs, this run {len(vector.envs)}"
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
        return self.env.reset(seed=seed, options=options)


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
