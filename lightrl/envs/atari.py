"""The standard DQN/PPO Atari preset (Mnih et al. 2015; Machado et al. 2018), as used by CleanRL and SB3.

``ale_py`` is imported only when an Atari env is asked for, so importing this module stays cheap.
The preprocessing is done by small wrappers of our own rather than ``gymnasium.wrappers.AtariPreprocessing``:
that wrapper needs ``opencv-python``, which is not a lightrl dependency, and its ``terminal_on_life_loss``
resets the whole game after every life.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

NOOP_MAX = 30
FRAME_SKIP = 4
SCREEN_SIZE = 84
FRAME_STACK = 4

#: ``gym.make`` arguments the preset fixes itself: frame skipping and grayscale are done here.
_FIXED_KWARGS = {"frameskip": 1, "obs_type": "grayscale"}
#: ale-py's ``AtariVectorEnv`` threading arguments. A single env ignores them: the envs made here (the space
#: probe, evaluation, ``vectorization="sync"``) share ``env_kwargs`` with the vector env.
VECTOR_ONLY_KWARGS = ("num_threads", "thread_affinity_offset")

_INSTALL_HINT = "Atari environments need ale-py: run `pip install lightrl[atari]` (or `pip install ale-py`)."


def _import_ale() -> Any:
    """Import ``ale_py`` and register its env ids with gymnasium.

    Raises:
        ImportError: if ale-py is not installed, with the command that installs it.
    """
    try:
        import ale_py
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    gym.register_envs(ale_py)
    return ale_py


def _is_ale_entry_point(entry_point: Any) -> bool:
    """Whether a registry entry point (``"module:attr"`` or a callable) lives in ``ale_py``."""
    path = entry_point if isinstance(entry_point, str) else getattr(entry_point, "__module__", "")
    return path.split(":")[0].split(".")[0] == "ale_py"


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is registered by ale_py, e.g. ``"ALE/Pong-v5"`` or ``"PongNoFrameskip-v4"``.

    Never raises: returns False for unknown ids (the caller reports them) and when ale-py is not installed.

    Example::

        >>> is_atari("ALE/Breakout-v5"), is_atari("CartPole-v1")
        (True, False)
    """
    spec = gym.envs.registry.get(env_id)
    if spec is None:  # ALE ids are only registered once ale_py is imported
        try:
            _import_ale()
        except ImportError:
            return False
        spec = gym.envs.registry.get(env_id)
    return spec is not None and _is_ale_entry_point(spec.entry_point)


def make_atari_env(env_id: str, **env_kwargs: Any) -> gym.Env:
    """Create an Atari env with the standard DQN/PPO preprocessing (CleanRL ``ppo_atari.py``, SB3 ``AtariWrapper``).

    From the inside out: episode statistics on the raw game, up to 30 no-ops on reset, the action repeated
    for 4 frames with a max over the last 2, a life loss reported as ``terminated`` (without resetting the
    game), FIRE pressed on reset when the game has it, 84x84 grayscale frames, rewards clipped to their sign,
    and the last 4 frames stacked. Observations are ``uint8`` of shape ``(4, 84, 84)``.

    Sticky actions are off unless ``repeat_action_probability`` is passed (``-v5`` ids default to 0.25).
    ``info["episode"]`` comes only at real game over: ``"r"`` is the unclipped game score and ``"l"`` the
    number of emulator frames (4 per agent step), as with CleanRL's and SB3's Atari setups.

    Args:
        env_id: An id registered by ale_py, e.g. ``"ALE/Pong-v5"`` or ``"BreakoutNoFrameskip-v4"``.
        **env_kwargs: Further keyword arguments for ``gym.make``, e.g. ``render_mode="rgb_array"``; those of
            :data:`VECTOR_ONLY_KWARGS` (ale-py's vector env's threads) are ignored.

    Raises:
        ImportError: if ale-py is not installed.
        ValueError: if ``env_id`` is not an Atari id, or ``env_kwargs`` sets ``frameskip`` or ``obs_type``
            to something other than what the preset needs.

    Example::

        env = make_atari_env("ALE/Breakout-v5")
        obs, info = env.reset(seed=0)  # obs.shape == (4, 84, 84)
    """
    _import_ale()
    if env_id in gym.envs.registry and not is_atari(env_id):
        raise ValueError(f"{env_id!r} is not an Atari env (not registered by ale_py); use gym.make for it.")
    for key, value in _FIXED_KWARGS.items():
        if env_kwargs.get(key, value) != value:
            raise ValueError(
                f"make_atari_env sets {key}={value!r} itself (its wrappers do that part of the preprocessing), "
                f"got {key}={env_kwargs[key]!r}. Use gym.make directly for a different setup."
            )
    env_kwargs = {key: value for key, value in env_kwargs.items() if key not in VECTOR_ONLY_KWARGS}
    env = gym.make(env_id, **{"repeat_action_probability": 0.0, **env_kwargs, **_FIXED_KWARGS})
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = NoopReset(env, noop_max=NOOP_MAX)
    env = MaxAndSkip(env, skip=FRAME_SKIP)
    env = EpisodicLife(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    env = AreaResize(env, SCREEN_SIZE)
    env = gym.wrappers.TransformReward(env, sign_reward)
    return gym.wrappers.FrameStackObservation(env, FRAME_STACK)


def sign_reward(reward: SupportsFloat) -> float:
    """Clip a reward to -1, 0 or 1 by its sign (Mnih et al. 2015)."""
    return float(np.sign(float(reward)))


def area_weights(size_in: int, size_out: int) -> np.ndarray:
    """Matrix ``(size_out, size_in)`` that resamples a 1-D signal by averaging over pixel areas.

    Row ``j`` weighs each input pixel by its overlap with output pixel ``j``'s footprint, so applying it to
    both axes of an image matches OpenCV's ``INTER_AREA`` downscaling.
    """
    edges = np.arange(size_out + 1) * (size_in / size_out)
    pixels = np.arange(size_in + 1)
    overlap = np.minimum(edges[1:, None], pixels[None, 1:]) - np.maximum(edges[:-1, None], pixels[None, :-1])
    return (np.clip(overlap, 0.0, None) * (size_out / size_in)).astype(np.float32)


def sparse_rows(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights ``(rows, k)`` of each row's run of nonzero entries, ``k`` the longest run.

    With ``index, w = sparse_rows(weights)``, ``(w[:, :, None] * x[index]).sum(1)`` equals ``weights @ x``.
    """
    k = int((weights > 0).sum(axis=1).max())
    index = (weights > 0).argmax(axis=1)[:, None] + np.arange(k)
    inside = index < weights.shape[1]
    index = np.where(inside, index, 0)
    return index, np.where(inside, np.take_along_axis(weights, index, axis=1), 0.0).astype(weights.dtype)


class NoopReset(gym.Wrapper):
    """On reset, take a random number (1 to ``noop_max``) of no-op actions, for varied starting states.

    Args:
        env: An ALE env whose action 0 is NOOP.
        noop_max: Most no-ops taken.
    """

    def __init__(self, env: gym.Env, noop_max: int = NOOP_MAX):
        super().__init__(env)
        if env.unwrapped.get_action_meanings()[0] != "NOOP":
            raise ValueError(f"NoopReset needs action 0 to be NOOP, got {env.unwrapped.get_action_meanings()[0]!r}.")
        self.noop_max = noop_max

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        for _ in range(self.np_random.integers(1, self.noop_max + 1)):
            obs, _, terminated, truncated, step_info = self.env.step(0)
            info = {**info, **step_info}
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        return obs, info


class MaxAndSkip(gym.Wrapper):
    """Repeat each action for ``skip`` frames, sum the rewards, and return the max of the last two frames.

    The max removes the flicker of sprites that the Atari draws only on every other frame.
    """

    def __init__(self, env: gym.Env, skip: int = FRAME_SKIP):
        super().__init__(env)
        self.skip = skip
        self._frames: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._frames = (obs, obs)
        return obs, info

    def step(self, action: Any):
        total_reward = 0.0
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            self._frames = (self._frames[1], obs)
            if terminated or truncated:
                break
        return np.maximum(*self._frames), total_reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """Report a life loss as ``terminated=True``, but only reset the game when it is really over.

    After a life loss, ``reset()`` takes one no-op step and play goes on from there (SB3's ``EpisodicLifeEnv``),
    which helps value estimation (Mnih et al. 2015). Passing a ``seed`` to ``reset()`` always starts a new game.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        # Some games reach 0 lives a few frames before game over: leave that to the real termination.
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self._game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self._game_over = False
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE on reset, for games that stand still until it is pressed (e.g. Breakout after each life)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.fire_action = env.unwrapped.get_action_meanings().index("FIRE")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, _ = self.env.step(self.fire_action)
        if terminated or truncated:
            obs, info = self.env.reset(options=options)
        return obs, info


class AreaResize(gym.ObservationWrapper):
    """Resize 2-D ``uint8`` frames to ``size`` x ``size`` by area averaging, without OpenCV."""

    def __init__(self, env: gym.Env, size: int = SCREEN_SIZE):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or space.dtype != np.uint8 or len(space.shape) != 2:
            raise ValueError(f"AreaResize needs 2-D uint8 Box observations (grayscale frames), got {space}.")
        self._row_index, self._row_weights = sparse_rows(area_weights(space.shape[0], size))
        self._col_index, self._col_weights = sparse_rows(area_weights(space.shape[1], size))
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        # Gathers instead of matrix products: BLAS's threads stall here when torch's intra-op threads are busy.
        tall = (self._row_weights[:, :, None] * observation[self._row_index]).sum(axis=1)
        resized = (self._col_weights * tall[:, self._col_index]).sum(axis=2)
        return np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)  # halves round up, as in OpenCV
