"""Policies: the acting part of each algorithm, used by collectors, the async actor, evaluation and export."""

from lightrl.policies.actor_critic import ActorCriticPolicy
from lightrl.policies.base import Exploration, ExploringPolicy, Policy
from lightrl.policies.q_learning import EpsilonGreedyPolicy, GaussianNoisePolicy, SquashedGaussianPolicy
from lightrl.policies.recurrent import RecurrentActorCriticPolicy

__all__ = ["ActorCriticPolicy", "EpsilonGreedyPolicy", "Exploration", "ExploringPolicy", "GaussianNoisePolicy", "Policy", "RecurrentActorCriticPolicy", "SquashedGaussianPolicy"]
