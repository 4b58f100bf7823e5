"""Experience: the collector that steps envs, rollout storage, and the IterableDataset."""

from lightrl.data.collector import Collector, StepResult
from lightrl.data.datasets import ExperienceDataset, experience_loader
from lightrl.data.rollout import RolloutBuffer

__all__ = ["Collector", "StepResult", "ExperienceDataset", "experience_loader", "RolloutBuffer"]
