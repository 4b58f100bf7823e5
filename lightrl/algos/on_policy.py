"""What PPO and A2C share: an actor-critic, rollouts of ``num_steps`` vector steps, and GAE."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Iterator, Sequence

from gymnasium import spaces
from torch import Tensor

from lightrl.algos.base import RLModule
from lightrl.algos.checks import check_recurrent_hyperparameters, require, require_widths
from lightrl.algos.precision import acting_context
from lightrl.algos.resume import stop_on_nonfinite
from lightrl.algos.sequences import SequenceReplay, whole_rollout
from lightrl.data.collector import CollectorSpec
from lightrl.data.recurrent_rollout import RecurrentRolloutSource
from lightrl.data.rollout import RolloutBuffer
from lightrl.data.rollout_source import RolloutSource
from lightrl.losses import explained_variance
from lightrl.nn.actor_critic import ActorCritic
from lightrl.nn.mlp import ACTIVATIONS
from lightrl.normalize import sync_obs_statistics


class OnPolicyAlgorithm(RLModule):
    """Collects a rollout with the current policy, computes GAE, and yields it as one batch.

    The policy is an :class:`~lightrl.policies.ActorCriticPolicy` (PPO and A2C build it with
    :func:`~lightrl.algos.ppo.build_actor_critic`); its actor-critic is ``policy.agent``
    (a :class:`~lightrl.nn.masking.MaskedActorCritic` when the env gives action masks).

    Args:
        num_steps: Vector steps per rollout, per sub-env.
        gae_lambda: GAE's lambda, in [0, 1].
        hidden_sizes: Widths of the actor's and critic's hidden layers (vector observations; after the core with ``recurrent``).
        activation: Their hidden activation: ``"tanh"`` (CleanRL's and SB3's PPO and A2C) or ``"relu"`` (cheaper on a CPU,
            and the RL zoo's choice in some recipes).
        recurrent_size: Hidden size of the recurrent core (``recurrent="lstm"`` or ``"gru"``, see :mod:`lightrl.nn.recurrent`).
        recurrent_layers: Stacked layers of the recurrent core.
        critic_shares_core: Whether the critic reads the actor's recurrent core (CleanRL) or has its own (sb3-contrib's default).
        sequence_length: Steps of the sequences the recurrent core is trained on: ``num_steps`` (``None``, whole rollouts) or
            a divisor of it, each rollout then cut into chunks that start from the state the collection reached there.
        **kwargs: :class:`~lightrl.algos.base.RLModule`'s arguments.
    """

    observation_spaces = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict)
    action_spaces = (spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)
    supports_action_masking = True
    #: ``recurrent`` can be set: the policy gets a recurrent core, trained on whole sub-env sequences (:mod:`lightrl.algos.sequences`).
    supports_recurrent = True

    #: What sets how much experience one update sees (named when a Trainer flag cannot apply).
    batch_setting = "num_envs * num_steps per rollout (and num_minibatches)"

    def __init__(
        self,
        num_steps: int,
        gae_lambda: float,
        hidden_sizes: Sequence[int],
        recurrent_size: int = 128,
        recurrent_layers: int = 1,
        critic_shares_core: bool = True,
        sequence_length: int | None = None,
        activation: str = "tanh",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        require(activation in ACTIVATIONS, f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        require(num_steps > 0, f"num_steps must be a positive integer, got {num_steps}.")
        require(0 <= gae_lambda <= 1, f"gae_lambda must be in [0, 1], got {gae_lambda}.")
        require_widths(hidden_sizes)
        check_recurrent_hyperparameters(self.hparams)

    def make_source(self, spec: CollectorSpec) -> RolloutSource:
        """Rollouts of ``num_steps`` vector steps with GAE."""
        hp = self.hparams
        if hp.recurrent is not None:
            return RecurrentRolloutSource(spec, hp.num_steps, hp.gamma, hp.gae_lambda, hp.sequence_length, device=self.device,
                                          timer=self.timer, acting_context=partial(acting_context, self), collector=hp.collector)  # fmt: skip
        return RolloutSource(spec, hp.num_steps, hp.gamma, hp.gae_lambda, device=self.device, timer=self.timer,
                             acting_context=partial(acting_context, self), collector=hp.collector)  # fmt: skip

    @property
    def rollout(self) -> RolloutBuffer | None:
        """The last rollout collected in this process (None before the first, or with ``collector="async"``)."""
        return self.source.buffer if self.source is not None else None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.compile:
            self.policy.compile_acting(self.device)

    @property
    def num_sequences(self) -> int:
        """Sequences per rollout a recurrent core is trained on: ``num_envs`` times ``num_steps / sequence_length``."""
        hp = self.hparams
        return hp.num_envs * hp.num_steps // (hp.sequence_length or hp.num_steps)

    @property
    def batch_size(self) -> int:
        """Samples per rollout in this process: ``num_envs * num_steps``."""
        return self.hparams.num_envs * self.hparams.num_steps

    @property
    def env_steps_per_batch(self) -> int:
        """Global env steps per rollout: ``num_envs * num_steps`` on every rank."""
        return self.batch_size * self.world_size

    @property
    def num_iterations(self) -> int:
        """Rollouts per rank until the global budget is reached."""
        return math.ceil(self.hparams.total_timesteps / (self.batch_size * self.world_size))

    def generate_batches(self) -> Iterator[dict[str, Tensor]]:
        # Every rank runs the same number of rollouts (env_steps is global), so DDP never waits on a missing batch.
        while not self.budget_reached:
            yield self.collect_rollout()

    def collect_rollout(self) -> dict[str, Tensor]:
        """The next rollout as a flat batch with advantages: ``num_steps`` vector steps with the policy.

        With ``collector="async"`` the actor process collected it, with the weights of one update before.
        With ``normalize_obs`` its observations come normalized by the statistics they were collected with
        (frozen during the rollout, as the policy saw them); the raw ones are then added to the statistics.
        """
        with stop_on_nonfinite(self):
            batch = self.source.next_rollout(self.policy, self.env_steps)
        self.env_steps += self.batch_size * self.world_size
        if self.policy.obs_normalizer is not None:
            self.policy.obs_normalizer.accumulate(batch.pop("raw_obs"))
            sync_obs_statistics(self)
        return batch

    def replay_agent(self, batch: dict[str, Tensor]) -> ActorCritic | SequenceReplay:
        """What scores a whole rollout ``batch``'s actions: the actor-critic, or with a recurrent core its replay over the sequences."""
        return self.policy.agent if self.hparams.recurrent is None else whole_rollout(self.policy.agent, batch)

    def rollout_diagnostics(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Metrics of the rollout itself: how well the values collected with it explain its returns."""
        return {"losses/explained_variance": explained_variance(batch["values"], batch["returns"])}
