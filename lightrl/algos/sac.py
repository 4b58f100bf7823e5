"""Soft Actor-Critic (Haarnoja et al. 2018, https://arxiv.org/abs/1812.05905), for continuous actions."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightrl.algos.checks import require, require_widths
from lightrl.algos.off_policy import OffPolicyAlgorithm, check_continuous, twin_critic_metrics
from lightrl.algos.precision import optimizer_iteration
from lightrl.compile import maybe_compile
from lightrl.losses.q_learning import polyak_update, sac_actor_loss, sac_alpha_loss, sac_critic_target, twin_q_loss
from lightrl.nn.q_networks import SquashedGaussianActor, TwinQ
from lightrl.nn.utils import frozen
from lightrl.policies import SquashedGaussianPolicy
from lightrl.rng import seeded


def sac_critic_loss(
    actor: SquashedGaussianActor,
    critic: TwinQ,
    target_critic: TwinQ,
    obs: Tensor,
    actions: Tensor,
    rewards: Tensor,
    next_obs: Tensor,
    terminations: Tensor,
    discounts: Tensor,
    alpha: Tensor | float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The critics' loss of one gradient step: ``(qf_loss, qf1_loss, qf2_loss, qf1_values, qf2_values)``.

    Pure, so that ``compile=True`` can compile it whole. The soft target comes from a fresh action of the
    actor at the next observations and the target critics, without gradients; the losses are in fp32.
    """
    with torch.no_grad():
        next_actions, next_log_pi = actor.sample(next_obs)
        next_q1, next_q2 = target_critic(next_obs, next_actions)
        target = sac_critic_target(next_q1, next_q2, next_log_pi, rewards, terminations, discounts, alpha).float()
    return twin_q_loss(*critic(obs, actions), target)


def sac_policy_loss(actor: SquashedGaussianActor, critic: TwinQ, obs: Tensor, alpha: Tensor | float) -> tuple[Tensor, Tensor]:
    """The actor's loss at freshly sampled actions, and their log-probabilities: ``(actor_loss, log_pi)``."""
    pi, log_pi = actor.sample(obs)
    qf1_pi, qf2_pi = critic(obs, pi)
    return sac_actor_loss(qf1_pi.float(), qf2_pi.float(), log_pi.float(), alpha), log_pi


class SAC(OffPolicyAlgorithm):
    """SAC with twin Q-networks and automatic entropy tuning, as in CleanRL's ``sac_continuous_action.py``.

    Defaults are CleanRL's. One gradient step (a critic update) per env step by default; the actor (and the
    entropy coefficient) is updated every ``policy_frequency`` gradient steps, ``policy_frequency`` times
    in a row to make up for the delay (CleanRL's "TD3 delayed update support"), and the target critics
    every ``target_network_frequency`` gradient steps by Polyak averaging with ``tau``. The entropy
    coefficient's loss reuses the log-probabilities of the actor update (as Stable-Baselines3 does) instead
    of sampling the policy a second time. Actions are taken uniformly at random until ``learning_starts``.

    Optimizers (``self.optimizers()``): the critics (``q_lr``), and the policy: one Adam whose parameter
    groups are the actor (``policy_lr``) and, with ``autotune``, the log entropy coefficient (``q_lr``, as in
    CleanRL). Adam updates each parameter on its own, so this is the same update as two Adams, with one
    optimizer step less per gradient step; ``max_grad_norm`` clips each group on its own. The critics'
    loss is backpropagated before their optimizer steps; the actor and entropy losses, which share no
    parameters, in one backward pass before the policy optimizer steps. The critics are frozen while the
    actor loss is computed (its backward pass computes no critic gradients), so each optimizer only ever
    changes its own parameters. Under DDP pass
    ``strategy="ddp_find_unused_parameters_true"``: no backward pass reaches every parameter.

    Args:
        env_id: Gymnasium id; flat Box, Discrete, MultiDiscrete, MultiBinary or Dict (without images) observations,
            bounded 1-D Box actions.
        num_envs: Sub-envs per process.
        buffer_size: Replay buffer capacity per process.
        gamma: Discount factor.
        tau: Target critics' Polyak factor.
        batch_size: Transitions per gradient step.
        learning_starts: Global env steps of random actions before the first update.
        policy_lr: Adam's learning rate for the actor.
        q_lr: Adam's learning rate for the critics and the entropy coefficient.
        policy_frequency: Gradient steps between actor updates.
        target_network_frequency: Gradient steps between target-critic updates.
        alpha: Entropy coefficient when ``autotune`` is off.
        autotune: Learn the entropy coefficient towards the target entropy ``-action_dim``.
        train_frequency: Global env steps between update phases.
        gradient_steps: Gradient steps per update phase.
        hidden_sizes: Widths of the hidden layers of the actor and of each critic.
        **kwargs: ``seed``, ``total_timesteps``, ``vectorization``, ``env_kwargs``, ``n_step``,
            ``max_grad_norm``, ``save_replay_buffer``, ``phases_per_training_step``.

    Example::

        model = lightrl.SAC("Pendulum-v1", total_timesteps=10_000, learning_starts=100, policy_lr=1e-3)
        L.Trainer(max_epochs=-1, logger=False).fit(model)
    """

    supports_async_collector = True
    action_spaces = (spaces.Box,)
    image_observations = False
    action_space_hint = "SAC needs Box (continuous) actions: use DQN (or PPO) for Discrete actions."

    def __init__(
        self,
        env_id: str = "Pendulum-v1",
        num_envs: int = 1,
        buffer_size: int = 1_000_000,
        gamma: float = 0.99,
        tau: float = 0.005,
        batch_size: int = 256,
        learning_starts: int = 5_000,
        policy_lr: float = 3e-4,
        q_lr: float = 1e-3,
        policy_frequency: int = 2,
        target_network_frequency: int = 1,
        alpha: float = 0.2,
        autotune: bool = True,
        train_frequency: int = 1,
        gradient_steps: int = 1,
        hidden_sizes: Sequence[int] = (256, 256),
        **kwargs: Any,
    ):
        super().__init__(
            env_id=env_id, num_envs=num_envs, buffer_size=buffer_size, learning_starts=learning_starts,
            batch_size=batch_size, gamma=gamma, tau=tau, train_frequency=train_frequency,
            gradient_steps=gradient_steps, **kwargs,
        )  # fmt: skip
        require(policy_lr > 0 and q_lr > 0, f"policy_lr and q_lr must be positive, got {policy_lr} and {q_lr}.")
        require(policy_frequency > 0, f"policy_frequency must be a positive number of gradient steps, got {policy_frequency}.")
        require(target_network_frequency > 0, f"target_network_frequency must be a positive number of gradient steps, got {target_network_frequency}.")
        require(alpha >= 0, f"alpha must be non-negative, got {alpha}.")
        require_widths(hidden_sizes)
        obs_dim, action_space, encoder = check_continuous(self)
        action_dim = int(np.prod(action_space.shape))
        with seeded(self.hparams.seed):
            actor = SquashedGaussianActor(obs_dim, action_space, hidden_sizes, encoder)
            self.critic = TwinQ(obs_dim, action_dim, hidden_sizes, encoder)
        self.policy = SquashedGaussianPolicy(actor, self.observation_space, action_space, learning_starts)
        self.setup_normalization()
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.target_entropy = -float(action_dim)
        init_log_alpha = 0.0 if autotune else float(np.log(max(alpha, 1e-12)))
        self.log_alpha = nn.Parameter(torch.tensor([init_log_alpha]), requires_grad=autotune)
        self._actor_metrics: dict[str, Tensor] = {}
        self._compiled: dict[str, Any] = {}  # with compile=True, set in on_fit_start

    @property
    def alpha(self) -> Tensor | float:
        """The entropy coefficient (detached)."""
        return self.log_alpha.detach().exp() if self.hparams.autotune else self.hparams.alpha

    @property
    def actor(self) -> SquashedGaussianActor:
        """The actor, which the policy acts with."""
        return self.policy.actor

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # The parameter lists of the target update, gathered once rather than by a .parameters() walk per step.
        self._polyak_params = (list(self.target_critic.parameters()), list(self.critic.parameters()))
        if self.hparams.compile:
            self._compiled = {
                "critic_loss": maybe_compile(sac_critic_loss, True, self.device),
                "policy_loss": maybe_compile(sac_policy_loss, True, self.device),
            }

    def configure_optimizers(self):
        hp = self.hparams
        policy_groups = [{"params": list(self.actor.parameters()), "lr": hp.policy_lr}]
        if hp.autotune:  # the entropy coefficient steps with the actor, at q_lr as in CleanRL
            policy_groups.append({"params": [self.log_alpha], "lr": hp.q_lr})
        return [self.adam(self.critic.parameters(), hp.q_lr), self.adam(policy_groups, hp.policy_lr)]

    def train_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor | float]:
        hp = self.hparams
        q_optimizer, policy_optimizer = self.optimizers()
        critic_loss = self._compiled.get("critic_loss", sac_critic_loss)
        for obs, actions, rewards, next_obs, terminations, discounts in zip(
            batch["observations"], batch["actions"], batch["rewards"], batch["next_observations"],
            batch["terminations"], batch["discounts"],
        ):  # fmt: skip
            alpha = self.alpha
            with optimizer_iteration(self) as iteration:
                qf_loss, qf1_loss, qf2_loss, qf1_a_values, qf2_a_values = critic_loss(
                    self.actor, self.critic, self.target_critic, obs, actions, rewards, next_obs, terminations, discounts, alpha
                )
                q_optimizer.zero_grad(set_to_none=True)
                self.manual_backward(qf_loss)
                q_optimizer.step()
                self.num_updates += 1
                update_policy = self.num_updates % hp.policy_frequency == 0
                if update_policy:
                    alpha = self.policy_step(obs, alpha, policy_optimizer)
            if update_policy:
                for _ in range(hp.policy_frequency - 1):  # make up for the delay, as CleanRL does
                    with optimizer_iteration(self):
                        alpha = self.policy_step(obs, alpha, policy_optimizer)
            if not iteration.skipped and self.num_updates % hp.target_network_frequency == 0:
                polyak_update(*self._polyak_params, hp.tau)

        return {
            **twin_critic_metrics(qf_loss, qf1_loss, qf2_loss, qf1_a_values, qf2_a_values),
            "losses/alpha": self.alpha,
            **self._actor_metrics,
        }

    def policy_step(self, obs: Tensor, alpha: Tensor | float, policy_optimizer) -> Tensor | float:
        """One step of the actor and, with ``autotune``, of the entropy coefficient; returns the new alpha."""
        with frozen(self.critic):
            actor_loss, log_pi = self._compiled.get("policy_loss", sac_policy_loss)(self.actor, self.critic, obs, alpha)
        self._actor_metrics = {"losses/actor_loss": actor_loss.detach()}
        loss = actor_loss
        if self.hparams.autotune:
            alpha_loss = sac_alpha_loss(self.log_alpha, log_pi.detach().float(), self.target_entropy)
            self._actor_metrics["losses/alpha_loss"] = alpha_loss.detach()
            # One backward pass gives both gradients: the actor loss holds alpha fixed, the alpha loss holds log_pi fixed.
            loss = actor_loss + alpha_loss
        policy_optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        policy_optimizer.step()
        return self.alpha
