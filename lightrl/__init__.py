"""lightrl: reinforcement learning as PyTorch Lightning modules, fed by vectorized gymnasium envs."""

from lightrl import warning_filters

warning_filters.install()

from lightrl.algos import A2C, DQN, PPO, SAC, TD3, RLModule
from lightrl.deploy import export
from lightrl.envs import make_vec_env
from lightrl.evaluation import evaluate
from lightrl.utils import load_module

__all__ = ["A2C", "DQN", "PPO", "RLModule", "SAC", "TD3", "evaluate", "export", "load_module", "make_vec_env"]
__version__ = "0.1.0"
