"""Losses and advantage estimators as pure functions."""

from lightrl.losses.gae import gae
from lightrl.losses.policy_gradient import (
    clipped_surrogate_loss,
    explained_variance,
    normalize,
    policy_gradient_loss,
    value_loss,
)
from lightrl.losses.q_learning import (
    dqn_loss,
    dqn_target,
    polyak_update,
    sac_actor_loss,
    sac_alpha_loss,
    sac_critic_target,
    smoothed_target_action,
    td3_target,
    td_target,
    twin_q_loss,
)

__all__ = [
    "gae", "clipped_surrogate_loss", "explained_variance", "normalize", "policy_gradient_loss", "value_loss",
    "dqn_loss", "dqn_target", "polyak_update", "sac_actor_loss", "sac_alpha_loss",
    "sac_critic_target", "smoothed_target_action", "td3_target", "td_target", "twin_q_loss",
]
