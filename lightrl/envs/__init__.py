"""Environments: vectorization with explicit autoreset, seeding per rank, space checks, presets."""

from lightrl.envs.spaces import check_space
from lightrl.envs.vector import AUTORESET_MODE, env_seeds, episode_stats, final_observations, make_env, make_vec_env

__all__ = ["AUTORESET_MODE", "check_space", "env_seeds", "episode_stats", "final_observations", "make_env", "make_vec_env"]
