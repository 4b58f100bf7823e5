"""Twin Delayed DDPG (Fujimoto et al. 2018, https://arxiv.org/abs/1802.09477), for continuous actions."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.algos.checks import require, require_widths
from lightrl.algos.off_policy import OffPolicyAlgorithm, check_continuous, twin_critic_metrics
from lightrl.algos.precision import optimizer_iteration
from lightrl.compile import maybe_compile
from lightrl.losses.q_learning import polyak_update, smoothed_target_action, td3_target, twin_q_loss
from lightrl.nn.q_networks import DeterministicActor, TwinQ
from lightrl.nn.utils import frozen
from lightrl.policies import GaussianNoisePolicy
from lightrl.rng import seeded


def td3_critic_loss(
    target_actor: DeterministicActor,
    critic: TwinQ,
    target_critic: TwinQ,
    obs: Tensor,
    actions: Tensor,
    rewards: Tensor,
    next_obs: Tensor,
    terminations: Tensor,
    discounts: Tensor,
    policy_noise: float,
    noise_clip: float,
    low: Tensor,
    high: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The critics' loss of one gradient step: ``(qf_loss, qf1_loss, qf2_loss, qf1_values, qf2_values)``.

    Pure, so that ``compile=True`` can compile it whole. The clipped double-Q target uses the target actor's
    smoothed action at the next observations, without gradients; the losses are in fp32.
    """
    with torch.no_grad():
        next_actions = smoothed_target_action(target_actor(next_obs), policy_noise, noise_clip, low, high)
        next_q1, next_q2 = target_critic(next_obs, next_actions)
        target = td3_target(next_q1, next_q2, rewards, terminations, discounts).float()
    return twin_q_loss(*critic(obs, actions), target)


def td3_policy_loss(actor: DeterministicActor, critic: TwinQ, obs: Tensor) -> Tensor:
    """The deterministic policy gradient loss ``-mean(Q1(s, actor(s)))``."""
    return -critic.q1(obs, actor(obs)).float().mean()


class TD3(OffPolicyAlgorithm):
    """TD3 as in CleanRL's ``td3_continuous_action.py``, as a LightningModule; defaults are CleanRL's.

    Clipped double-Q targets, target policy smoothing (Gaussian noise of standard deviation ``policy_noise``
    clipped to ``noise_clip``, both in units of the action scale ``(high - low) / 2``), and delayed updates:
    the actor and all target networks are updated every ``policy_frequency`` gradient steps. Exploration
    adds Gaussian noise of standard deviation ``exploration_noise * (high - low) / 2`` to the actor's
    action; actions are uniformly random until ``learning_starts``.

    Optimizers (``self.optimizers()``): the critics, then the actor, both with ``learning_rate``. The critics
    are frozen while the actor loss is computed, so each optimizer only changes its own parameters. Under
    DDP pass ``strategy="ddp_find_unused_parameters_true"``.

    Args:
        env_id: Gymnasium id; flat Box, Discrete, MultiDiscrete, MultiBinary or Dict (without images) observations,
            bounded 1-D Box actions.
        num_envs: Sub-envs per process.
        learning_rate: Adam's learning rate for the actor and the critics.
        buffer_size: Replay buffer capacity per process.
        gamma: Discount factor.
        tau: Polyak factor of the target networks.
        batch_size: Transitions per gradient step.
        policy_noise: Standard deviation of the target policy smoothing noise (relative to the action scale).
        noise_clip: Bound of the target policy smoothing noise (relative to the action scale).
        exploration_noise: Standard deviation of the exploration noise (relative to the action scale).
        learning_starts: Global env steps of random actions before the first update.
        policy_frequency: Gradient steps between actor and target updates.
        train_frequency: Global env steps between update phases.
        gradient_steps: Gradient steps per update phase.
        hidden_sizes: Widths of the hidden layers of the actor and of each critic.
        **kwargs: ``seed``, ``total_timesteps``, ``vectorization``, ``env_kwargs``, ``n_step``,
            ``max_grad_norm``, ``save_replay_buffer``, ``phases_per_training_step``.

    Example::

        model = lightrl.TD3("Pendulum-v1", total_timesteps=20_000, learning_starts=1000, learning_rate=1e-3)
        L.Trainer(max_epochs=-1, logger=False).fit(model)
    """

    supports_async_collector = True
    action_spaces = (spaces.Box,)
    image_observations = False
    action_space_hint = "TD3 needs Box (continuous) actions: use DQN (or PPO) for Discrete actions."

    def __init__(
        self,
        env_id: str = "Pendulum-v1",
        num_envs: int = 1,
        learning_rate: float = 3e-4,
        buffer_size: int = 1_000_000,
        gamma: float = 0.99,
        tau: float = 0.005,
        batch_size: int = 256,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        exploration_noise: float = 0.1,
        learning_starts: int = 25_000,
        policy_frequency: int = 2,
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
        require(learning_rate > 0, f"learning_rate must be positive, got {learning_rate}.")
        require(policy_noise >= 0 and noise_clip >= 0, f"policy_noise and noise_clip must be non-negative, got {policy_noise} and {noise_clip}.")
        require(exploration_noise >= 0, f"exploration_noise must be non-negative, got {exploration_noise}.")
        require(policy_frequency > 0, f"policy_frequency must be a positive number of gradient steps, got {policy_frequency}.")
        require_widths(hidden_sizes)
        obs_dim, action_space, encoder = check_continuous(self)
        with seeded(self.hparams.seed):
            actor = DeterministicActor(obs_dim, action_space, hidden_sizes, encoder)
            self.critic = TwinQ(obs_dim, int(np.prod(action_space.shape)), hidden_sizes, encoder)
        self.policy = GaussianNoisePolicy(actor, self.observation_space, action_space, exploration_noise, learning_starts)
        self.setup_normalization()
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self._actor_metrics: dict[str, Tensor] = {}
        self._compiled: dict[str, Any] = {}  # with compile=True, set in on_fit_start

    @property
    def actor(self) -> DeterministicActor:
        """The actor, which the policy acts with."""
        return self.policy.actor

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # The parameter lists of the target updates (actor and critics), gathered once rather than by a
        # .parameters() walk per step.
        targets, online = (self.target_actor, self.target_critic), (self.actor, self.critic)
        self._polyak_params = tuple([p for net in nets for p in net.parameters()] for nets in (targets, online))
        if self.hparams.compile:
            self._compiled = {
                "critic_loss": maybe_compile(td3_critic_loss, True, self.device),
                "policy_loss": maybe_compile(td3_policy_loss, True, self.device),
            }

    def configure_optimizers(self):
        lr = self.hparams.learning_rate
        return [self.adam(self.critic.parameters(), lr), self.adam(self.actor.parameters(), lr)]

    def train_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor | float]:
        hp = self.hparams
        q_optimizer, actor_optimizer = self.optimizers()
        critic_loss = self._compiled.get("critic_loss", td3_critic_loss)
        low = self.actor.action_bias - self.actor.action_scale
        high = self.actor.action_bias + self.actor.action_scale
        for obs, actions, rewards, next_obs, terminations, discounts in zip(
            batch["observations"], batch["actions"], batch["rewards"], batch["next_observations"],
            batch["terminations"], batch["discounts"],
        ):  # fmt: skip
            with optimizer_iteration(self) as iteration:
                qf_loss, qf1_loss, qf2_loss, qf1_a_values, qf2_a_values = critic_loss(
                    self.target_actor, self.critic, self.target_critic, obs, actions, rewards, next_obs, terminations,
                    discounts, hp.policy_noise, hp.noise_clip, low, high,
                )  # fmt: skip
                q_optimizer.zero_grad(set_to_none=True)
                self.manual_backward(qf_loss)
                q_optimizer.step()
                self.num_updates += 1
                update_policy = self.num_updates % hp.policy_frequency == 0
                if update_policy:
                    with frozen(self.critic):
                        actor_loss = self._compiled.get("policy_loss", td3_policy_loss)(self.actor, self.critic, obs)
                    actor_optimizer.zero_grad(set_to_none=True)
                    self.manual_backward(actor_loss)
                    actor_optimizer.step()
                    self._actor_metrics = {"losses/actor_loss": actor_loss.detach()}
            if update_policy and not iteration.skipped:
                polyak_update(*self._polyak_params, hp.tau)

        return {
            **twin_critic_metrics(qf_loss, qf1_loss, qf2_loss, qf1_a_values, qf2_a_values),
            **self._actor_metrics,
        }
