"""``vectorization="native"``: an env's own vector implementation (gymnasium's ``vector_entry_point``), in SAME_STEP mode.

A native vector env steps all its sub-envs in one call (numpy for CartPole, C++ threads for ale-py's Atari)
where :class:`~gymnasium.vector.SyncVectorEnv` loops over them in Python. lightrl steps every vector env in
SAME_STEP autoreset mode, so each native env is used in that mode:

- CartPole (``CartPole-v0``/``-v1``): gymnasium's ``CartPoleVectorEnv`` only knows NEXT_STEP mode.
  :class:`SameStepCartPole` resets an ended sub-env inside the step that ended it, drawing its new state
  exactly as ``CartPoleVectorEnv`` would have drawn it on the next step.
- Atari (ids registered by ale_py): ale-py's ``AtariVectorEnv``, asked for SAME_STEP, with lightrl's
  Atari preset (:class:`AtariVector`).
- Any other id with a ``vector_entry_point``: made with ``autoreset_mode=SAME_STEP``; refused if its
  vector env does not take that argument or reports another mode.
"""

from __future__ import annotations

import inspect
import pickle
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

from lightrl.envs.atari import FRAME_SKIP, FRAME_STACK, NOOP_MAX, SCREEN_SIZE, VECTOR_ONLY_KWARGS, is_atari
from lightrl.envs.autoreset import AUTORESET_MODE, EpisodeCounter, same_step_info

NativeFactory = Callable[[int], gym.vector.VectorEnv]

#: ``"auto"`` steps CartPole natively from this many sub-envs: below it, a Python loop over the sub-envs is cheaper
#: than the vector env's fixed cost per call (docs/scaling.md has the figures).
AUTO_NATIVE_CARTPOLE_MIN_ENVS = 4


def first_seed(seed: int | list[int] | None) -> int | None:
    """The one seed of a vector env that draws every sub-env from one generator: the first of ``env_seeds``."""
    return seed[0] if isinstance(seed, (list, tuple)) else seed


class SameStepCartPole(CartPoleVectorEnv):
    """gymnasium's ``CartPoleVectorEnv`` (one numpy call for all sub-envs) in SAME_STEP autoreset mode.

    A sub-env whose episode ends is reset in the same step: the step returns its reset observation,
    ``info["final_obs"]`` the last one, and ``info["final_info"]["episode"]`` the episode's return and length.
    The reset state is the draw ``CartPoleVectorEnv`` makes at the start of its next step (NEXT_STEP mode), so
    the stream equals the NEXT_STEP one with each reset step folded into the step that ended the episode.

    All sub-envs draw from one generator, seeded by the first seed given to :meth:`reset`.
    """

    metadata = {**CartPoleVectorEnv.metadata, "autoreset_mode": AUTORESET_MODE}

    def __init__(self, num_envs: int = 1, **kwargs: Any):
        super().__init__(num_envs, **kwargs)
        self.episodes = EpisodeCounter(num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        self.episodes.reset()
        return super().reset(seed=first_seed(seed), options=options)

    def step(self, action: np.ndarray):
        # prev_done is always False here (ended sub-envs are reset below), so CartPoleVectorEnv resets none itself.
        obs, rewards, terminated, truncated, info = super().step(action)
        rewards = rewards.astype(np.float64)
        done = terminated | truncated
        final_info = self.episodes.step(rewards, done)
        if final_info is None:
            return obs, rewards, terminated, truncated, info
        ended = np.flatnonzero(done)
        self.state[:, ended] = self.np_random.uniform(low=self.low, high=self.high, size=(4, ended.size))
        self.steps[ended] = 0
        self.prev_done[:] = False
        final_obs, obs = obs, obs.copy()
        obs[ended] = self.state[:, ended].T
        return obs, rewards, terminated, truncated, same_step_info(final_obs, done, final_info)

    def get_state(self) -> dict[str, Any]:
        """The physics, step counts, generator and episode counters, as pickled bytes."""
        return {"envs": pickle.dumps((self.state, self.steps, self.np_random.bit_generator.state, self.episodes.returns, self.episodes.lengths))}

    def set_state(self, state: dict[str, Any]) -> bool:
        """Restore what :meth:`get_state` captured; False if it is not that, or of another number of sub-envs."""
        loaded = pickle.loads(state["envs"])
        if not (isinstance(loaded, tuple) and len(loaded) == 5 and len(loaded[1]) == self.num_envs):
            return False
        cart_state, steps, rng, returns, lengths = loaded
        self.state, self.steps, self.episodes.returns, self.episodes.lengths = cart_state, steps, returns, lengths
        self.np_random.bit_generator.state = rng
        self.prev_done = np.zeros(self.num_envs, dtype=np.bool_)
        return True


#: ``AtariVectorEnv`` arguments that lightrl's Atari preset fixes (see :class:`AtariVector`).
ATARI_PRESET = {
    "frameskip": FRAME_SKIP, "stack_num": FRAME_STACK, "img_height": SCREEN_SIZE, "img_width": SCREEN_SIZE, "grayscale": True,
    "maxpool": True, "noop_max": NOOP_MAX, "use_fire_reset": True, "episodic_life": False, "life_loss_info": False,
    "reward_clipping": False, "autoreset_mode": AUTORESET_MODE, "batch_size": 0,
}  # fmt: skip
#: ``AtariVectorEnv`` arguments a user may set through ``env_kwargs``.
ATARI_USER_KWARGS = ("repeat_action_probability", "full_action_space", "max_num_frames_per_episode", *VECTOR_ONLY_KWARGS)


class AtariVector(gym.vector.VectorEnv):
    """ale-py's ``AtariVectorEnv`` (emulators and preprocessing in C++ threads) with lightrl's Atari preset.

    As :func:`~lightrl.envs.atari.make_atari_env`: 84x84 grey frames, 4 stacked, each action repeated for 4
    frames with a max over the last 2, up to 30 no-ops and FIRE on reset, sticky actions off
    (``repeat_action_probability=0``, CleanRL's choice; ``-v5`` ids would default to 0.25), rewards clipped
    to their sign, a life loss reported as ``terminated`` while the game goes on, FIRE pressed again after
    a life loss in games that have it, and ``info["final_info"]["episode"]`` only at game over, with the raw
    game score ``"r"`` and ``"l"`` in emulator frames (4 per agent step).

    Where ale-py's C++ differs from the Python wrappers: on reset, FIRE is one frame and the no-ops follow
    it; the first stack is padded with black frames rather than copies of the first; the last frame of a
    game is grabbed before the frame skip's end; and OpenCV's area resize rounds some pixels one grey level
    apart. After a life loss, the Python preset takes a NOOP and a FIRE step inside ``reset()``; here the
    agent's next action is replaced by FIRE (the stored action stays the agent's), so that a deterministic
    policy that never fires cannot stall a game such as Breakout until its time limit. Frames, rewards and
    terminations are otherwise the same (``tests/test_atari.py``).

    Args:
        env_id: An id registered by ale_py, e.g. ``"ALE/Breakout-v5"``.
        num_envs: Sub-envs.
        env_kwargs: Any of :data:`ATARI_USER_KWARGS`.
    """

    def __init__(self, env_id: str, num_envs: int, env_kwargs: dict[str, Any] | None = None):
        from ale_py.vector_env import AtariVectorEnv

        spec = gym.spec(env_id)
        kwargs = {
            "repeat_action_probability": 0.0,
            "full_action_space": spec.kwargs.get("full_action_space", False),
            "max_num_frames_per_episode": spec.kwargs.get("max_num_frames_per_episode", 108_000),
            **(env_kwargs or {}),
        }
        self.ale = AtariVectorEnv(spec.kwargs["game"], num_envs, **kwargs, **ATARI_PRESET)
        self.num_envs = num_envs
        self.single_observation_space = self.ale.single_observation_space
        self.single_action_space = self.ale.single_action_space
        self.observation_space = self.ale.observation_space
        self.action_space = self.ale.action_space
        self.metadata = {"autoreset_mode": AUTORESET_MODE}
        self.episodes = EpisodeCounter(num_envs)
        self._lives = np.zeros(num_envs, dtype=np.int32)
        actions = [action.name for action in self.ale.ale.get_action_set()]
        self._fire = actions.index("FIRE") if ATARI_PRESET["use_fire_reset"] and "FIRE" in actions else None
        self._fire_next = np.zeros(num_envs, dtype=bool)  # sub-envs that lost a life in the last step

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        self.episodes.reset()
        obs, info = self.ale.reset(seed=None if seed is None else np.asarray(seed, dtype=np.int64), options=options)
        self._lives = info["lives"].copy()
        self._fire_next[:] = False
        return obs, {}

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions, dtype=np.int64)
        if self._fire_next.any():
            actions = np.where(self._fire_next, self._fire, actions)
        obs, rewards, game_over, time_limit, info = self.ale.step(actions)
        ended = game_over | time_limit  # only these are reset by ale-py (episodic_life=False)
        lives = info["lives"]
        life_lost = ~ended & (lives < self._lives) & (lives > 0)  # as ale-py's own life-loss signal
        self._lives = lives.copy()
        if self._fire is not None:
            self._fire_next = life_lost
        rewards = rewards.astype(np.float64)
        final_info = self.episodes.step(rewards, ended, FRAME_SKIP)
        terminated = game_over | life_lost
        done = terminated | time_limit
        if not done.any():
            return obs, np.sign(rewards), terminated, time_limit, {}
        final_obs = obs.copy()  # a life lost: the game goes on, its last observation is the current one
        if ended.any():
            final_obs[ended] = info["final_obs"][ended]
        return obs, np.sign(rewards), terminated, time_limit, same_step_info(final_obs, done, final_info)

    def get_state(self) -> dict[str, Any]:
        """Always ``{"error": reason}``: ale-py's emulators cannot be captured."""
        return {"error": "ale-py's AtariVectorEnv keeps its emulators in C++ and cannot save them"}

    def set_state(self, state: dict[str, Any]) -> bool:
        """The emulators' state cannot be restored: returns False."""
        return False

    def close_extras(self, **kwargs: Any) -> None:
        self.ale.close()


def generic_native(env_id: str, env_kwargs: dict[str, Any]) -> NativeFactory:
    """A factory of ``env_id``'s own vector env in SAME_STEP mode, for ids lightrl has no adapter for.

    Raises:
        ValueError: if the vector env does not accept ``autoreset_mode=SAME_STEP``.
    """

    def make(num_envs: int) -> gym.vector.VectorEnv:
        try:
            envs = gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", autoreset_mode=AUTORESET_MODE, **env_kwargs)
        except TypeError as err:
            raise ValueError(
                f"vectorization='native': {env_id!r}'s vector env does not take autoreset_mode=SAME_STEP ({err}), "
                "which lightrl needs; use vectorization='sync'."
            ) from None
        if envs.metadata.get("autoreset_mode") != AUTORESET_MODE:
            envs.close()
            raise ValueError(
                f"vectorization='native': {env_id!r}'s vector env reports autoreset_mode={envs.metadata.get('autoreset_mode')}, "
                "not SAME_STEP, which lightrl needs; use vectorization='sync'."
            )
        return NativeEpisodeStatistics(envs)

    return make


class NativeEpisodeStatistics(gym.vector.VectorWrapper):
    """Adds ``info["final_info"]["episode"]`` (return and length) to a SAME_STEP vector env that reports ``final_obs`` only."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        self.episodes = EpisodeCounter(env.num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        self.episodes.reset()
        return self.env.reset(seed=first_seed(seed), options=options)

    def step(self, actions: np.ndarray):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        final_info = self.episodes.step(rewards, done)
        if final_info is not None and "final_info" not in info:
            info = {**info, "final_info": final_info, "_final_info": final_info["_episode"]}
        return obs, rewards, terminated, truncated, info


def native_factory(
    env_id: str, env_kwargs: dict[str, Any] | None, wrapped: bool, num_envs: int, known_only: bool = False
) -> tuple[NativeFactory | None, str]:
    """How to make ``env_id``'s native vector env in SAME_STEP mode, or why it cannot be made.

    Args:
        env_id: A registered gymnasium id.
        env_kwargs: The env's keyword arguments.
        wrapped: Whether per-env wrappers were asked for (a native vector env has no per-env wrappers).
        num_envs: The number of sub-envs to be made.
        known_only: Only CartPole's and ale-py's vector envs, whose SAME_STEP use lightrl knows (``"auto"``), and
            CartPole's only from :data:`AUTO_NATIVE_CARTPOLE_MIN_ENVS` sub-envs.

    Returns:
        ``(factory, "")``, the factory taking the number of sub-envs, or ``(None, reason)``.
    """
    kwargs = dict(env_kwargs or {})
    if wrapped:
        return None, "per-env wrappers (env_wrappers, video) need gymnasium's per-env vector envs"
    spec = gym.envs.registry.get(env_id)
    if is_atari(env_id):  # registers the ALE ids
        spec = gym.envs.registry.get(env_id)
        extra = set(spec.kwargs) - {"game", "repeat_action_probability", "full_action_space", "frameskip", "max_num_frames_per_episode", "obs_type"}
        unknown = sorted(set(kwargs) - set(ATARI_USER_KWARGS))
        if extra or unknown:
            return None, f"ale-py's AtariVectorEnv takes only {ATARI_USER_KWARGS} from env_kwargs, got {sorted(extra) + unknown}"
        return (lambda num_envs: AtariVector(env_id, num_envs, kwargs)), ""
    if spec is None or spec.vector_entry_point is None:
        return None, f"{env_id!r} has no vector_entry_point"
    if spec.vector_entry_point == "gymnasium.envs.classic_control.cartpole:CartPoleVectorEnv":
        accepted = set(inspect.signature(CartPoleVectorEnv.__init__).parameters) - {"self", "num_envs"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            return None, f"CartPoleVectorEnv does not take {unknown}"
        if known_only and num_envs < AUTO_NATIVE_CARTPOLE_MIN_ENVS:
            return None, f"fewer than {AUTO_NATIVE_CARTPOLE_MIN_ENVS} CartPole sub-envs step faster in a Python loop"
        params = {**spec.kwargs, "max_episode_steps": spec.max_episode_steps, **kwargs}
        return (lambda num_envs: SameStepCartPole(num_envs, **params)), ""
    if known_only:
        return None, f"lightrl has no SAME_STEP adapter for {spec.vector_entry_point}"
    return generic_native(env_id, kwargs), ""
