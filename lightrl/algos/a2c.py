"""Advantage Actor-Critic, the synchronous variant of A3C (Mnih et al. 2016, https://arxiv.org/abs/1602.01783)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from lightrl.algos.checks import require
from lightrl.algos.on_policy import OnPolicyAlgorithm
from lightrl.algos.ppo import build_actor_critic, linear_lr_schedule
from lightrl.algos.schedulers import step_lr_schedulers
from lightrl.algos.training_log import should_log
from lightrl.losses import normalize, policy_gradient_loss, value_loss


class A2C(OnPolicyAlgorithm):
    """A2C: one gradient step per short rollout. Defaults are Stable-Baselines3's.

    With ``collector="async"`` each rollout is collected with the weights of one update before (one
    rollout of policy lag) and A2C, which has no importance ratio, becomes slightly off-policy.

    Args:
        env_id: Gymnasium id; Box (vectors or images), Discrete, MultiDiscrete, MultiBinary or Dict observations;
            Discrete, Box, MultiDiscrete or MultiBinary actions.
        num_envs: Sub-envs per process.
        num_steps: Vector steps per rollout.
        learning_rate: RMSprop's learning rate (``alpha=0.99, eps=1e-5`` as in SB3 and the paper).
        anneal_lr: Decay the learning rate linearly to 0 over the run.
        gamma: Discount factor.
        gae_lambda: GAE's lambda; 1.0 gives n-step returns.
        norm_adv: Normalise advantages over the rollout.
        ent_coef: Entropy bonus coefficient.
        vf_coef: Value loss coefficient.
        max_grad_norm: Global gradient-norm clip; ``None`` disables it.
        hidden_sizes: Hidden widths of the actor and critic MLPs.
        **kwargs: ``seed``, ``total_timesteps``, ``vectorization``, ``env_kwargs``, ``action_masking`` (on by default when the
            env gives action masks: invalid actions get no probability; see :mod:`lightrl.nn.masking`) (see :class:`~lightrl.algos.base.RLModule`);
            ``recurrent`` (``"lstm"`` or ``"gru"``), ``recurrent_size``, ``recurrent_layers``, ``critic_shares_core``,
            ``sequence_length``: a recurrent core, trained on the whole rollout's sequences (see docs/memory.md).
    """

    supports_async_collector = True

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        num_envs: int = 8,
        num_steps: int = 5,
        learning_rate: float = 7e-4,
        anneal_lr: bool = False,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        norm_adv: bool = False,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        hidden_sizes: Sequence[int] = (64, 64),
        **kwargs: Any,
    ):
        super().__init__(env_id=env_id, num_envs=num_envs, num_steps=num_steps, gamma=gamma, gae_lambda=gae_lambda,
                         hidden_sizes=hidden_sizes, max_grad_norm=max_grad_norm, **kwargs)  # fmt: skip
        self.automatic_optimization = False
        require(learning_rate > 0, f"learning_rate must be positive, got {learning_rate}.")
        build_actor_critic(self)

    def configure_optimizers(self):
        optimizer = torch.optim.RMSprop(self.policy.agent.parameters(), lr=self.hparams.learning_rate, alpha=0.99, eps=1e-5)
        return {"optimizer": optimizer, "lr_scheduler": linear_lr_schedule(optimizer, self.num_iterations, self.hparams.anneal_lr)}

    def training_step(self, dataloader_iter: Iterator) -> None:
        batch = self.next_batch(dataloader_iter)
        tic = self.timer.start()
        hp = self.hparams
        optimizer = self.optimizers()
        _, logprob, entropy, value = self.replay_agent(batch).get_action_and_value(batch["obs"], batch["actions"])
        advantages = normalize(batch["advantages"]) if hp.norm_adv else batch["advantages"]
        pg_loss = policy_gradient_loss(logprob, advantages)
        v_loss = value_loss(value, batch["returns"])
        entropy_loss = entropy.mean()
        loss = pg_loss - hp.ent_coef * entropy_loss + hp.vf_coef * v_loss

        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        step_lr_schedulers(self, "step")
        self.timer.add("learn", tic)
        if not should_log(self):  # Lightning would drop the metrics: skip computing them
            return
        self.log_metrics({
            "charts/learning_rate": lr,
            "losses/value_loss": v_loss.detach(),
            "losses/policy_loss": pg_loss.detach(),
            "losses/entropy": entropy_loss.detach(),
            **self.rollout_diagnostics(batch),
        })
