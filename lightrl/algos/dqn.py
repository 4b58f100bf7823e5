"""Deep Q-Network (Mnih et al. 2015, https://www.nature.com/articles/nature14236), with Double and Dueling DQN."""

from __future__ import annotations

import copy
from typing import Any, Iterator, Sequence

import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.algos.checks import require, require_widths
from lightrl.algos.off_policy import OffPolicyAlgorithm
from lightrl.compile import maybe_compile
from lightrl.losses.q_learning import DQN_LOSSES, dqn_loss, dqn_target, polyak_update
from lightrl.nn.masking import MaskedQNetwork
from lightrl.nn.q_networks import QNetwork
from lightrl.policies import EpsilonGreedyPolicy
from lightrl.rng import seeded



def dqn_step_loss(q_network: QNetwork, obs: Tensor, actions: Tensor, target: Tensor, loss: str) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of one gradient step: the Q-values of the taken actions regressed on their targets.

    A pure function of the network and the batch, so that ``compile=True`` can compile it whole.
    """
    q_taken = q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1).float()  # fp32 loss under autocast
    return dqn_loss(q_taken, target.float(), loss)


class DQN(OffPolicyAlgorithm):
    """DQN as in CleanRL's ``dqn.py`` / ``dqn_atari.py``, as a LightningModule; defaults are CleanRL's.

    Actions are uniformly random until ``learning_starts`` (as in Stable-Baselines3), then epsilon-greedy,
    each sub-env drawing its own coin, with epsilon decaying linearly from ``start_e`` to ``end_e`` over the
    first ``exploration_fraction * total_timesteps`` env steps. Every
    ``train_frequency`` env steps past ``learning_starts``, ``gradient_steps`` gradient steps are taken, all
    inside one ``training_step`` (manual optimization). The target network is updated every
    ``target_network_frequency`` **env steps** (global, over sub-envs and ranks), by
    ``target = tau * online + (1 - tau) * target``: the semantics of CleanRL's ``target_network_frequency``
    and of Stable-Baselines3's ``target_update_interval``, so the RL-zoo recipes carry over unchanged.
    The updates that fall due while a phase is collected are made before its gradient steps
    (:meth:`update_target_network`), so the target stays fixed within an update phase, as in Stable-Baselines3.

    Args:
        env_id: Gymnasium id; Box observations (vectors, or ``(C, H, W)`` uint8 images for the Nature-CNN),
            Discrete, MultiDiscrete, MultiBinary or Dict observations, Discrete actions.
        num_envs: Sub-envs per process.
        learning_rate: Adam's learning rate.
        buffer_size: Replay buffer capacity per process.
        gamma: Discount factor.
        tau: Target-network interpolation factor; 1.0 is a hard copy.
        target_network_frequency: Global env steps between target-network updates.
        batch_size: Transitions per gradient step.
        start_e: Initial exploration epsilon.
        end_e: Final exploration epsilon.
        exploration_fraction: Fraction of ``total_timesteps`` over which epsilon decays.
        learning_starts: Global env steps before the first update.
        train_frequency: Global env steps between update phases.
        gradient_steps: Gradient steps per update phase.
        double_q: Double DQN: the online network picks the next action, the target network rates it.
        dueling: Dueling head ``Q = V + A - mean(A)``.
        n_step: n-step returns.
        loss: ``"mse"`` (CleanRL) or ``"huber"`` (Nature DQN, Stable-Baselines3).
        max_grad_norm: Gradient-norm clip (Stable-Baselines3 uses 10); ``None`` disables it.
        adam_eps: Adam's epsilon (1e-8 is torch's default, kept by CleanRL and by Stable-Baselines3's DQN).
        hidden_sizes: Widths of the hidden layers; for images, the first is the Nature-CNN's linear layer.
        **kwargs: ``seed``, ``total_timesteps``, ``vectorization``, ``env_kwargs``, ``save_replay_buffer``,
            ``phases_per_training_step``, ``action_masking`` (on by default when the env gives action masks: the
            greedy action, the random ones and the target's max take valid actions only; see :mod:`lightrl.nn.masking`).

    Example::

        import lightning as L
        import lightrl

        model = lightrl.DQN("CartPole-v1", total_timesteps=50_000, learning_starts=1000)
        L.Trainer(max_epochs=-1, logger=False).fit(model)
        mean_return, std_return = lightrl.evaluate(model)
    """

    supports_async_collector = True
    supports_action_masking = True
    action_spaces = (spaces.Discrete,)
    action_space_hint = "DQN needs Discrete actions: use SAC or TD3 for Box (continuous) actions."

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        num_envs: int = 1,
        learning_rate: float = 2.5e-4,
        buffer_size: int = 10_000,
        gamma: float = 0.99,
        tau: float = 1.0,
        target_network_frequency: int = 500,
        batch_size: int = 128,
        start_e: float = 1.0,
        end_e: float = 0.05,
        exploration_fraction: float = 0.5,
        learning_starts: int = 10_000,
        train_frequency: int = 10,
        gradient_steps: int = 1,
        double_q: bool = False,
        dueling: bool = False,
        n_step: int = 1,
        loss: str = "mse",
        max_grad_norm: float | None = None,
        adam_eps: float = 1e-8,
        hidden_sizes: Sequence[int] = (120, 84),
        **kwargs: Any,
    ):
        super().__init__(
            env_id=env_id, num_envs=num_envs, buffer_size=buffer_size, learning_starts=learning_starts,
            batch_size=batch_size, gamma=gamma, tau=tau, train_frequency=train_frequency,
            gradient_steps=gradient_steps, n_step=n_step, max_grad_norm=max_grad_norm, **kwargs,
        )  # fmt: skip
        require(learning_rate > 0, f"learning_rate must be positive, got {learning_rate}.")
        require(adam_eps > 0, f"adam_eps must be positive, got {adam_eps}.")
        require(target_network_frequency > 0, f"target_network_frequency must be a positive number of env steps, got {target_network_frequency}.")
        require(0 <= end_e <= 1 and 0 <= start_e <= 1, f"start_e and end_e must be in [0, 1], got {start_e} and {end_e}.")
        require(0 <= exploration_fraction <= 1, f"exploration_fraction must be in [0, 1], got {exploration_fraction}.")
        require(loss in DQN_LOSSES, f"loss must be one of {DQN_LOSSES}, got {loss!r}.")
        require_widths(hidden_sizes)
        obs_space, action_space = self.probe_spaces()
        network = MaskedQNetwork if self.action_mask_source is not None else QNetwork
        with seeded(self.hparams.seed):
            q_network = network(obs_space, action_space, hidden_sizes, dueling)
        self.policy = EpsilonGreedyPolicy(
            q_network, obs_space, action_space, start_e, end_e, exploration_fraction * self.hparams.total_timesteps, learning_starts
        )
        self.setup_normalization()
        self.target_network = copy.deepcopy(self.q_network).requires_grad_(False)
        # The parameter lists of the target update, gathered once rather than by a .parameters() walk per update.
        self._polyak_params = (list(self.target_network.parameters()), list(self.q_network.parameters()))
        self._compiled: dict[str, Any] = {}  # with compile=True, set in on_fit_start
        self.target_updated_at = 0  # the global env step up to which the target network's updates are made

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.compile:
            self._compiled = {"loss": maybe_compile(dqn_step_loss, True, self.device)}

    @property
    def q_network(self) -> QNetwork:
        """The online Q-network, which the policy acts with."""
        return self.policy.q_network

    @property
    def epsilon(self) -> float:
        """Exploration rate at the current global env step."""
        return self.policy.epsilon_at(self.env_steps)

    def on_train_start(self) -> None:
        super().on_train_start()
        self.target_updated_at = self.env_steps  # the target-update clock starts where this fit (or resume) does

    def update_target_network(self) -> None:
        """The target-network updates due at the env steps collected since the last call, as collection would make them.

        One every ``target_network_frequency`` global env steps (SB3's ``target_update_interval``), towards
        the online weights of that moment. Collection does not change the online network, so the updates
        of the env steps collected before an update phase are made before its gradient steps, vector step by
        vector step: ``k`` falling into one vector step are one update with ``1 - (1 - tau)^k``.
        """
        freq, stride, tau = self.hparams.target_network_frequency, self.source.spec.steps_per_env_step, self.hparams.tau
        start, end = self.target_updated_at, self.env_steps
        self.target_updated_at = end
        due = (start // freq + 1) * freq  # the first update past start
        while due <= end:
            step_end = start + -(-(due - start) // stride) * stride  # the end of the vector step that reached it
            updates = step_end // freq - (step_end - stride) // freq
            polyak_update(*self._polyak_params, 1.0 - (1.0 - tau) ** updates)
            due = (step_end // freq + 1) * freq

    def training_step(self, dataloader_iter: Iterator) -> None:
        super().training_step(dataloader_iter)
        self.update_target_network()  # those of env steps collected after the last phase (at the budget's end)

    def configure_optimizers(self):
        return self.adam(self.q_network.parameters(), self.hparams.learning_rate, eps=self.hparams.adam_eps)

    def train_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor | float]:
        hp = self.hparams
        self.update_target_network()  # those due while this phase was collected: the target is fixed within a phase
        optimizer = self.optimizers()
        td_loss_sum = q_values_sum = 0.0
        num_gradient_steps = batch["rewards"].shape[0]
        targets = self.phase_targets(batch)
        step_loss = self._compiled["loss"] if self._compiled else dqn_step_loss
        for i, (obs, actions, rewards, next_obs, terminations, discounts) in enumerate(zip(
            batch["observations"], batch["actions"], batch["rewards"], batch["next_observations"],
            batch["terminations"], batch["discounts"],
        )):  # fmt: skip
            if targets is not None:
                target = targets[i]
            else:
                with torch.no_grad():
                    next_q_online = self.q_network(next_obs) if hp.double_q else None
                    target = dqn_target(self.target_network(next_obs), rewards, terminations, discounts, next_q_online)
            loss, diagnostics = step_loss(self.q_network, obs, actions, target, hp.loss)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            td_loss_sum += loss.detach()
            q_values_sum += diagnostics["q_values"]
        self.num_updates += num_gradient_steps
        return {
            "losses/td_loss": td_loss_sum / num_gradient_steps,
            "losses/q_values": q_values_sum / num_gradient_steps,
            "charts/epsilon": self.epsilon,
        }

    @torch.no_grad()
    def phase_targets(self, batch: dict[str, Tensor]) -> Tensor | None:
        """The TD targets of every gradient step of ``batch`` at once, ``[num_gradient_steps, batch_size]``, or None.

        The target network only changes between update phases (:meth:`update_target_network`), so it is the same for all
        the gradient steps of an update phase, and without ``double_q`` the target does not depend on the
        online network. The targets are then those computed step by step, from forward passes over
        ``num_gradient_steps * batch_size`` observations in chunks of 2048 rows: a few large matrix products instead
        of ``num_gradient_steps`` small ones (the RL-zoo recipe: 128 steps of 64). The chunks keep the activations
        in cache, which a single pass over all rows would not. None with ``double_q``, for images
        (whose activations would take too much memory), or for observations other than flat Boxes,
        which are computed step by step.
        """
        space = self.observation_space
        if self.hparams.double_q or not isinstance(space, spaces.Box) or len(space.shape) != 1:
            return None
        num_gradient_steps, batch_size = batch["rewards"].shape
        next_q = torch.cat([self.target_network(chunk) for chunk in batch["next_observations"].flatten(0, 1).split(2048)])
        flat = (batch[key].flatten() for key in ("rewards", "terminations", "discounts"))
        return dqn_target(next_q, *flat).view(num_gradient_steps, batch_size)
