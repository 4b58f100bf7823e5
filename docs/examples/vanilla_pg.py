"""A complete algorithm of your own on lightrl's base: vanilla policy gradient with a learned baseline.

Two classes: the policy (what acts: in the collector, in evaluation, in an exported file) and the
LightningModule (what learns). Run it from the CLI (with this folder on the Python path):

    PYTHONPATH=docs/examples lightrl fit --model vanilla_pg.VanillaPG --model.total_timesteps 50000

tests/test_custom_algorithm.py runs it the same way, then evaluates and exports its checkpoint.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.algos import OnPolicyAlgorithm
from lightrl.losses import normalize, policy_gradient_loss, value_loss
from lightrl.nn import mlp
from lightrl.nn.distributions import categorical_log_prob, categorical_sample
from lightrl.policies import Policy
from lightrl.rng import seeded


class SoftmaxPolicy(Policy):
    """A softmax policy over Discrete actions, with the value baseline that on-policy collection records.

    ``act`` (deterministic) and ``explore`` are what every policy offers; an on-policy algorithm's rollouts
    also call ``explore_with_value`` and ``value``.
    """

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Discrete, hidden_sizes: Sequence[int]):
        super().__init__(observation_space, action_space)
        obs_dim = int(np.prod(observation_space.shape))
        self.actor = mlp(obs_dim, hidden_sizes, int(action_space.n), out_std=0.01)
        self.critic = mlp(obs_dim, hidden_sizes, 1, out_std=1.0)

    def act(self, obs: Tensor) -> Tensor:
        """The most likely action."""
        return self.actor(self.preprocess(obs)).argmax(-1)

    def explore(self, obs: Tensor) -> Tensor:
        """A sampled action."""
        return categorical_sample(self.actor(self.preprocess(obs)))

    def explore_with_value(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What a rollout stores per step: ``(action, log_prob, value)``."""
        obs = self.preprocess(obs)
        logits = self.actor(obs)
        action = categorical_sample(logits)
        return action, categorical_log_prob(logits, action), self.critic(obs).squeeze(-1)

    def value(self, obs: Tensor) -> Tensor:
        """``V(s)``, for bootstrapping at the end of a rollout."""
        return self.critic(self.preprocess(obs)).squeeze(-1)


class VanillaPG(OnPolicyAlgorithm):
    """REINFORCE with a value baseline: one gradient step per rollout, Monte-Carlo advantages (``gae_lambda=1``).

    The base class supplies the envs, the rollouts with GAE, the env-step budget, logging and the CLI.
    """

    action_spaces = (spaces.Discrete,)
    action_space_hint = "VanillaPG's softmax policy needs Discrete actions."
    supports_async_collector = True  # it acts only through its policy, so collector="async" works too

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        num_envs: int = 8,
        num_steps: int = 64,
        learning_rate: float = 3e-3,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        hidden_sizes: Sequence[int] = (64, 64),
        **kwargs: Any,
    ):
        # Pass on only your own arguments (and **kwargs): hyperparameters are recorded from the signatures.
        super().__init__(env_id=env_id, num_envs=num_envs, num_steps=num_steps, gamma=gamma, gae_lambda=gae_lambda,
                         hidden_sizes=hidden_sizes, **kwargs)
        self.automatic_optimization = False
        obs_space, action_space = self.probe_spaces()  # checks the env's spaces against action_spaces
        with seeded(self.hparams.seed):  # the same initial weights on every DDP rank
            self.policy = SoftmaxPolicy(obs_space, action_space, hidden_sizes)

    def configure_optimizers(self):
        return torch.optim.Adam(self.policy.parameters(), lr=self.hparams.learning_rate)

    def training_step(self, dataloader_iter: Iterator) -> None:
        batch = self.next_batch(dataloader_iter)  # one rollout, collected with the current weights
        logprob = categorical_log_prob(self.policy.actor(batch["obs"]), batch["actions"])
        value = self.policy.critic(batch["obs"]).squeeze(-1)
        pg_loss = policy_gradient_loss(logprob, normalize(batch["advantages"]))
        v_loss = value_loss(value, batch["returns"])

        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(pg_loss + 0.5 * v_loss)
        optimizer.step()
        self.log_metrics({"losses/policy_loss": pg_loss.detach(), "losses/value_loss": v_loss.detach()})
