"""What every lightrl vector env (gymnasium's or EnvPool's) shares: SAME_STEP autoreset, and how a lost state is reported."""

from __future__ import annotations

import warnings

from gymnasium.vector import AutoresetMode

#: lightrl always steps vector envs in SAME_STEP mode: a finished sub-env is reset inside the step that ended
#: it, and the last observation of the episode comes back as ``info["final_obs"]``. Every stored transition
#: is then a real one, and truncated episodes can be bootstrapped from their final observation.
AUTORESET_MODE = AutoresetMode.SAME_STEP


def warn_env_state_lost(reason: str) -> None:
    """Warn that a resumed run could not restore its envs, and why: episodes restart from a reset."""
    warnings.warn(f"The envs' state was not restored ({reason}); episodes in progress restart from a reset.", stacklevel=3)
