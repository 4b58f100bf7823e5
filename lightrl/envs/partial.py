"""Partial observations: :class:`HideVelocities` drops the velocities from an env's observations, as the RL zoo's
``NoVel`` envs do (``CartPoleNoVel-v1``, ``PendulumNoVel-v1``, ...), so that only a policy with memory can act well.

In a config::

    model:
      init_args:
        env_id: CartPole-v1
        recurrent: lstm
        env_wrappers:
          - class_path: lightrl.envs.partial.HideVelocities
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: The observation entries that are not velocities, by env id (without the version); the RL zoo's choices.
POSITIONS = {
    "CartPole": (0, 2),  # cart position, pole angle
    "Pendulum": (0, 1),  # cos, sin of the angle
    "MountainCar": (0,),  # position
    "MountainCarContinuous": (0,),
    "Acrobot": (0, 1, 2, 3),  # cos, sin of both angles
    "LunarLander": (0, 1, 4, 6, 7),  # x, y, angle, leg contacts
    "LunarLanderContinuous": (0, 1, 4, 6, 7),
}


def env_name(env: gym.Env) -> str:
    """The env's id without namespace and version (``"CartPole"`` for ``CartPole-v1``)."""
    env_id = getattr(env.spec, "id", None) or type(env.unwrapped).__name__
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


class HideVelocities(gym.ObservationWrapper):
    """Keep only the entries ``keep`` of a flat Box observation (by default the non-velocities of a known env).

    Args:
        env: An env with flat Box observations.
        keep: Indices of the entries to keep; ``None``: those of :data:`POSITIONS` for the env.

    Raises:
        ValueError: for an env lightrl does not know without ``keep``, or observations that are not a flat Box.

    Example::

        >>> env = HideVelocities(gym.make("CartPole-v1"))
        >>> env.observation_space.shape
        (2,)
    """

    def __init__(self, env: gym.Env, keep: Sequence[int] | None = None):
        super().__init__(env)
        space = env.observation_space
        name = env_name(env)
        if not (isinstance(space, spaces.Box) and len(space.shape) == 1):
            raise ValueError(f"HideVelocities needs flat Box observations, got {space} for {name!r}.")
        if keep is None and name not in POSITIONS:
            raise ValueError(f"HideVelocities does not know which entries of {name!r} are velocities; pass keep=[...] (the indices to keep).")
        self.keep = np.asarray(POSITIONS[name] if keep is None else keep, dtype=np.int64)
        if len(self.keep) == 0 or self.keep.min() < 0 or self.keep.max() >= space.shape[0]:
            raise ValueError(f"HideVelocities keep={self.keep.tolist()} must be indices into {name!r}'s {space.shape[0]} observation entries.")
        self.observation_space = spaces.Box(space.low[self.keep], space.high[self.keep], dtype=space.dtype)

    def observation(self, observation: Any) -> np.ndarray:
        """The kept entries."""
        return observation[self.keep]
