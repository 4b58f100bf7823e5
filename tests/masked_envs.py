"""Envs with action masks, registered under ``lightrl-test/``: an invalid action is punished and ends the episode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MASKED_ID = "lightrl-test/PickValid-v0"
MASKED_MULTI_ID = "lightrl-test/PickValidMulti-v0"

#: Steps per episode, and the reward of an invalid action (which ends the episode): any episode with an
#: invalid action has a negative return, every other one a return in [0, EPISODE_STEPS].
EPISODE_STEPS = 10
INVALID_REWARD = -10.0


class PickValid(gym.Env):
    """Each step shows a target value per action dimension (one-hot); the valid values are the target and ``decoys`` others.

    Reward per step: 1 (split over the dimensions) for the targets, 0 for other valid values, and
    :data:`INVALID_REWARD` for an invalid value, which ends the episode. A policy that picks valid values at
    random scores about ``EPISODE_STEPS / (decoys + 1)``; the optimal one ``EPISODE_STEPS``.

    Args:
        nvec: Values of each action dimension: ``[n]`` gives a Discrete(n) action space, longer a MultiDiscrete.
        decoys: Valid values besides the target, per dimension.
        mask_in: Where the mask is given: ``"obs"`` (a Dict observation ``{"action_mask", "target"}``), ``"info"``
            or ``"method"`` (``action_masks()``).
        empty_mask_at: Step at which the mask has no valid value (an env error), or None.
        mask_shape: Give masks of this many entries instead of ``sum(nvec)`` (an env error).
        mask_dtype: The dtype of the masks given.
    """

    def __init__(self, nvec=(6,), decoys: int = 2, mask_in: str = "info", empty_mask_at: int | None = None,
                 mask_shape: int | None = None, mask_dtype=np.int8):  # fmt: skip
        self.nvec = [int(n) for n in nvec]
        self.decoys, self.mask_in, self.empty_mask_at = decoys, mask_in, empty_mask_at
        self.mask_size, self.mask_dtype = mask_shape or sum(self.nvec), mask_dtype
        self.action_space = spaces.Discrete(self.nvec[0]) if len(self.nvec) == 1 else spaces.MultiDiscrete(self.nvec)
        target = spaces.Box(0.0, 1.0, (sum(self.nvec),), np.float32)
        if mask_in == "obs":
            self.observation_space = spaces.Dict({"action_mask": spaces.MultiBinary(self.mask_size), "target": target})
        else:
            self.observation_space = target
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw()

    def _draw(self):
        self.targets = [int(self.np_random.integers(n)) for n in self.nvec]
        self.mask = np.zeros(sum(self.nvec), dtype=bool)
        onehot = np.zeros(sum(self.nvec), dtype=np.float32)
        offset = 0
        for n, target in zip(self.nvec, self.targets):
            others = [v for v in range(n) if v != target]
            valid = [target, *self.np_random.choice(others, size=min(self.decoys, n - 1), replace=False).tolist()]
            self.mask[offset + np.array(valid)] = True
            onehot[offset + target] = 1.0
            offset += n
        if self.empty_mask_at is not None and self.t >= self.empty_mask_at:
            self.mask[:] = False
        mask = np.resize(self.mask, self.mask_size).astype(self.mask_dtype)
        info = {"action_mask": mask} if self.mask_in == "info" else {}
        obs = {"action_mask": mask, "target": onehot} if self.mask_in == "obs" else onehot
        return obs, info

    def action_masks(self):
        """sb3-contrib's convention; every variant has it, so that the other sources are seen to win over it."""
        return np.resize(self.mask, self.mask_size).astype(self.mask_dtype)

    def step(self, action):
        values = np.atleast_1d(np.asarray(action)).astype(int)
        offsets = np.cumsum([0, *self.nvec[:-1]])
        if not self.mask[offsets + values].all():
            obs, info = self._draw()
            return obs, INVALID_REWARD, True, False, info
        reward = float(np.mean([v == target for v, target in zip(values, self.targets)]))
        self.t += 1
        obs, info = self._draw()
        return obs, reward, self.t >= EPISODE_STEPS, False, info


if MASKED_ID not in gym.registry:
    gym.register(MASKED_ID, entry_point=PickValid)
    gym.register(MASKED_MULTI_ID, entry_point=PickValid, kwargs={"nvec": (3, 4), "decoys": 1})
