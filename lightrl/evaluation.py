"""Evaluate a trained module on fresh envs."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lightrl.data.collector import Collector
from lightrl.envs.vector import EnvWrapper, make_vec_env
from lightrl.nn.recurrent import reset_state


def evaluate(
    module,
    num_episodes: int = 10,
    seed: int = 0,
    deterministic: bool = True,
    max_envs: int = 16,
) -> tuple[float, float]:
    """Run ``num_episodes`` full episodes with the module's policy and return ``(mean_return, std_return)``.

    Episodes are spread over up to ``max_envs`` fresh sub-envs seeded from ``seed``, each playing a
    fixed share, so short episodes are not over-counted (as in SB3's ``evaluate_policy``). Returns are
    raw episode returns (for Atari: the unclipped game score).

    Args:
        module: A lightrl algorithm (any :class:`~lightrl.algos.base.RLModule`): it acts through ``module.policy``.
        num_episodes: Episodes to run.
        seed: Seed of the evaluation envs; different from training seeds by default.
        deterministic: Take the policy's deterministic action (``act``) instead of its exploring one (``explore``).
        max_envs: Most sub-envs to step at once.

    Example::

        mean_return, std_return = lightrl.evaluate(model, num_episodes=10)
    """
    returns = episode_returns(module, num_episodes, seed, deterministic, max_envs)
    return float(np.mean(returns)), float(np.std(returns))


def episode_returns(module, num_episodes: int = 10, seed: int = 0, deterministic: bool = True, max_envs: int = 16,
                    env_kwargs: dict[str, Any] | None = None, wrappers: Sequence[EnvWrapper] = ()) -> list[float]:  # fmt: skip
    """The returns of ``num_episodes`` episodes, as :func:`evaluate` runs them (:func:`play_episodes` without the lengths)."""
    returns, _lengths = play_episodes(module, num_episodes, seed, deterministic, max_envs, env_kwargs, wrappers)
    return returns


def play_episodes(
    module,
    num_episodes: int = 10,
    seed: int = 0,
    deterministic: bool = True,
    max_envs: int = 16,
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[EnvWrapper] = (),
) -> tuple[list[float], list[int]]:
    """The returns and lengths of ``num_episodes`` episodes, as :func:`evaluate` plays them.

    ``env_kwargs`` are added to the module's own, and ``wrappers`` wrap each sub-env (e.g. to record video)
    around the module's own ``env_wrappers``. The module acts through its :class:`~lightrl.policies.Policy`
    (``module.policy``), whose observation statistics (``normalize_obs``) stay as training left them. A recurrent
    policy carries a state per sub-env, zeroed where an episode starts.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be a positive integer, got {num_episodes}.")
    num_envs = min(num_episodes, max_envs)
    targets = np.array([(num_episodes + i) // num_envs for i in range(num_envs)])
    kwargs = {**(module.hparams.env_kwargs or {}), **(env_kwargs or {})}
    envs = make_vec_env(module.hparams.env_id, num_envs, seed=seed, env_kwargs=kwargs, wrappers=wrappers,
                        env_wrappers=getattr(module, "env_wrappers", ()))  # fmt: skip
    collector = Collector(envs, module.device)
    counts = np.zeros(num_envs, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    policy = module.policy
    act = policy.act if deterministic else policy.explore
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            collector.reset()
            state = policy.initial_state(num_envs, module.device)  # None: a policy without memory
            while (counts < targets).any():
                if state is None:
                    step = collector.step(act(collector.obs))
                else:
                    actions, state = policy.act_with_state(collector.obs, state, deterministic)
                    step = collector.step(actions)
                    state = reset_state(state, step.terminated | step.truncated)
                for i, ret, length in step.episodes:
                    if counts[i] < targets[i]:
                        returns.append(ret)
                        lengths.append(length)
                        counts[i] += 1
    finally:
        policy.train(was_training)
        envs.close()
    return returns, lengths
