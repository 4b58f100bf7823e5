"""``vectorization="envpool"``: EnvPool's C++ vector envs, adapted to lightrl's SAME_STEP autoreset."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from lightrl.envs.autoreset import AUTORESET_MODE, EpisodeCounter, same_step_info, warn_env_state_lost

MISSING = "vectorization='envpool' needs the envpool package: pip install 'lightrl[envpool]'"


def envpool_task(env_id: str) -> str:
    """EnvPool's name for ``env_id`` (``"ALE/Pong-v5"`` is ``"Pong-v5"``).

    Raises:
        ValueError: if envpool is not installed, or does not provide ``env_id``.
    """
    try:
        import envpool
    except ImportError:
        raise ValueError(MISSING) from None
    task = env_id.removeprefix("ALE/")
    if task not in envpool.list_all_envs():
        raise ValueError(
            f"vectorization='envpool' does not support env_id {env_id!r} (envpool provides e.g. CartPole-v1, "
            "Pendulum-v1, Pong-v5; see envpool.list_all_envs()). Use vectorization='sync' for it."
        )
    return task


class EnvPoolVectorEnv(gym.vector.VectorEnv):
    """An EnvPool env that behaves like lightrl's gymnasium vector envs.

    EnvPool autoresets NEXT_STEP-style: the step after an episode ends ignores its action and returns the
    reset observation with reward 0. Here, a sub-env whose episode ended is reset inside the same
    ``step`` (``reset(env_id=...)``), as in gymnasium's SAME_STEP mode: the step returns the reset
    observation, ``info["final_obs"]`` / ``info["_final_obs"]`` the last one, and
    ``info["final_info"]["episode"]`` the episode's return ``r`` and length ``l`` (counted here).

    Sub-env ``i`` of rank ``rank`` gets seed ``seed + rank * num_envs + i`` (EnvPool seeds sub-env ``i``
    with its base seed plus ``i``), as :func:`~lightrl.envs.vector.env_seeds` gives.

    Args:
        env_id: A gymnasium id that EnvPool provides.
        num_envs: Sub-envs.
        seed: Base seed of this process's sub-envs (``seed + rank * num_envs``).
        env_kwargs: Keyword arguments for ``envpool.make_gymnasium``.
    """

    def __init__(self, env_id: str, num_envs: int, seed: int, env_kwargs: dict[str, Any] | None = None):
        task = envpool_task(env_id)
        import envpool

        self.pool = envpool.make_gymnasium(task, num_envs=num_envs, seed=seed, **(env_kwargs or {}))
        self.num_envs = num_envs
        self.single_observation_space = self.pool.observation_space
        self.single_action_space = self.pool.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.action_space.seed(seed)
        self.metadata = {"autoreset_mode": AUTORESET_MODE}
        self.episodes = EpisodeCounter(num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            raise ValueError("EnvPoolVectorEnv is seeded when it is made (make_vec_env's seed and rank).")
        self.episodes.reset()
        obs, _ = self.pool.reset()
        return obs, {}

    def step(self, actions: np.ndarray):
        obs, rewards, terminated, truncated, _ = self.pool.step(np.asarray(actions))
        done = np.logical_or(terminated, truncated)
        final_info = self.episodes.step(rewards, done)
        infos: dict[str, Any] = {}
        if final_info is not None:
            ids = np.flatnonzero(done)
            final_obs = obs.copy()
            obs = obs.copy()
            obs[ids] = self.pool.reset(ids.astype(np.int32))[0]
            infos = same_step_info(final_obs, done, final_info)
        return obs, rewards.astype(np.float64), terminated, truncated, infos

    def get_state(self) -> dict[str, Any]:
        """Always ``{"error": reason}``: EnvPool's sub-envs cannot be captured."""
        return {"error": "EnvPool keeps its sub-envs in C++ and cannot save them"}

    def set_state(self, state: dict[str, Any]) -> bool:
        """EnvPool's state cannot be restored: warn; the sub-envs restart from a reset on the next step."""
        warn_env_state_lost(state.get("error", "EnvPool cannot restore env state"))
        return False

    def close(self, **kwargs: Any) -> None:
        """Close the EnvPool env."""
        if hasattr(self.pool, "close"):
            self.pool.close()
