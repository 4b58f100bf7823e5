"""An env that only a policy with memory can solve, registered as ``lightrl-test/CueRecall-v0``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

CUE_RECALL_ID = "lightrl-test/CueRecall-v0"
#: Steps between the cue (the first observation) and the question (the last).
DELAY = 10


class CueRecall(gym.Env):
    """The first observation shows a cue (one of two, one-hot); the next ``DELAY - 1`` show nothing; the last asks for it.

    Observations ``[cue 0, cue 1, question]``. Only the action taken on the question counts: reward +1 if it
    names the cue, -1 otherwise, and the episode terminates; every other action gets 0. An episode is
    ``DELAY + 1`` steps. A policy without memory sees the same question whatever the cue: its return is +1
    or -1 by chance (0 on average); one that remembers the cue gets +1 every episode.
    """

    observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(2)), 0
        return self.observation(), {}

    def step(self, action: Any):
        if self.t == DELAY:
            return self.observation(), (1.0 if int(action) == self.cue else -1.0), True, False, {}
        self.t += 1
        return self.observation(), 0.0, False, False, {}

    def observation(self) -> np.ndarray:
        obs = np.zeros(3, dtype=np.float32)
        if self.t == 0:
            obs[self.cue] = 1.0
        elif self.t == DELAY:
            obs[2] = 1.0
        return obs


if CUE_RECALL_ID not in gym.registry:
    gym.register(CUE_RECALL_ID, entry_point=CueRecall)
