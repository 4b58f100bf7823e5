"""Proximal Policy Optimization (Schulman et al. 2017, https://arxiv.org/abs/1707.06347)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from lightrl.algos.checks import require
from lightrl.algos.on_policy import OnPolicyAlgorithm
from lightrl.algos.schedulers import step_lr_schedulers
from lightrl.algos.sequences import sequence_minibatches
from lightrl.algos.training_log import should_log
from lightrl.losses import clipped_surrogate_loss, normalize, value_loss
from lightrl.compile import maybe_compile
from lightrl.data.storage import index_split
from lightrl.nn.actor_critic import ActorCritic
from lightrl.nn.masking import MaskedActorCritic
from lightrl.optim import adam
from lightrl.nn.recurrent import RecurrentActorCritic
from lightrl.policies import ActorCriticPolicy, RecurrentActorCriticPolicy
from lightrl.rng import seeded

#: The fields of a rollout batch that each minibatch takes, in the order training_step unpacks them.
MINIBATCH_KEYS = ("obs", "actions", "logprobs", "values", "advantages", "returns")


def build_actor_critic(module: OnPolicyAlgorithm) -> None:
    """Check the env's spaces and give ``module`` its policy around an actor-critic seeded by ``seed`` alone (PPO, A2C).

    The actor-critic is a :class:`~lightrl.nn.masking.MaskedActorCritic` when the env gives action masks
    (``action_masking``), a :class:`~lightrl.nn.recurrent.RecurrentActorCritic` with ``recurrent``.
    """
    obs_space, action_space = module.probe_spaces()
    hp = module.hparams
    if hp.recurrent is not None:
        require(module.action_mask_source is None, f"env {hp.env_id!r} gives action masks, which recurrent={hp.recurrent!r} does not support yet; "
                "set action_masking=False or recurrent=None.")  # fmt: skip
        with seeded(hp.seed):
            agent = RecurrentActorCritic(
                obs_space, action_space, hp.hidden_sizes, hp.recurrent, hp.recurrent_size, hp.recurrent_layers, hp.critic_shares_core, hp.activation
            )
        module.policy = RecurrentActorCriticPolicy(agent, obs_space, action_space)
    else:
        network = MaskedActorCritic if module.action_mask_source is not None else ActorCritic
        with seeded(hp.seed):
            agent = network(obs_space, action_space, hp.hidden_sizes, hp.activation)
        module.policy = ActorCriticPolicy(agent, obs_space, action_space)
    module.setup_normalization()


def linear_lr_schedule(optimizer: torch.optim.Optimizer, num_iterations: int, anneal: bool) -> dict[str, Any]:
    """A LambdaLR, stepped once per rollout, that decays the learning rate linearly to 0 over ``num_iterations`` when ``anneal`` is set.

    ``num_iterations`` is this fit's: a resume with a longer budget continues on the longer schedule, at the
    step it is at (see :func:`~lightrl.algos.schedulers.resume_lambda_schedules`).
    """
    factor = (lambda it: max(1.0 - it / num_iterations, 0.0)) if anneal else (lambda it: 1.0)
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


def ppo_minibatch_loss(
    agent: ActorCritic,
    obs: Tensor,
    actions: Tensor,
    logprobs: Tensor,
    values: Tensor,
    advantages: Tensor,
    returns: Tensor,
    norm_adv: bool,
    clip_coef: float,
    clip_vloss: bool,
    ent_coef: float,
    vf_coef: float,
    diagnostics: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """PPO's loss on one minibatch: ``(loss, pg_loss, v_loss, entropy_loss, diagnostics)``.

    A pure function of the agent and the minibatch, so that ``compile=True`` can compile it whole (forward
    pass and loss terms, and through AOTAutograd the backward pass).
    """
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(obs, actions)
    mb_advantages = normalize(advantages) if norm_adv else advantages
    pg_loss, stats = clipped_surrogate_loss(newlogprob, logprobs, mb_advantages, clip_coef, diagnostics=diagnostics)
    v_loss = value_loss(newvalue, returns, values if clip_vloss else None, clip_coef)
    entropy_loss = entropy.mean()
    loss = pg_loss - ent_coef * entropy_loss + vf_coef * v_loss
    return loss, pg_loss, v_loss, entropy_loss, stats


class PPO(OnPolicyAlgorithm):
    """PPO with the clipped surrogate objective, as in CleanRL's ``ppo.py``, as a LightningModule.

    Each training step is one PPO iteration: ``update_epochs`` passes over the rollout in
    ``num_minibatches`` shuffled minibatches, with manual optimization through Lightning (so the
    Trainer's precision and strategy apply). Defaults are CleanRL's.

    Args:
        env_id: Gymnasium id; Box (vectors or images), Discrete, MultiDiscrete, MultiBinary or Dict observations;
            Discrete, Box, MultiDiscrete or MultiBinary actions.
        num_envs: Sub-envs per process.
        num_steps: Vector steps per rollout.
        learning_rate: Adam's learning rate.
        anneal_lr: Decay the learning rate linearly to 0 over the run.
        gamma: Discount factor.
        gae_lambda: GAE's lambda.
        num_minibatches: Minibatches per epoch; must divide ``num_envs * num_steps`` (with ``recurrent``, the number of
            sequences, ``num_envs`` or ``num_envs * num_steps / sequence_length``: see :mod:`lightrl.algos.sequences`).
        update_epochs: Passes over each rollout.
        norm_adv: Normalise advantages per minibatch.
        clip_coef: Surrogate clipping coefficient.
        clip_vloss: Clip the value loss as in the PPO paper's implementation.
        ent_coef: Entropy bonus coefficient.
        vf_coef: Value loss coefficient.
        max_grad_norm: Global gradient-norm clip; ``None`` disables it.
        target_kl: Stop the iteration's epochs early when the approximate KL exceeds it (agreed across ranks).
        hidden_sizes: Hidden widths of the actor and critic MLPs.
        **kwargs: ``seed``, ``total_timesteps``, ``vectorization``, ``env_kwargs``, ``action_masking`` (on by default when the
            env gives action masks: invalid actions get no probability; see :mod:`lightrl.nn.masking`) (see :class:`~lightrl.algos.base.RLModule`);
            ``recurrent`` (``"lstm"`` or ``"gru"``), ``recurrent_size``, ``recurrent_layers``, ``critic_shares_core``,
            ``sequence_length``: a recurrent core (see :class:`~lightrl.algos.on_policy.OnPolicyAlgorithm` and docs/memory.md).

    Example::

        import lightning as L
        import lightrl

        L.Trainer(logger=False).fit(lightrl.PPO("CartPole-v1", total_timesteps=100_000))
    """

    supports_async_collector = True

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
        super().__init__(env_id=env_id, num_envs=num_envs, num_steps=num_steps, gamma=gamma, gae_lambda=gae_lambda,
                         hidden_sizes=hidden_sizes, max_grad_norm=max_grad_norm, **kwargs)  # fmt: skip
        self.automatic_optimization = False
        require(learning_rate > 0, f"learning_rate must be positive, got {learning_rate}.")
        require(num_minibatches > 0, f"num_minibatches must be a positive integer, got {num_minibatches}.")
        require(update_epochs > 0, f"update_epochs must be a positive integer, got {update_epochs}.")
        require(
            self.hparams.recurrent is None or self.num_sequences % num_minibatches == 0,
            f"with recurrent={self.hparams.recurrent!r} each minibatch holds whole sequences: num_minibatches ({num_minibatches}) must divide "
            f"their number per rollout, num_envs * num_steps / sequence_length ({self.num_sequences}); e.g. num_minibatches=1, or a shorter sequence_length.",
        )
        require(
            (num_envs * num_steps) % num_minibatches == 0,
            f"num_minibatches ({num_minibatches}) must divide num_envs * num_steps ({num_envs} * {num_steps} = {num_envs * num_steps}).",
        )
        require(clip_coef > 0, f"clip_coef must be positive, got {clip_coef}.")
        require(target_kl is None or target_kl > 0, f"target_kl must be positive or None, got {target_kl}.")
        build_actor_critic(self)
        self._compiled_loss = None  # with compile=True, set in on_fit_start

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.compile:
            self._compiled_loss = maybe_compile(ppo_minibatch_loss, True, self.device)

    def configure_optimizers(self):
        optimizer = adam(self, self.policy.agent.parameters(), self.hparams.learning_rate, eps=1e-5)
        return {"optimizer": optimizer, "lr_scheduler": linear_lr_schedule(optimizer, self.num_iterations, self.hparams.anneal_lr)}

    def training_step(self, dataloader_iter: Iterator) -> None:
        batch = self.next_batch(dataloader_iter)
        tic = self.timer.start()
        hp = self.hparams
        optimizer = self.optimizers()
        minibatch_loss = self._compiled_loss or ppo_minibatch_loss
        n = batch["values"].shape[0]
        minibatch_size = n // hp.num_minibatches
        for _epoch in range(hp.update_epochs):
            if hp.recurrent is not None:  # whole sub-env sequences, the core rerun over each (lightrl.algos.sequences)
                minibatches = sequence_minibatches(self.policy.agent, batch, hp.num_minibatches, MINIBATCH_KEYS)
            else:
                perm = torch.randperm(n, device=self.device)
                # One gather per field and epoch; the minibatches are then views (same samples as batch[key][mb]).
                minibatches = ((self.policy.agent, *mb) for mb in zip(*(index_split(batch[key], perm, minibatch_size) for key in MINIBATCH_KEYS)))
            for i, (agent, *minibatch) in enumerate(minibatches):
                last = i == hp.num_minibatches - 1  # diagnostics of the epoch's last minibatch: target_kl and logging
                loss, pg_loss, v_loss, entropy_loss, stats = minibatch_loss(
                    agent, *minibatch, hp.norm_adv, hp.clip_coef, hp.clip_vloss, hp.ent_coef, hp.vf_coef, last
                )
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                optimizer.step()
            if hp.target_kl is not None and self.trainer.strategy.reduce(stats["approx_kl"], reduce_op="mean") > hp.target_kl:
                break
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
            "losses/old_approx_kl": stats["old_approx_kl"],
            "losses/approx_kl": stats["approx_kl"],
            "losses/clipfrac": stats["clipfrac"],
            **self.rollout_diagnostics(batch),
        })
