"""Networks: MLPs, the Nature-CNN encoder, and the actor-critic."""

from lightrl.nn.actor_critic import ActorCritic, is_image_space
from lightrl.nn.mlp import layer_init, mlp

__all__ = ["ActorCritic", "is_image_space", "layer_init", "mlp"]
