"""Algorithms, each a LightningModule on :class:`~lightrl.algos.base.RLModule`."""

from lightrl.algos.a2c import A2C
from lightrl.algos.base import RLModule
from lightrl.algos.on_policy import OnPolicyAlgorithm
from lightrl.algos.ppo import PPO

__all__ = ["A2C", "OnPolicyAlgorithm", "PPO", "RLModule"]
