"""Action masks: where an env's mask comes from, and the wrapper that carries it inside the observation.

An env may say which actions are valid in three ways; when it offers several, the first found wins:

1. an ``"action_mask"`` entry of a Dict observation (PettingZoo's classic envs);
2. ``info["action_mask"]`` from ``reset()`` and ``step()`` (gymnasium's Taxi);
3. an ``action_masks()`` method on the env or one of its wrappers (sb3-contrib's convention).

:class:`ActionMaskObservation` puts the mask into the observation, as the ``"action_mask"`` entry of a Dict
(the env's own Dict, or ``{"action_mask": ..., "obs": <the env's observation>}``), a bool vector of the
:class:`ActionMask` space. Everything downstream (collectors, storage, the async actor, evaluation,
``predict``, export) then sees the mask of each observation with it. The wrapper acts per sub-env, so
under gymnasium's autoreset the reset observation of a new episode carries that episode's mask.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lightrl.errors import EnvError

#: The Dict key of the mask in an observation, and the name of the exported mask input.
MASK_KEY = "action_mask"
#: The key of the env's own observation in a Dict made by :class:`ActionMaskObservation`.
OBS_KEY = "obs"
#: The mask sources, in order of precedence.
MASK_SOURCES = ("obs", "info", "method")


class ActionMask(spaces.Box):
    """A bool vector, one entry per action value: True where the action is valid.

    For a Discrete action space it has ``n`` entries; for a MultiDiscrete one ``sum(nvec)``, the values of
    each dimension in turn (sb3-contrib's layout), and :attr:`groups` holds the sizes of the dimensions.

    Args:
        groups: The number of values of each action dimension (``[n]`` for a Discrete space).

    Example::

        >>> ActionMask([3, 2]).shape
        (5,)
    """

    def __init__(self, groups: Any):
        self.groups = tuple(int(n) for n in np.atleast_1d(groups))
        super().__init__(0, 1, (sum(self.groups),), dtype=np.bool_)

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """All actions valid (a mask that any policy can act on)."""
        return np.ones(self.shape, dtype=np.bool_)

    def __repr__(self) -> str:
        return f"ActionMask({list(self.groups)})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ActionMask) and other.groups == self.groups


def mask_groups(action_space: spaces.Space) -> tuple[int, ...] | None:
    """The sizes of the mask's groups for ``action_space``: ``(n,)`` for Discrete, ``nvec`` for a 1-D MultiDiscrete; None otherwise."""
    if isinstance(action_space, spaces.Discrete):
        return (int(action_space.n),)
    if isinstance(action_space, spaces.MultiDiscrete) and len(action_space.shape) == 1:
        return tuple(int(n) for n in action_space.nvec)
    return None


def is_masked(space: spaces.Space) -> bool:
    """Whether observations of ``space`` carry an action mask (a Dict with an :class:`ActionMask` entry)."""
    return isinstance(space, spaces.Dict) and isinstance(space.spaces.get(MASK_KEY), ActionMask)


def unmasked_space(space: spaces.Dict) -> spaces.Space:
    """The observation space without its mask: the env's own (the ``"obs"`` entry when it is the only other one), or the Dict's other entries."""
    rest = {key: part for key, part in space.spaces.items() if key != MASK_KEY}
    if list(rest) == [OBS_KEY]:
        return rest[OBS_KEY]
    return spaces.Dict(rest)


def split_mask(obs: dict[str, Any], unwrap: bool) -> tuple[Any, Any]:
    """``(observation without the mask, mask)`` of a batch of masked observations; ``unwrap``: take the ``"obs"`` entry alone."""
    if unwrap:
        return obs[OBS_KEY], obs[MASK_KEY]
    return {key: value for key, value in obs.items() if key != MASK_KEY}, obs[MASK_KEY]


def find_mask_source(env: gym.Env, obs: Any, info: dict[str, Any]) -> str | None:
    """Where ``env`` gives its mask (``"obs"``, ``"info"`` or ``"method"``, in that precedence), from a ``reset()``'s ``obs`` and ``info``; None if nowhere."""
    if isinstance(env.observation_space, spaces.Dict) and MASK_KEY in env.observation_space.spaces:
        return "obs"
    if isinstance(info, dict) and MASK_KEY in info:
        return "info"
    try:
        method = env.get_wrapper_attr("action_masks")
    except AttributeError:
        return None
    return "method" if callable(method) else None


def source_name(source: str) -> str:
    """How a mask source is written in messages."""
    return {"obs": f"observation[{MASK_KEY!r}]", "info": f"info[{MASK_KEY!r}]", "method": "action_masks()"}[source]


def check_mask(mask: Any, groups: tuple[int, ...], env_id: str, source: str) -> np.ndarray:
    """``mask`` as a bool vector, after checking its shape and dtype.

    Raises:
        EnvError: for a mask that is not a vector of ``sum(groups)`` bools (or 0/1 integers).
    """
    array = np.asarray(mask)
    size = sum(groups)
    layout = f"{size} entries, one per action" if len(groups) == 1 else f"{size} entries, the values of each of the {len(groups)} action dimensions in turn"
    if array.shape != (size,):
        raise EnvError(f"env {env_id!r} gave an action mask of shape {array.shape} in {source_name(source)}; it must be a vector of {layout}, shape ({size},).")
    if array.dtype.kind == "b":
        return array
    mask = array.astype(np.bool_)
    if array.dtype.kind not in "iu" or (mask != array).any():  # integers other than 0 and 1 differ from their bool
        what = f"dtype {array.dtype}" + (" with values other than 0 and 1" if array.dtype.kind in "iu" else "")
        raise EnvError(f"env {env_id!r} gave an action mask of {what} in {source_name(source)}; give bools (or integers 0 and 1), True where the action is valid.")
    return mask


class ActionMaskObservation(gym.Wrapper):
    """Carries the env's action mask inside its observations, as the ``"action_mask"`` entry of a Dict.

    With the mask in a Dict observation already (``source="obs"``) the entry becomes a bool :class:`ActionMask`;
    otherwise the observation becomes ``{"action_mask": mask, "obs": observation}`` (or the env's Dict with an
    ``"action_mask"`` entry added), the mask read from ``info`` or from ``action_masks()`` after each
    ``reset()`` and ``step()``. Each mask's shape and dtype are checked.

    Args:
        env: The env (with its wrappers).
        source: ``"obs"``, ``"info"`` or ``"method"`` (see :func:`find_mask_source`).
        env_id: The env's id, for error messages.
    """

    def __init__(self, env: gym.Env, source: str, env_id: str = ""):
        super().__init__(env)
        if source not in MASK_SOURCES:
            raise ValueError(f"source must be one of {MASK_SOURCES}, got {source!r}.")
        groups = mask_groups(env.action_space)
        if groups is None:
            raise ValueError(f"action masks need Discrete or 1-D MultiDiscrete actions, got {env.action_space}.")
        self.source, self.groups, self.env_id = source, groups, env_id or str(getattr(env.spec, "id", type(env.unwrapped).__name__))
        self.observation_space = masked_observation_space(env.observation_space, env.action_space)
        self._inner_dict = isinstance(env.observation_space, spaces.Dict)

    def observation(self, obs: Any, info: dict[str, Any]) -> dict[str, Any]:
        """The observation with the mask of this ``reset()`` or ``step()``."""
        if self.source == "obs":
            raw = obs.get(MASK_KEY) if isinstance(obs, dict) else None
        elif self.source == "info":
            raw = info.get(MASK_KEY)
            if raw is None:
                raise EnvError(f"env {self.env_id!r} gave no info[{MASK_KEY!r}] after a reset() or step(), though its first reset() did; give it every time.")
        else:
            raw = self.env.get_wrapper_attr("action_masks")()
        mask = check_mask(raw, self.groups, self.env_id, self.source)
        if self._inner_dict:
            return {**obs, MASK_KEY: mask}
        return {MASK_KEY: mask, OBS_KEY: obs}

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return self.observation(obs, info), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.observation(obs, info), reward, terminated, truncated, info


def masked_observation_space(observation_space: spaces.Space, action_space: spaces.Space) -> spaces.Dict:
    """The observation space :class:`ActionMaskObservation` gives: a Dict with a bool ``"action_mask"`` entry."""
    mask = ActionMask(mask_groups(action_space))
    if isinstance(observation_space, spaces.Dict):
        return spaces.Dict({**observation_space.spaces, MASK_KEY: mask})
    return spaces.Dict({MASK_KEY: mask, OBS_KEY: observation_space})


def probe_action_mask(env: gym.Env, env_id: str, action_masking: bool | None) -> str | None:
    """Where ``env`` gives its action mask, after checking one (from a ``reset()``); None where masking is off.

    Args:
        env: One env, as the algorithm's sub-envs are made (it is reset once).
        env_id: Its id, for messages.
        action_masking: The hyperparameter: None (on if the env gives a mask), True (it must) or False.

    Raises:
        ValueError: for ``action_masking=True`` on an action space that cannot be masked, or an env without a mask.
        EnvError: for a mask of the wrong shape or dtype.
    """
    if action_masking is False:
        return None
    groups = mask_groups(env.action_space)
    if groups is None:
        if action_masking:
            raise ValueError(f"action_masking=True needs Discrete or 1-D MultiDiscrete actions, but env {env_id!r} has {env.action_space}; set action_masking=False.")
        return None
    space = env.observation_space
    if isinstance(space, spaces.Dict) and MASK_KEY in space.spaces and space.spaces[MASK_KEY].shape != (sum(groups),):
        raise EnvError(f"env {env_id!r} declares observation[{MASK_KEY!r}] as {space.spaces[MASK_KEY]}; for {env.action_space} it must have shape ({sum(groups)},).")
    obs, info = env.reset()
    source = find_mask_source(env, obs, info)
    if source is None:
        if action_masking:
            raise ValueError(
                f"action_masking=True, but env {env_id!r} gives no action mask: give an {MASK_KEY!r} entry in its Dict observations, "
                f"info[{MASK_KEY!r}], or an action_masks() method; or set action_masking=None."
            )
        return None
    ActionMaskObservation(env, source, env_id).observation(obs, info)  # checks the mask's shape and dtype
    return source


def mask_wrapper_spec(source: str, env_id: str) -> dict[str, Any]:
    """The ``env_wrappers`` entry (plain data, see :func:`lightrl.envs.vector.wrapper_spec`) of :class:`ActionMaskObservation`."""
    return {"class_path": f"{__name__}.{ActionMaskObservation.__qualname__}", "init_args": {"source": source, "env_id": env_id}}


def no_valid_action(mask: np.ndarray, groups: tuple[int, ...]) -> np.ndarray:
    """Indices of the rows of a ``[N, sum(groups)]`` bool mask with no valid value in some group (no valid action)."""
    if len(groups) == 1:
        return np.flatnonzero(~mask.any(axis=1))
    bounds = np.cumsum((0,) + groups[:-1])
    return np.flatnonzero((np.logical_or.reduceat(mask, bounds, axis=1) == 0).any(axis=1))
