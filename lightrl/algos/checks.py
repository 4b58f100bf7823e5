"""Checks an algorithm runs in ``__init__``: its hyperparameters before any env exists (one clear line naming the
value and the fix), then the spaces of one probe env (:func:`probe_spaces`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from gymnasium import spaces

from lightrl.data.source import COLLECTOR_MODES
from lightrl.envs.checks import require_video_support, run_env_checker
from lightrl.envs.masks import mask_wrapper_spec, masked_observation_space, probe_action_mask
from lightrl.envs.spaces import check_action_space, check_observation_space
from lightrl.envs.vector import VECTORIZATIONS, make_env, resolve_wrapper
from lightrl.nn.recurrent import RECURRENT_KINDS


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds: hyperparameter checks, before any env exists."""
    if not condition:
        raise ValueError(message)


def require_widths(hidden_sizes: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``hidden_sizes`` is a non-empty list of positive layer widths."""
    require(len(hidden_sizes) > 0 and all(h > 0 for h in hidden_sizes), f"hidden_sizes must be positive widths, got {hidden_sizes}.")


def check_base_hyperparameters(algo: type, hp: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for a bad argument of :class:`~lightrl.algos.base.RLModule` (``hp``) of algorithm class ``algo``."""
    env_id, vectorization, collector, env_wrappers = hp["env_id"], hp["vectorization"], hp["collector"], hp["env_wrappers"]
    require(isinstance(env_id, str) and bool(env_id), f"env_id must be a gymnasium id such as 'CartPole-v1', got {env_id!r}.")
    require(hp["total_timesteps"] > 0, f"total_timesteps must be a positive number of env steps, got {hp['total_timesteps']}.")
    require(hp["num_envs"] > 0, f"num_envs must be a positive integer, got {hp['num_envs']}.")
    require(vectorization in VECTORIZATIONS, f"vectorization must be one of {VECTORIZATIONS}, got {vectorization!r}.")
    require(hp["timesteps_per_epoch"] > 0, f"timesteps_per_epoch must be a positive number of env steps, got {hp['timesteps_per_epoch']}.")
    require(hp["eval_episodes"] > 0, f"eval_episodes must be a positive integer, got {hp['eval_episodes']}.")
    require(hp["test_episodes"] > 0, f"test_episodes must be a positive integer, got {hp['test_episodes']}.")
    require(collector in COLLECTOR_MODES, f"collector must be one of {COLLECTOR_MODES}, got {collector!r}.")
    require(
        collector == "sync" or algo.supports_async_collector,
        f"collector='async' is not supported by {algo.__name__} (supports_async_collector = False); "
        "use collector='sync', or one of lightrl's PPO, A2C, DQN, SAC, TD3.",
    )
    require(
        collector == "sync" or vectorization != "async",
        "collector='async' runs the envs in one actor process, which cannot start vectorization='async' workers; "
        "use vectorization='sync' or 'envpool' with it.",
    )
    action_masking = hp["action_masking"]
    require(action_masking in (None, True, False), f"action_masking must be True, False or None (on when the env gives a mask), got {action_masking!r}.")
    require(
        action_masking is not True or algo.supports_action_masking,
        f"action_masking=True is not supported by {algo.__name__}; use PPO or A2C (Discrete, MultiDiscrete actions) or DQN (Discrete).",
    )
    require(
        hp["recurrent"] is None or getattr(algo, "supports_recurrent", False),  # set by a family that trains a core on sequences
        f"recurrent={hp['recurrent']!r} is not supported by {algo.__name__}; use PPO or A2C (a recurrent core is on-policy only for now), or recurrent=None.",
    )
    if hp["capture_video"]:
        require_video_support()
    require(isinstance(hp["compile"], bool), f"compile must be True or False, got {hp['compile']!r}.")
    require(hp["clip_obs"] > 0, f"clip_obs must be positive, got {hp['clip_obs']}.")
    require(hp["clip_reward"] > 0, f"clip_reward must be positive, got {hp['clip_reward']}.")
    require(0 < hp["gamma"] <= 1, f"gamma must be in (0, 1], got {hp['gamma']}.")
    max_grad_norm = hp["max_grad_norm"]
    require(max_grad_norm is None or max_grad_norm > 0, f"max_grad_norm must be positive or None, got {max_grad_norm}.")
    require(isinstance(env_wrappers, (list, tuple)) or env_wrappers is None,
            f"env_wrappers must be a list of {{'class_path': ..., 'init_args': ...}} entries, got {env_wrappers!r}.")  # fmt: skip
    require(not env_wrappers or vectorization not in ("envpool", "native"),
            f"env_wrappers do not apply to vectorization={vectorization!r} (one vector env, no per-env wrappers); use 'sync' or 'async'.")  # fmt: skip


def check_recurrent_hyperparameters(hp: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for a bad recurrent-core argument of PPO or A2C (``hp``), before any env exists."""
    recurrent = hp["recurrent"]
    require(recurrent in (None, *RECURRENT_KINDS), f"recurrent must be one of {RECURRENT_KINDS} or None, got {recurrent!r}.")
    if recurrent is None:
        return
    require(hp["recurrent_size"] > 0, f"recurrent_size must be a positive integer, got {hp['recurrent_size']}.")
    require(hp["recurrent_layers"] > 0, f"recurrent_layers must be a positive integer, got {hp['recurrent_layers']}.")
    length, num_steps = hp["sequence_length"], hp["num_steps"]
    require(length is None or (length > 0 and num_steps % length == 0),
            f"sequence_length ({length}) must divide num_steps ({num_steps}): each rollout is cut into sequences of that length; or None (whole rollouts).")  # fmt: skip
    require(not hp["compile"], f"compile=True does not support recurrent={recurrent!r} yet; set compile=False.")
    require(hp["action_masking"] is not True, f"action_masking=True does not support recurrent={recurrent!r} yet; set one of them off.")


def probe_spaces(module: Any) -> tuple[spaces.Space, spaces.Space]:
    """``module.probe_spaces()``: create one env to read its spaces, check them, and set ``module.observation_space``
    and ``module.action_space``; an algorithm calls it in ``__init__``, after validating its hyperparameters.

    Runs gymnasium's env checker first with ``check_env``. The algorithm's class attributes
    ``observation_spaces``, ``action_spaces``, ``image_observations`` and ``action_space_hint`` say what it accepts.

    With action masks (``action_masking``), the returned observation space is the masked one, and
    ``module.action_mask_source`` and ``module.mask_wrappers`` say where the mask comes from.

    Raises:
        ValueError: on an unknown env id, a space this algorithm does not support, or a mask it cannot take.
    """
    hp = module.hparams
    if hp.check_env:
        run_env_checker(hp.env_id, hp.env_kwargs)
    own_wrappers = module.env_wrappers[: len(module.env_wrappers) - len(module.mask_wrappers)]  # without a previous probe's mask wrapper
    env = make_env(hp.env_id, hp.env_kwargs, env_wrappers=own_wrappers)
    try:
        obs_space, action_space = env.observation_space, env.action_space
        name = type(module).__name__
        check_observation_space(name, obs_space, module.observation_spaces, module.image_observations)
        check_action_space(name, action_space, module.action_spaces, module.action_space_hint)
        source = probe_action_mask(env, hp.env_id, hp.action_masking if module.supports_action_masking else False)
    finally:
        env.close()
    if source is not None:
        require(hp.vectorization not in ("native", "envpool"),
                f"action masks are read by a wrapper of each sub-env, which vectorization={hp.vectorization!r} has not; use 'sync' or 'async'.")  # fmt: skip
        # The mask travels in the observations: every env of this module (training, evaluation, predict) gets the wrapper.
        module.mask_wrappers = (mask_wrapper_spec(source, hp.env_id),)
        obs_space = masked_observation_space(obs_space, action_space)
    else:
        module.mask_wrappers = ()
    module.env_wrappers = [*own_wrappers, *map(resolve_wrapper, module.mask_wrappers)]
    module.action_mask_source = source
    module.observation_space, module.action_space = obs_space, action_space
    return obs_space, action_space


def check_normalization(module: Any) -> None:
    """Raise ``ValueError`` if ``normalize_obs`` is set but the algorithm gave its policy no observation normalizer."""
    require(not module.hparams.normalize_obs or module.policy.obs_normalizer is not None,
            f"normalize_obs=True, but {type(module).__name__} did not call self.setup_normalization() after building its policy.")  # fmt: skip
