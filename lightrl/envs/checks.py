"""Checks run before any training: gymnasium's env checker, and what video recording needs."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import gymnasium as gym
from gymnasium.utils.env_checker import check_env

from lightrl.envs.vector import make_env


def run_env_checker(env_id: str, env_kwargs: dict[str, Any] | None = None) -> list[str]:
    """Run gymnasium's env checker on a fresh ``env_id`` (unwrapped, as the checker expects).

    Returns:
        The checker's warnings, which are also re-issued as Python warnings.

    Raises:
        ValueError: naming the env and quoting what the checker found, if the env violates the API.
    """
    make_env(env_id, env_kwargs).close()  # an unknown id gets lightrl's error, not the checker's
    env = gym.make(env_id, disable_env_checker=True, **(env_kwargs or {}))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped, skip_render_check=True)
    except Exception as err:  # the checker raises AssertionError, TypeError, ValueError, ... as it finds them
        raise ValueError(
            f"check_env: gymnasium's env checker rejected {env_id!r}: {type(err).__name__}: {err}. "
            "Fix the env (see https://gymnasium.farama.org/api/utils/#gymnasium.utils.env_checker.check_env), "
            "or set check_env=False to skip the check."
        ) from None
    finally:
        env.close()
    found = [str(w.message) for w in caught]
    for message in found:
        warnings.warn(f"check_env ({env_id}): {message}", stacklevel=2)
    return found


def require_video_support() -> None:
    """Raise ``ValueError`` if gymnasium's ``RecordVideo`` cannot write mp4 files here (it needs moviepy)."""
    if importlib.util.find_spec("moviepy") is None:
        raise ValueError("capture_video=True needs the moviepy package to write mp4 files: pip install 'lightrl[video]'.")
