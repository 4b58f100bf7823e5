"""What every lightrl vector env (gymnasium's, native or EnvPool's) shares: SAME_STEP autoreset, its ``info``, and how a lost state is reported."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

#: lightrl always steps vector envs in SAME_STEP mode: a finished sub-env is reset inside the step that ended
#: it, and the last observation of the episode comes back as ``info["final_obs"]``. Every stored transition
#: is then a real one, and truncated episodes can be bootstrapped from their final observation.
AUTORESET_MODE = AutoresetMode.SAME_STEP


def warn_env_state_lost(reason: str) -> None:
    """Warn that a resumed run could not restore its envs, and why: episodes restart from a reset."""
    warnings.warn(f"The envs' state was not restored ({reason}); episodes in progress restart from a reset.", stacklevel=3)


class EpisodeCounter:
    """Returns and lengths of the episodes in progress of a vector env that does not report them itself.

    Args:
        num_envs: Sub-envs.
    """

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def reset(self) -> None:
        """Forget the episodes in progress (the vector env was reset)."""
        self.returns[:] = 0
        self.lengths[:] = 0

    def step(self, rewards: np.ndarray, ended: np.ndarray, length: int = 1) -> dict[str, Any] | None:
        """Count one vector step; ``ended`` marks the sub-envs whose episode ended in it.

        Returns:
            ``{"episode": {"r", "l"}, "_episode": ended}`` (the ``final_info`` of gymnasium's SAME_STEP mode)
            if an episode ended, else None.
        """
        self.returns += rewards
        self.lengths += length
        if not ended.any():
            return None
        episode = {"r": np.where(ended, self.returns, 0.0), "l": np.where(ended, self.lengths, 0)}
        self.returns[ended] = 0
        self.lengths[ended] = 0
        return {"episode": episode, "_episode": ended}


def same_step_info(final_obs: np.ndarray, done: np.ndarray, final_info: dict[str, Any] | None) -> dict[str, Any]:
    """The ``info`` of a SAME_STEP vector step in which the sub-envs ``done`` ended (and were reset).

    Args:
        final_obs: The last observation of each ended episode (rows of the others are ignored).
        done: Which sub-envs ended (terminated or truncated).
        final_info: What :meth:`EpisodeCounter.step` returned (None: no episode statistics to report).
    """
    info: dict[str, Any] = {"final_obs": final_obs, "_final_obs": done}
    if final_info is not None:
        info["final_info"] = final_info
        info["_final_info"] = final_info["_episode"]
    return info
