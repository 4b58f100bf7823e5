"""Proximal Policy Optimization (Schulman et al. 2017, https://arxiv.org/abs/1707.06347)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from lightrl.algos.base import require
from lightrl.algos.on_policy import OnPolicyAlgorithm
from lightrl.losses import clipped_surrogate_loss, normalize, value_loss


class PPO(OnPolicyAlgorithm):
    """PPO with the clipped surrogate objective, as in CleanRL's ``ppo.py``, as a LightningModule.

    Each training step is one PPO iteration: ``update_epochs`` passes over the rollout in
    ``num_minibatches`` shuffled minibatches, with manual optimization through Lightning (so the
    Trainer's precision and strategy apply). Defaults are CleanRL's.

    Args:
        env_id: Gymnasium id; Box observations (vectors or images), Discrete or Box actions.
        num_envs: Sub-envs per process.
        num_steps: Vector steps per rollout.
        learning_rate: Adam's learning rate.
        anneal_lr: Decay the learning rate linearly to 0 over the run.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.
        num_minibatches: Minibatches per epoch; must divide ``num_envs * num_steps``.
        update_epochs: Passes over each rollout.
        norm_adv: Normalise advantages per minibatch.
        clip_coef: Surrogate clipping coefficient.
        clip_vloss: Clip the value loss as in the PPO paper's implementation.
        ent_coef: Entropy bonus coefficient.
        vf_coef: Value loss coefficient.
        max_grad_norm: Global gradient-norm clip; ``None`` disables it.
        target_kl: Stop the iteration's epochs early when the approximate KL exceeds it (agreed across ranks).
        hidden_sizes: Hidden widths of the actor and critic MLPs.
        **kwargs: ``seed``, ``total_timesteps``, ``vectorization``, ``env_kwargs`` (see :class:`~lightrl.algos.base.RLModule`).

    Example::

        import lightning as L
        import lightrl

        L.Trainer(logger=False).fit(lightrl.PPO("CartPole-v1", total_timesteps=100_000))
    """

    supports_async_collector = True
    acting_networks = ("agent",)

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        num_envs: int = 4,
        num_steps: int = 128,
        learning_rate: float = 2.5e-4,
        anneal_lr: bool = True,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        num_minibatches: int = 4,
        update_epochs: int = 4,
        norm_adv: bool = True,
        clip_coef: float = 0.2,
        clip_vloss: bool = True,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        target_kl: float | None = None,
        hidden_sizes: Sequence[int] = (64, 64),
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, num_envs=num_envs, num_steps=num_steps, gamma=gamma, gae_lambda=gae_lambda, hidden_sizes=hidden_sizes, **kwargs)
        self.automatic_optimization = False
        require(learning_rate > 0, f"learning_rate must be positive, got {learning_rate}.")
        require(num_minibatches > 0, f"num_minibatches must be a positive integer, got {num_minibatches}.")
        require(update_epochs > 0, f"update_epochs must be a positive integer, got {update_epochs}.")
        require(
            (num_envs * num_steps) % num_minibatches == 0,
            f"num_minibatches ({num_minibatches}) must divide num_envs * num_steps ({num_envs} * {num_steps} = {num_envs * num_steps}).",
        )
        require(clip_coef > 0, f"clip_coef must be positive, got {clip_coef}.")
        require(max_grad_norm is None or max_grad_norm > 0, f"max_grad_norm must be positive or None, got {max_grad_norm}.")
        require(target_kl is None or target_kl > 0, f"target_kl must be positive or None, got {target_kl}.")
        self.build_agent()

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.agent.parameters(), lr=self.hparams.learning_rate, eps=1e-5)
        return {"optimizer": optimizer, "lr_scheduler": self.linear_lr_schedule(optimizer, self.hparams.anneal_lr)}

    def training_step(self, dataloader_iter: Iterator) -> None:
        batch = self.next_batch(dataloader_iter)
        hp = self.hparams
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        minibatch_size = batch["obs"].shape[0] // hp.num_minibatches
        for _epoch in range(hp.update_epochs):
            for mb in torch.randperm(batch["obs"].shape[0], device=self.device).split(minibatch_size):
                _, newlogprob, entropy, newvalue = self.agent.get_action_and_value(batch["obs"][mb], batch["actions"][mb])
                mb_advantages = normalize(batch["advantages"][mb]) if hp.norm_adv else batch["advantages"][mb]
                pg_loss, stats = clipped_surrogate_loss(newlogprob, batch["logprobs"][mb], mb_advantages, hp.clip_coef)
                old_values = batch["values"][mb] if hp.clip_vloss else None
                v_loss = value_loss(newvalue, batch["returns"][mb], old_values, hp.clip_coef)
                entropy_loss = entropy.mean()
                loss = pg_loss - hp.ent_coef * entropy_loss + hp.vf_coef * v_loss

                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                optimizer.step()
            if hp.target_kl is not None and self.trainer.strategy.reduce(stats["approx_kl"], reduce_op="mean") > hp.target_kl:
                break
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        self.log_metrics({
            "charts/learning_rate": lr,
            "losses/value_loss": v_loss.detach(),
            "losses/policy_loss": pg_loss.detach(),
            "losses/entropy": entropy_loss.detach(),
            "losses/old_approx_kl": stats["old_approx_kl"],
            "losses/approx_kl": stats["approx_kl"],
            "losses/clipfrac": stats["clipfrac"],
            **self.rollout_diagnostics(batch),
        })
