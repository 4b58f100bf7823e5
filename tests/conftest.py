"""Small registered envs whose every step is known in advance, for exact assertions on rollouts, and a loader for
the experiments/ configs that tests train."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from gymnasium import spaces

# One intra-op thread: the test machine has 2 cores shared by several processes, and with 2 threads each
# torch's OpenMP workers spin against one another. Measured here on PPO CartPole (8192 env steps, zoo recipe)
# under load: 149 s with 2 threads, 11 s with 1. The networks under test are far too small to gain from threads.
torch.set_num_threads(1)

# The key that signs checkpoints' env state (lightrl.safe_checkpoint) is made under $XDG_CONFIG_HOME: keep the
# suite's key out of the user's ~/.config. Subprocesses (CLI, DDP ranks) inherit it, so they share the key.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="lightrl-test-config-")

COUNTING_ID = "LightrlTest/Counting-v0"
SPACES_ID = "LightrlTest/Spaces-v0"

#: Step at which an even-seeded CountingEnv terminates, and the registered time limit that truncates odd ones.
TERMINATE_AT = 3
MAX_EPISODE_STEPS = 4
#: Episode return and length of each kind: the reward of step k is k.
EVEN_EPISODE = (1.0 + 2.0 + 3.0, 3)
ODD_EPISODE = (1.0 + 2.0 + 3.0 + 4.0, 4)

EXPERIMENTS = Path(__file__).parents[1] / "experiments"


def experiment_config(name: str) -> dict:
    """An experiments/ config as the CLI reads it: a dict with its ``model`` and ``trainer`` sections."""
    return yaml.safe_load((EXPERIMENTS / name).read_text())


def recipe(name: str) -> dict:
    """The model ``init_args`` of an experiments/ config."""
    return experiment_config(name)["model"]["init_args"]


class CountingEnv(gym.Env):
    """Observation ``[k]`` after ``k`` steps (``[0]`` on reset), reward ``k`` for the ``k``-th step, actions ignored.

    An env first reset with an even seed terminates at step 3; one with an odd seed never terminates and
    is truncated at step 4 by the registered ``max_episode_steps``. The parity sticks across the unseeded
    resets of autoreset, so sub-env 0 and 1 of ``make_vec_env(COUNTING_ID, 2, seed=0)`` end their
    episodes differently within a few steps.
    """

    observation_space = spaces.Box(0.0, 10.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.count = 0
        self.terminates = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.terminates = seed % 2 == 0
        self.count = 0
        return self._obs(), {}

    def step(self, action: Any):
        self.count += 1
        terminated = self.terminates and self.count >= TERMINATE_AT
        return self._obs(), float(self.count), terminated, False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self.count], dtype=np.float32)


class SpacesEnv(gym.Env):
    """A one-step env with the spaces it is given (``env_kwargs``): random observations, for the space checks."""

    def __init__(self, observation_space: spaces.Space | None = None, action_space: spaces.Space | None = None):
        self.observation_space = observation_space or spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = action_space or spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any):
        return self.observation_space.sample(), 0.0, True, False, {}


for _id, _cls, _limit in [
    (COUNTING_ID, CountingEnv, MAX_EPISODE_STEPS),
    (SPACES_ID, SpacesEnv, None),
]:
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls, max_episode_steps=_limit)
