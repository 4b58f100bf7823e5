"""A complete algorithm of your own on lightrl's base: vanilla policy gradient with a learned baseline.

Run it from the CLI (with this folder on the Python path):

    PYTHONPATH=docs/examples lightrl fit --model vanilla_pg.VanillaPG --model.total_timesteps 50000

tests/test_custom_algorithm.py runs it the same way.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from lightrl.algos import OnPolicyAlgorithm
from lightrl.losses import normalize, policy_gradient_loss, value_loss


class VanillaPG(OnPolicyAlgorithm):
    """REINFORCE with a value baseline: one gradient step per rollout, Monte-Carlo advantages (``gae_lambda=1``).

    The base class supplies the envs, the rollouts with GAE, the env-step budget, logging and the CLI.
    """

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
        self.build_agent()  # checks the env's spaces and builds self.agent, an ActorCritic

    def configure_optimizers(self):
        return torch.optim.Adam(self.agent.parameters(), lr=self.hparams.learning_rate)

    def training_step(self, dataloader_iter: Iterator) -> None:
        batch = self.next_batch(dataloader_iter)  # one rollout, collected with the current weights
        _, logprob, _, value = self.agent.get_action_and_value(batch["obs"], batch["actions"])
        pg_loss = policy_gradient_loss(logprob, normalize(batch["advantages"]))
        v_loss = value_loss(value, batch["returns"])

        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(pg_loss + 0.5 * v_loss)
        optimizer.step()
        self.log_metrics({"losses/policy_loss": pg_loss.detach(), "losses/value_loss": v_loss.detach()})
