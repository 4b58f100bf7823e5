"""An env of your own for the `lightrl` command: a module that registers it, in the folder you run `lightrl` from.

    lightrl fit --model PPO --model.env_id goal_on_a_line:GoalOnALine-v0

gymnasium imports the module named before the colon (this file), which registers the id after it. The
checkpoint keeps that env id, so `lightrl evaluate`, `export`, `validate`, `test` and `predict` import the
module again: run them from the same folder (or with it on PYTHONPATH).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class GoalOnALine(gym.Env):
    """Five cells, start in the middle; reaching the goal end gives +1, the other end -1."""

    observation_space = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (1,), np.float32), "goal": spaces.Discrete(2)})
    action_space = spaces.Discrete(2)  # left, right

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cell, self.goal = 2, int(self.np_random.integers(2))
        return self.obs(), {}

    def obs(self):
        return {"position": np.array([(self.cell - 2) / 2], np.float32), "goal": self.goal}

    def step(self, action):
        self.cell += 1 if action == 1 else -1
        done = self.cell in (0, 4)
        reward = (1.0 if self.cell == 4 * self.goal else -1.0) if done else 0.0
        return self.obs(), reward, done, False, {}


gym.register("GoalOnALine-v0", entry_point=GoalOnALine, max_episode_steps=20)
