"""Algorithms, each a LightningModule on :class:`~lightrl.algos.base.RLModule`."""

from lightrl.algos.a2c import A2C
from lightrl.algos.base import RLModule
from lightrl.algos.dqn import DQN
from lightrl.algos.off_policy import OffPolicyAlgorithm
from lightrl.algos.on_policy import OnPolicyAlgorithm
from lightrl.algos.ppo import PPO
from lightrl.algos.sac import SAC
from lightrl.algos.td3 import TD3

__all__ = ["A2C", "DQN", "OffPolicyAlgorithm", "OnPolicyAlgorithm", "PPO", "RLModule", "SAC", "TD3"]
