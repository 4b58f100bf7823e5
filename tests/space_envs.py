"""Tiny envs with every space lightrl supports, registered under ``lightrl-test/``: small enough to learn in seconds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

GOAL_DICT_ID = "lightrl-test/GoalDict-v0"
MULTI_DISCRETE_ID = "lightrl-test/MatchMultiDiscrete-v0"
MULTI_BINARY_ID = "lightrl-test/MatchMultiBinary-v0"
DISCRETE_OBS_ID = "lightrl-test/TinyLake-v0"
IMAGE_DICT_ID = "lightrl-test/ImageAndVector-v0"
GOAL_BOX_ID = "lightrl-test/GoalBox-v0"
GRID_OBS_ID = "lightrl-test/TinyLakeGrid-v0"
BITS_OBS_ID = "lightrl-test/CopyBits-v0"
SQUARE_SIDE_ID = "lightrl-test/SquareSide-v0"


class GoalDict(gym.Env):
    """Goal reaching on a line of 5 cells, from the middle: the goal is one end, told by a Discrete part.

    Observations: ``{"position": Box (1,) in [-1, 1], "goal": Discrete(2)}`` (0: the left end, 1: the
    right end). Actions: 0 left, 1 right. Reaching the goal ends the episode with +1, the other end with -1.
    A policy that ignores the goal scores 0 on average; the optimal one 1 in two steps.
    """

    observation_space = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (1,), np.float32), "goal": spaces.Discrete(2)})
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cell, self.goal = 2, int(self.np_random.integers(2))
        return self._obs(), {}

    def _obs(self):
        return {"position": np.array([(self.cell - 2) / 2], np.float32), "goal": self.goal}

    def step(self, action):
        self.cell += 1 if int(action) == 1 else -1
        at_end = self.cell in (0, 4)
        reward = 0.0 if not at_end else (1.0 if self.cell == 4 * self.goal else -1.0)
        return self._obs(), reward, at_end, False, {}


class MatchSigns(gym.Env):
    """Each step shows ``size`` random signs; the reward counts the action's right answers (:meth:`right`).

    8 steps per episode, observations ``Box(-1, 1, (size,))``.
    """

    size = 2

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.new_signs(), {}

    def new_signs(self):
        self.signs = self.np_random.choice([-1.0, 1.0], size=self.size).astype(np.float32)
        return self.signs

    def step(self, action):
        action = np.asarray(action)
        assert action.dtype == self.action_space.dtype and self.action_space.contains(action), action
        reward = float(np.sum(self.right(action)))
        self.t += 1
        return self.new_signs(), reward, False, self.t >= 8, {}


class MatchMultiDiscrete(MatchSigns):
    """Two signs; the action must answer each: 0 for -1, 2 for +1 (MultiDiscrete([3, 3])).

    Random actions score 16/3 per episode, the optimum 16.
    """

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.MultiDiscrete([3, 3])

    def right(self, action):
        return action == np.where(self.signs > 0, 2, 0)


class MatchMultiBinary(MatchSigns):
    """Three signs; each bit of the action must be 1 where the sign is positive (MultiBinary(3), int8).

    Random actions score 12 per episode, the optimum 24.
    """

    size = 3
    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.MultiBinary(3)

    def right(self, action):
        return action == (self.signs > 0)


class TinyLake(gym.Env):
    """FrozenLake in miniature: a 3x3 grid seen as one Discrete(9) cell index, start 0, goal 8, a hole at 4.

    Actions: 0 left, 1 down, 2 right, 3 up (FrozenLake's). Reaching the goal gives +1 and ends the episode;
    falling in the hole ends it with 0. At most 10 steps. The optimum is 1 (4 steps round the hole).
    """

    observation_space = spaces.Discrete(9)
    action_space = spaces.Discrete(4)
    MOVES = ((0, -1), (1, 0), (0, 1), (-1, 0))  # (row, column) of each action

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cell = 0
        return self.cell, {}

    def step(self, action):
        row, col = divmod(self.cell, 3)
        d_row, d_col = self.MOVES[int(action)]
        row, col = min(max(row + d_row, 0), 2), min(max(col + d_col, 0), 2)
        self.cell = 3 * row + col
        return self.cell, float(self.cell == 8), self.cell in (4, 8), False, {}


class TinyLakeGrid(TinyLake):
    """:class:`TinyLake` seen as its (row, column): MultiDiscrete([3, 3]) observations, starting at 1 like a board's."""

    observation_space = spaces.MultiDiscrete([3, 3], start=[1, 1])

    def reset(self, *, seed=None, options=None):
        cell, info = super().reset(seed=seed, options=options)
        return self.grid(cell), info

    def step(self, action):
        cell, *rest = super().step(action)
        return (self.grid(cell), *rest)

    @staticmethod
    def grid(cell: int) -> np.ndarray:
        return np.array(divmod(cell, 3), dtype=np.int64) + 1


class CopyBits(MatchMultiBinary):
    """:class:`MatchMultiBinary` with the signs seen as bits (MultiBinary(3), 1 where positive): the action copies them.

    Random actions score 12 per episode, the optimum 24.
    """

    observation_space = spaces.MultiBinary(3)

    def new_signs(self):
        return (super().new_signs() > 0).astype(np.int8)


class ImageAndVector(gym.Env):
    """A Dict of a 36x36 grayscale image (the smallest the Nature-CNN takes) and a vector; reward 1 for action 1."""

    observation_space = spaces.Dict({
        "camera": spaces.Box(0, 255, (1, 36, 36), np.uint8),
        "velocity": spaces.Box(-1.0, 1.0, (2,), np.float32),
    })  # fmt: skip
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), float(action), False, self.t >= 10, {}


class SquareSide(gym.Env):
    """Frames of 2x36x36 pixels with a bright square in the left or the right half: reward 1 for the action naming the
    side (0 left, 1 right), 8 steps an episode. Only a policy that reads the pixels beats chance (4 of 8)."""

    observation_space = spaces.Box(0, 255, (2, 36, 36), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._new_frame(), {}

    def _new_frame(self):
        self.side = int(self.np_random.integers(2))
        frame = self.np_random.integers(0, 40, self.observation_space.shape, dtype=np.uint8)
        row, col = self.np_random.integers(4, 24), self.np_random.integers(2, 8) + 18 * self.side
        frame[:, row : row + 8, col : col + 8] = 255
        return frame

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        return self._new_frame(), reward, self.t >= 8, False, {}


class GoalBox(gym.Env):
    """Goal-conditioned continuous control: move a point on [-1, 1] to a goal, seen as a Dict of two Boxes.

    Observations ``{"position": (1,), "goal": (1,)}``, action a step in [-1, 1] scaled by 0.5, reward minus the
    distance to the goal after the step. 5 steps from a random start to a random goal.
    """

    observation_space = spaces.Dict({
        "position": spaces.Box(-1.0, 1.0, (1,), np.float32),
        "goal": spaces.Box(-1.0, 1.0, (1,), np.float32),
    })  # fmt: skip
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.position, self.goal = self.np_random.uniform(-1, 1, size=(2, 1)).astype(np.float32)
        return self._obs(), {}

    def _obs(self):
        return {"position": self.position.copy(), "goal": self.goal.copy()}

    def step(self, action):
        self.position = np.clip(self.position + 0.5 * np.asarray(action, np.float32), -1.0, 1.0).astype(np.float32)
        self.t += 1
        return self._obs(), -float(np.abs(self.position - self.goal)[0]), False, self.t >= 5, {}


for _id, _cls, _steps in [
    (GOAL_DICT_ID, GoalDict, 20),
    (MULTI_DISCRETE_ID, MatchMultiDiscrete, None),
    (MULTI_BINARY_ID, MatchMultiBinary, None),
    (DISCRETE_OBS_ID, TinyLake, 10),
    (IMAGE_DICT_ID, ImageAndVector, None),
    (GOAL_BOX_ID, GoalBox, None),
    (GRID_OBS_ID, TinyLakeGrid, 10),
    (BITS_OBS_ID, CopyBits, None),
    (SQUARE_SIDE_ID, SquareSide, None),
]:
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls, max_episode_steps=_steps)
