"""lightrl: reinforcement learning as PyTorch Lightning modules, fed by vectorized gymnasium envs."""

from lightrl.algos import A2C, PPO, RLModule
from lightrl.envs import make_vec_env
from lightrl.evaluation import evaluate

__all__ = ["A2C", "PPO", "RLModule", "evaluate", "make_vec_env"]
__version__ = "0.1.0"
