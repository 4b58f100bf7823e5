"""Checks that an algorithm supports an environment's spaces, with errors that say what to do."""

from __future__ import annotations

from gymnasium import spaces


def check_space(algo: str, kind: str, space: spaces.Space, allowed: tuple[type[spaces.Space], ...], hint: str = "") -> None:
    """Raise a ValueError naming the algorithm and the space if ``space`` is not one of ``allowed``.

    Args:
        algo: Algorithm name, e.g. ``"PPO"``.
        kind: ``"observation"`` or ``"action"``.
        space: The env's space.
        allowed: Space classes the algorithm supports.
        hint: What to use instead, appended to the message.
    """
    if isinstance(space, allowed):
        if isinstance(space, spaces.Box) and kind == "observation" and len(space.shape) not in (1, 3):
            raise ValueError(
                f"{algo} does not support the {kind} space {space}: Box observations must be flat vectors "
                "or images shaped (C, H, W). Flatten or reshape them with a gymnasium wrapper."
            )
        if isinstance(space, spaces.Box) and kind == "action" and len(space.shape) != 1:
            raise ValueError(f"{algo} does not support the {kind} space {space}: Box actions must be 1-D.")
        return
    names = ", ".join(cls.__name__ for cls in allowed)
    message = f"{algo} does not support the {kind} space {space}; it supports {names}."
    raise ValueError(f"{message} {hint}".strip())
