"""The one place where vector envs are stepped: observations become tensors, episodes are counted."""

from __future__ import annotations

from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.data.storage import Observations, map_obs, obs_dtypes
from lightrl.envs.vector import episode_stats, final_observations, make_vec_env, resolve_wrappers
from lightrl.envs.masks import MASK_KEY, is_masked, no_valid_action
from lightrl.errors import ActionMaskError, NonFiniteError
from lightrl.normalize import RewardNormalizer
from lightrl.timing import IterationTimer


@dataclass
class StepResult:
    """What one vector step returned, as tensors on the collector's device.

    ``next_obs`` holds the reset observation for sub-envs whose episode ended (SAME_STEP autoreset);
    ``final_obs`` maps those sub-envs to the true last observation of the episode. Observations of a
    Dict space are dicts of tensors (see :mod:`lightrl.data.storage`).
    """

    next_obs: Observations
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    final_obs: dict[int, Observations] = field(default_factory=dict)
    episodes: list[tuple[int, float, int]] = field(default_factory=list)
    """``(sub-env index, return, length)`` of each episode that ended in this step."""


class EpisodeStats:
    """Returns and lengths of finished episodes: those not yet logged, and the last 100 (progress bar)."""

    def __init__(self) -> None:
        self.finished_returns: list[float] = []
        self.finished_lengths: list[int] = []
        self.recent_returns: deque[float] = deque(maxlen=100)

    def add_episodes(self, returns: list[float], lengths: list[int]) -> None:
        """Record episodes that just finished."""
        self.finished_returns.extend(returns)
        self.finished_lengths.extend(lengths)
        self.recent_returns.extend(returns)

    def pop_finished_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        out = self.finished_returns, self.finished_lengths
        self.finished_returns, self.finished_lengths = [], []
        return out

    def episode_state(self) -> dict[str, list]:
        """The statistics as plain lists, for a checkpoint."""
        return {"finished_returns": list(self.finished_returns), "finished_lengths": list(self.finished_lengths),
                "recent_returns": list(self.recent_returns)}  # fmt: skip

    def load_episode_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`episode_state` returned."""
        self.finished_returns = list(state["finished_returns"])
        self.finished_lengths = list(state["finished_lengths"])
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])


@dataclass(frozen=True)
class CollectorSpec:
    """Where a collector's experience comes from: ``make_vec_env``'s arguments, the run's size and budget.

    Picklable, so that the async actor process makes the same envs as the sync path would.
    """

    env_id: str
    num_envs: int
    seed: int
    rank: int = 0
    world_size: int = 1
    vectorization: str = "sync"
    env_kwargs: dict[str, Any] | None = None
    total_timesteps: int = 0
    #: ``env_wrappers`` as plain data (:func:`lightrl.envs.vector.wrapper_spec`), resolved in the process that makes the envs.
    env_wrappers: tuple[dict[str, Any], ...] = ()
    #: ``(gamma, clip)`` of the reward normalization (``normalize_reward=True``), or None.
    reward_normalization: tuple[float, float] | None = None

    @property
    def steps_per_env_step(self) -> int:
        """Global env steps taken by one vector step of every rank."""
        return self.num_envs * self.world_size

    def make_envs(self) -> gym.vector.VectorEnv:
        """This rank's vector env (sub-env ``i`` seeded ``seed + rank * num_envs + i``)."""
        return make_vec_env(self.env_id, self.num_envs, self.seed, self.rank, self.vectorization, self.env_kwargs,
                            env_wrappers=resolve_wrappers(self.env_wrappers))  # fmt: skip

    def reward_normalizer(self) -> RewardNormalizer | None:
        """A fresh reward normalizer for this rank's sub-envs, or None without ``normalize_reward``."""
        if self.reward_normalization is None:
            return None
        gamma, clip = self.reward_normalization
        return RewardNormalizer(self.num_envs, gamma, clip)


class Collector(EpisodeStats):
    """Steps a vector env, keeps the current observation and the statistics of finished episodes.

    It belongs to the algorithm's experience source (:mod:`lightrl.data.source`), not to a dataloader
    iterator, so episodes in progress survive Lightning re-creating the iterator. The sources' collect
    loops step it, in the training process or in the async actor process.

    Args:
        envs: A vector env made by :func:`lightrl.envs.make_vec_env` (SAME_STEP autoreset).
        device: Where observations and rewards are put.
        timer: Where the collect loops record their time (``inference``, ``env_step``, ``data``).
        acting_context: Returns the context the policy acts in (the Trainer's precision); none by default.
        reward_normalizer: Scales the rewards that :meth:`step` returns (``normalize_reward=True``); the episode
            statistics stay raw.
    """

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        device: torch.device | str = "cpu",
        timer: IterationTimer | None = None,
        acting_context: Callable[[], ContextManager] = nullcontext,
        reward_normalizer: RewardNormalizer | None = None,
    ):
        self.envs = envs
        self.device = torch.device(device)
        self.timer = timer if timer is not None else IterationTimer()
        self.acting_context = acting_context
        self.reward_normalizer = reward_normalizer
        self.num_envs = envs.num_envs
        obs_space = envs.single_observation_space
        #: The storage dtype of the observations, or of each part of a Dict's (then a dict).
        self.obs_dtype = obs_dtypes(obs_space)
        #: The float parts of a Dict observation, checked for NaN and Inf; None for a space other than Dict.
        self._float_keys = [key for key, dtype in self.obs_dtype.items() if dtype.is_floating_point] if isinstance(obs_space, spaces.Dict) else None
        space = envs.single_action_space
        # Integer actions go to the env as they are, Box actions clipped, MultiBinary ones as int8.
        self._discrete = isinstance(space, (spaces.Discrete, spaces.MultiDiscrete))
        self._low, self._high = (space.low, space.high) if isinstance(space, spaces.Box) else (None, None)
        self.obs: Observations | None = None
        #: The mask's groups when the observations carry an action mask (:mod:`lightrl.envs.masks`), else None.
        self._mask_groups = obs_space.spaces[MASK_KEY].groups if is_masked(obs_space) else None
        self.env_id = getattr(envs, "env_id", None) or getattr(getattr(envs, "spec", None), "id", None) or "env"
        self.vector_steps = 0  # steps of this collector's envs, for messages
        super().__init__()

    def to_tensor(self, obs: Any) -> Observations:
        """An observation batch (or one observation) as a tensor of the storage dtype on the collector's
        device; a dict of them for a Dict space."""
        if self._float_keys is not None:
            return {key: self._tensor(obs[key], dtype) for key, dtype in self.obs_dtype.items()}
        return self._tensor(obs, self.obs_dtype)

    def _tensor(self, array: Any, dtype: torch.dtype) -> Tensor:
        x = torch.from_numpy(array) if isinstance(array, np.ndarray) else torch.as_tensor(array)  # from_numpy: no dtype inference
        return x.to(device=self.device, dtype=dtype)

    def reset(self) -> Observations:
        """Reset all sub-envs (seeded on the first call) and return the first observations."""
        obs, _ = self.envs.reset()
        if self._mask_groups is not None:
            self.check_masks(obs[MASK_KEY])
        self.obs = self.to_tensor(obs)
        return self.obs

    def env_actions(self, actions: Tensor) -> np.ndarray:
        """Policy actions as the env takes them: integer arrays, or Box actions clipped to the bounds."""
        actions = actions.detach().cpu().numpy()
        if self._discrete:
            return actions
        if self._low is None:  # MultiBinary: the 0.0/1.0 samples as the space's int8
            return actions.astype(np.int8)
        # np.clip's values, from its two ufuncs without its dispatch layers
        return np.minimum(np.maximum(actions, self._low), self._high)

    def step(self, actions: Tensor) -> StepResult:
        """Step every sub-env with ``actions`` and move the current observation on."""
        if self.obs is None:
            self.reset()
        next_obs, rewards, terminated, truncated, infos = self.envs.step(self.env_actions(actions))
        self.vector_steps += 1
        check_finite("rewards", rewards)
        if self._mask_groups is not None:
            self.check_masks(next_obs[MASK_KEY])
        if self._float_keys is not None:
            for key in self._float_keys:
                check_finite(f"observations[{key!r}]", next_obs[key])
        elif self.obs_dtype.is_floating_point:
            check_finite("observations", next_obs)
        envs_done, returns, lengths = episode_stats(infos)
        episodes = list(zip(envs_done.tolist(), returns.tolist(), lengths.tolist()))
        if episodes:
            self.add_episodes(returns.tolist(), lengths.tolist())
        self.obs = self.to_tensor(next_obs)
        final = {i: self.to_tensor(o) for i, o in final_observations(infos).items()}
        if self.reward_normalizer is not None:
            rewards = self.reward_normalizer(rewards, np.logical_or(terminated, truncated))
        return StepResult(
            next_obs=self.obs,
            rewards=self._on_device(np.asarray(rewards, dtype=np.float32)),
            terminated=self._on_device(np.asarray(terminated)),
            truncated=self._on_device(np.asarray(truncated)),
            final_obs=final,
            episodes=episodes,
        )

    def check_masks(self, masks: np.ndarray) -> None:
        """Raise :class:`~lightrl.errors.ActionMaskError` if a sub-env's mask leaves it no valid action to take."""
        bad = no_valid_action(masks, self._mask_groups)
        if len(bad):
            raise ActionMaskError(
                f"env {self.env_id!r} gave sub-env(s) {bad.tolist()} an action mask with no valid action, at vector step "
                f"{self.vector_steps} of its envs (0: the first reset). An observation that is acted on needs a valid action: end the episode instead."
            )

    def _on_device(self, array: np.ndarray) -> Tensor:
        x = torch.from_numpy(array)
        return x if self.device.type == "cpu" else x.to(self.device)

    def state_dict(self) -> dict[str, Any]:
        """The current observation, the envs' state, the reward normalizer's and the episode statistics not yet logged."""
        get_state = getattr(self.envs, "get_state", None)
        state = {
            "obs": None if self.obs is None else map_obs(Tensor.cpu, self.obs),
            "envs": get_state() if get_state else {"error": f"{type(self.envs).__name__} has no get_state()"},
            **self.episode_state(),
        }
        if self.reward_normalizer is not None:
            state["reward_normalizer"] = self.reward_normalizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Continue from :meth:`state_dict`; returns whether the episodes in progress could be restored."""
        self.load_episode_state(state)
        if self.reward_normalizer is not None and "reward_normalizer" in state:
            self.reward_normalizer.load_state_dict(state["reward_normalizer"])
        set_state = getattr(self.envs, "set_state", None)
        restored = set_state is not None and state["obs"] is not None and set_state(state["envs"])
        self.obs = map_obs(lambda x: x.to(self.device), state["obs"]) if restored else None
        if self.reward_normalizer is not None and not restored:
            self.reward_normalizer.returns[:] = 0.0  # the episodes restart: so do their discounted returns
        return restored

    def close(self) -> None:
        """Close the vector env (and its worker processes with ``vectorization="async"``)."""
        self.envs.close()


def check_finite(what: str, values: np.ndarray) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` and the sub-envs if ``values`` holds NaN or Inf."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(values), -1).all(axis=1)).tolist()
        kind = "NaN" if np.isnan(values).any() else "Inf"
        raise NonFiniteError(f"{kind} in the {what} of sub-env(s) {bad}")
