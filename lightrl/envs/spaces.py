"""Checks that an algorithm supports an environment's spaces, with errors that say what to do.

Observations: Box (flat vectors, or ``(C, H, W)`` uint8 images), Discrete and 1-D MultiDiscrete (one-hot
encoded), MultiBinary, and Dict of those one level deep. Actions: what each algorithm declares
(``RLModule.action_spaces``). Everything else is refused before any env is stepped, by a ValueError that
names the algorithm, the space and the gymnasium wrapper that would help.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from lightrl.nn.cnn import MIN_IMAGE_SIZE
from lightrl.nn.encoders import is_image_space

#: What turns an observation space lightrl does not take into one it does.
FLATTEN_HINT = "Wrap the env with gymnasium.wrappers.FlattenObservation to turn the observations into a flat Box."
#: For spaces FlattenObservation cannot flatten (variable size, or text).
ENCODE_HINT = (
    "gymnasium.wrappers.FlattenObservation cannot flatten it: write a gymnasium.ObservationWrapper that encodes "
    "the observations as a fixed-size Box (or a Dict of Boxes)."
)
#: For action spaces no algorithm takes.
ACTION_HINT = (
    "Expose the actions as one of those: a gymnasium.ActionWrapper can map a MultiDiscrete or Box action "
    "onto the env's own action."
)


def check_space(algo: str, kind: str, space: spaces.Space, allowed: tuple[type[spaces.Space], ...], hint: str = "") -> None:
    """Raise a ValueError naming the algorithm and the space if ``space`` is not one of ``allowed``.

    Args:
        algo: Algorithm name, e.g. ``"PPO"``.
        kind: ``"observation"`` or ``"action"``.
        space: The env's space.
        allowed: Space classes the algorithm supports.
        hint: What to use instead, appended to the message.
    """
    if kind == "observation":
        check_observation_space(algo, space, allowed)
    else:
        check_action_space(algo, space, allowed, hint)


def check_observation_space(
    algo: str,
    space: spaces.Space,
    allowed: tuple[type[spaces.Space], ...] = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict),
    images: bool = True,
) -> None:
    """Raise a ValueError unless ``algo`` can take observations from ``space``.

    Args:
        algo: Algorithm name, e.g. ``"PPO"``.
        space: The env's observation space.
        allowed: Space classes the algorithm supports (a Dict's parts may be any of the others).
        images: Whether ``(C, H, W)`` uint8 image Boxes are supported (not by SAC and TD3).
    """
    what = f"{algo} does not support the observation space {space}"
    if isinstance(space, spaces.Dict) and spaces.Dict in allowed:
        if not space.spaces:
            raise ValueError(f"{what}: the Dict has no parts.")
        parts = tuple(cls for cls in allowed if cls is not spaces.Dict)
        for key, part in space.spaces.items():
            if isinstance(part, spaces.Dict):
                raise ValueError(f"{what}: its part {key!r} is a Dict, and lightrl takes Dicts one level deep. {FLATTEN_HINT}")
            check_part(f"{what}: its part {key!r}", part, parts, images)
        return
    check_part(what, space, allowed, images)


def check_part(what: str, space: spaces.Space, allowed: tuple[type[spaces.Space], ...], images: bool) -> None:
    """Raise ``what`` and the reason unless ``space`` (an observation space, or a Dict's part) is supported."""
    if not isinstance(space, allowed):
        names = ", ".join(cls.__name__ for cls in allowed)
        flattenable = isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Tuple, spaces.Dict))
        raise ValueError(f"{what}; it supports {names}. {FLATTEN_HINT if flattenable else ENCODE_HINT}")
    if isinstance(space, spaces.MultiDiscrete) and len(space.shape) != 1:
        raise ValueError(f"{what}: MultiDiscrete observations must be 1-D. {FLATTEN_HINT}")
    if not isinstance(space, spaces.Box):
        return
    if is_image_space(space):
        if not images:
            raise ValueError(f"{what}: it takes no image observations; use PPO, A2C or DQN for images, or {FLATTEN_HINT[0].lower()}{FLATTEN_HINT[1:]}")
        if min(space.shape[1:]) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"{what}: images must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} pixels (the Nature-CNN's smallest input), "
                f"got {space.shape[1]}x{space.shape[2]}. Enlarge them with a gymnasium.ObservationWrapper, or {FLATTEN_HINT[0].lower()}{FLATTEN_HINT[1:]}"
            )
        return
    if len(space.shape) == 1 or (images and len(space.shape) == 3):
        return
    shapes = "flat vectors or images shaped (C, H, W)" if images else "flat vectors"
    raise ValueError(f"{what}: Box observations must be {shapes}. {FLATTEN_HINT}")


def check_action_space(algo: str, space: spaces.Space, allowed: tuple[type[spaces.Space], ...], hint: str = "") -> None:
    """Raise a ValueError unless ``space`` is one of the ``allowed`` action spaces, 1-D where it has a shape.

    Args:
        algo: Algorithm name, e.g. ``"PPO"``.
        space: The env's action space.
        allowed: Space classes the algorithm supports.
        hint: What to use instead, appended to the message (a default hint if empty).
    """
    what = f"{algo} does not support the action space {space}"
    if not isinstance(space, allowed):
        names = ", ".join(cls.__name__ for cls in allowed)
        raise ValueError(f"{what}; it supports {names}. {hint or ACTION_HINT}".strip())
    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)) and len(space.shape) != 1:
        raise ValueError(f"{what}: {type(space).__name__} actions must be 1-D. Reshape them with a gymnasium.ActionWrapper.")
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)) and np.any(space.start):
        # The policies' actions are indices from 0 (what the categorical heads and the Q-values index).
        raise ValueError(
            f"{what}: {type(space).__name__} actions must start at 0 (start={np.asarray(space.start).tolist()}). "
            "Shift them with a gymnasium.ActionWrapper."
        )
