"""Losses and advantage estimators as pure functions."""

from lightrl.losses.gae import gae
from lightrl.losses.policy_gradient import (
    clipped_surrogate_loss,
    explained_variance,
    normalize,
    policy_gradient_loss,
    value_loss,
)

__all__ = ["gae", "clipped_surrogate_loss", "explained_variance", "normalize", "policy_gradient_loss", "value_loss"]
