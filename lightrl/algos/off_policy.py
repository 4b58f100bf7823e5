"""What DQN, SAC and TD3 share: a replay source filled by the exploration policy, and a fixed replay ratio.

Each vector step of every rank adds one transition per sub-env to that rank's replay buffer (a
:class:`~lightrl.data.replay_source.ReplaySource`). Updates are counted in global env steps: once
``learning_starts`` env steps have been taken, every ``train_frequency`` env steps bring ``gradient_steps``
gradient steps, an **update phase**. The env steps and the gradient steps interleave in
:meth:`OffPolicyAlgorithm.training_step`, where a reader sees them::

    for _ in range(phases):                      # phases_per_training_step update phases
        batch = self.collect_update_phase()      # env steps until the next phase falls due, then its sample
        metrics = self.train_batch(batch)        # that phase's gradient steps

All the gradient steps of a phase are sampled at once, as a batch shaped ``[num_gradient_steps,
batch_size, ...]`` that ``train_batch`` loops over. Lightning's per-step work (hooks, callbacks, logging)
is paid once per ``training_step``, not per gradient step: the RL-zoo DQN recipe's phases are long
(128 gradient steps every 256 env steps), but SAC's and TD3's take one gradient step per env step, so
one ``training_step`` holds several phases (``phases_per_training_step``; by default enough for 8
gradient steps). Each phase still collects its env steps after the previous one has trained, so the
experience and the updates are those of one phase per step. Since the counters are global, every DDP
rank runs the same number of training steps. Each rank samples ``batch_size`` transitions from its own
buffer, and DDP averages the gradients: with ``world_size`` ranks a gradient step sees ``world_size *
batch_size`` transitions, and the ranks together take the same number of gradient steps per global env
step as a single process.

Mixed precision with several optimizers: Lightning's ``16-mixed`` plugin unscales, steps and calls
``scaler.update()`` at every ``optimizer.step()``. SAC and TD3 run the optimizer steps of one gradient
step inside :func:`~lightrl.algos.precision.optimizer_iteration`, which holds the update back until all of them have
stepped (as PyTorch prescribes for several optimizers) and skips the target-network update when the
scaler skipped a step. An optimizer steps at most once per iteration (the scaler allows no more), so
SAC's repeated actor updates (``policy_frequency > 1``) get an iteration each. Gradient clipping
(``max_grad_norm``) runs in :meth:`on_before_optimizer_step`, after Lightning has unscaled the gradients.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator

import numpy as np
import torch
from gymnasium import spaces
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightrl.algos.base import RLModule
from lightrl.algos.checks import require
from lightrl.algos.precision import acting_context
from lightrl.algos.resume import stop_on_nonfinite
from lightrl.algos.schedulers import step_lr_schedulers
from lightrl.algos.training_log import should_log
from lightrl.data.collector import CollectorSpec
from lightrl.data.replay import ReplayBuffer
from lightrl.data.replay_source import ReplaySource, updates_due
from lightrl.nn.encoders import observation_encoder
from lightrl.normalize import sync_obs_statistics
from lightrl.optim import adam

#: With ``phases_per_training_step=None``, a ``training_step`` runs update phases until it holds this many gradient steps.
AUTO_GRADIENT_STEPS_PER_TRAINING_STEP = 8


class OffPolicyAlgorithm(RLModule):
    """Collects experience into a :class:`~lightrl.data.replay.ReplayBuffer` and yields sampled batches.

    A subclass builds its :attr:`policy` (an :class:`~lightrl.policies.ExploringPolicy`, made with
    ``learning_starts``: its ``explore`` gives the actions taken while collecting) and implements
    :meth:`train_batch` (the gradient steps of one update phase, with its target-network updates) and
    ``configure_optimizers``.

    Args:
        buffer_size: Transitions kept in the replay buffer of each process.
        learning_starts: Global env steps collected before the first update.
        batch_size: Transitions per gradient step, per process.
        tau: Target-network interpolation factor in (0, 1]; 1 copies the online network.
        train_frequency: Global env steps between update phases.
        gradient_steps: Gradient steps per update phase; the replay ratio is ``gradient_steps / train_frequency``.
        n_step: Steps summed into each sampled reward (n-step returns).
        save_replay_buffer: Store the replay buffer in checkpoints, to resume training exactly.
        phases_per_training_step: Update phases per ``training_step``. Each phase still collects its env
            steps before its gradient steps, so the experience and the updates are those of one phase per
            step; only Lightning's per-step work (hooks, logging) is paid once for all of
            them. Callbacks' ``on_train_batch_end``, ``Trainer(log_every_n_steps)``, the logged losses
            (those of the last phase) and the async collector's weight updates follow ``training_step``.
            ``None``: enough phases for at least 8 gradient steps (8 with one gradient step per phase, 1
            in the RL-zoo DQN recipe's 128-step phases).
        **kwargs: :class:`~lightrl.algos.base.RLModule`'s arguments.
    """

    observation_spaces = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict)
    #: What sets how much experience one update sees (named when a Trainer flag cannot apply).
    batch_setting = "batch_size, or gradient_steps per train_frequency"

    def __init__(
        self,
        buffer_size: int,
        learning_starts: int,
        batch_size: int,
        tau: float,
        train_frequency: int,
        gradient_steps: int,
        n_step: int = 1,
        save_replay_buffer: bool = False,
        phases_per_training_step: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.automatic_optimization = False
        total = self.hparams.total_timesteps
        require(batch_size > 0, f"batch_size must be a positive integer, got {batch_size}.")
        require(
            buffer_size >= batch_size,
            f"buffer_size ({buffer_size}) must be at least batch_size ({batch_size}): a batch is sampled from the buffer.",
        )
        require(buffer_size >= self.hparams.num_envs, f"buffer_size ({buffer_size}) must be at least num_envs ({self.hparams.num_envs}).")
        require(
            0 <= learning_starts <= total,
            f"learning_starts ({learning_starts}) must be in [0, total_timesteps={total}], or no update would ever run.",
        )
        require(0 < tau <= 1, f"tau must be in (0, 1] (1 copies the online network into the target), got {tau}.")
        require(train_frequency > 0, f"train_frequency must be a positive number of env steps, got {train_frequency}.")
        require(gradient_steps > 0, f"gradient_steps must be a positive integer, got {gradient_steps}.")
        require(n_step > 0, f"n_step must be a positive integer, got {n_step}.")
        require(
            phases_per_training_step is None or phases_per_training_step > 0,
            f"phases_per_training_step must be a positive integer or None (automatic), got {phases_per_training_step}.",
        )
        if phases_per_training_step is None:
            phases_per_training_step = -(-AUTO_GRADIENT_STEPS_PER_TRAINING_STEP // gradient_steps)
        self.phases_per_training_step = phases_per_training_step
        self.num_updates = 0  # gradient steps taken, the clock of delayed policy and target updates
        self.updates_resume_at = 0  # after resuming without a replay buffer: no updates before this env step

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        if stage == "fit":
            # The first update samples n-step windows: every rank must have written n_step rows by then.
            needed = (self.hparams.n_step - 1) * self.hparams.num_envs * self.world_size
            require(
                self.hparams.learning_starts >= needed,
                f"learning_starts ({self.hparams.learning_starts}) must be at least (n_step - 1) * num_envs * "
                f"world_size = {needed}, so that the first batch has complete {self.hparams.n_step}-step windows.",
            )
        super().setup(stage)

    def make_source(self, spec: CollectorSpec) -> ReplaySource:
        """A replay buffer of ``buffer_size`` transitions per process, filled one vector step at a time.

        A module's next fit continues the buffer (and its sampler) of the previous one.
        """
        hp, previous = self.hparams, self.source
        return ReplaySource(
            spec, hp.buffer_size, hp.batch_size, hp.gamma, hp.n_step, hp.train_frequency, save_replay_buffer=hp.save_replay_buffer,
            replay_buffer=previous.replay_buffer if previous is not None else None,
            sampler=previous.sampler if previous is not None else None,
            device=self.device, timer=self.timer, acting_context=partial(acting_context, self), collector=hp.collector,
        )  # fmt: skip

    def on_fit_start(self) -> None:
        # Here, unlike in setup(), the module is on its device: the buffer is allocated there.
        if self.source.replay_buffer is None:
            # Sampling and exploration draw from their own generators, seeded per rank, so runs repeat exactly.
            rank = self.trainer.global_rank
            self.source.allocate(self.observation_space, self.action_space, self.device, self.hparams.seed + rank)
            self.policy.exploration.reseed(self.hparams.seed + rank + 10_000)
        if self.hparams.compile:
            self.policy.compile_acting(self.device)

    @property
    def replay_buffer(self) -> ReplayBuffer | None:
        """This process's replay buffer (None before the first fit)."""
        return self.source.replay_buffer if self.source is not None else None

    # ----------------------------------------------------------------- experience
    def updates_due(self, before: int, after: int) -> int:
        """Gradient steps that fall due when the global env-step count goes from ``before`` to ``after``
        (none before ``updates_resume_at``); see :func:`~lightrl.data.replay_source.updates_due`."""
        hp = self.hparams
        return updates_due(before, after, max(hp.learning_starts, self.updates_resume_at), hp.train_frequency, hp.gradient_steps)

    @property
    def env_steps_per_batch(self) -> int:
        """Global env steps per training step (``phases_per_training_step`` update phases) once updates have started."""
        return self.phases_per_training_step * self.hparams.train_frequency

    def generate_batches(self) -> Iterator[int]:
        """Yield, per ``training_step``, the number of update phases it holds: it collects them itself."""
        if self.source.resumed_without_replay_buffer:
            # Refill the buffer with the current policy for learning_starts env steps before updating.
            self.source.resumed_without_replay_buffer = False
            self.updates_resume_at = self.env_steps + self.hparams.learning_starts
            rank_zero_warn(
                f"The checkpoint has no replay buffer (save_replay_buffer=False): the buffer is refilled for "
                f"{self.hparams.learning_starts} env steps before updates resume, so this run will not match an uninterrupted one."
            )
        while not self.budget_reached:
            yield self.phases_per_training_step

    def collect_update_phase(self) -> dict[str, Tensor] | None:
        """Collect until the next update phase falls due and return its sampled batch; None once the budget is reached."""
        source, policy, steps_per_env_step = self.source, self.policy, self.source.spec.steps_per_env_step
        with stop_on_nonfinite(self):
            while not self.budget_reached:
                before = self.env_steps
                source.collect_step(policy, before)
                self.env_steps = before + steps_per_env_step
                num_gradient_steps = self.updates_due(before, self.env_steps)
                if num_gradient_steps:
                    tic = self.timer.start()
                    sync_obs_statistics(self)  # every rank reaches each phase, so the collective is matched
                    batch = source.sample(policy, num_gradient_steps)
                    self.timer.add("data", tic)
                    return batch
        return None

    # ----------------------------------------------------------------- training
    def training_step(self, dataloader_iter: Iterator) -> None:
        """``phases_per_training_step`` update phases: each collects its env steps, then takes its gradient steps.

        One training step is one batch for Lightning, however many phases it holds, so that epochs (and a
        resumed epoch's position) are counted in training steps. The budget may end it early.
        """
        metrics = None
        for _ in range(self.next_batch(dataloader_iter)):
            batch = self.collect_update_phase()
            if batch is None:
                break
            tic = self.timer.start()
            metrics = self.train_batch(batch)
            self.timer.add("learn", tic)
        step_lr_schedulers(self, "step")
        # Skip building the log calls on batches Lightning does not write; the budget's last batch is always written.
        if should_log(self) and (metrics is not None or self.budget_reached):
            self.log_metrics(metrics or {})

    def train_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor | float]:
        """Run one gradient step per leading index of ``batch``; return the metrics to log (override this)."""
        raise NotImplementedError

    def adam(self, params: Any, lr: float, **kwargs: Any) -> torch.optim.Adam:
        """Adam, with the fused kernel where Lightning allows it (see :func:`lightrl.optim.adam`)."""
        return adam(self, params, lr, **kwargs)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lightrl"]["num_updates"] = self.num_updates
        checkpoint["lightrl"]["updates_resume_at"] = self.updates_resume_at

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.num_updates = checkpoint["lightrl"].get("num_updates", 0)
        self.updates_resume_at = checkpoint["lightrl"].get("updates_resume_at", 0)
        self.policy.exploration.env_steps = self.env_steps  # explore() of a loaded module: the epsilon it ended with



def twin_critic_metrics(qf_loss: Tensor, qf1_loss: Tensor, qf2_loss: Tensor, qf1_values: Tensor, qf2_values: Tensor) -> dict[str, Tensor]:
    """What SAC and TD3 log of their critics' last gradient step, under CleanRL's names."""
    return {
        "losses/qf1_values": qf1_values.detach().mean(),
        "losses/qf2_values": qf2_values.detach().mean(),
        "losses/qf1_loss": qf1_loss.detach(),
        "losses/qf2_loss": qf2_loss.detach(),
        "losses/qf_loss": qf_loss.detach() / 2.0,  # the mean of the two, as CleanRL logs it
    }


def check_continuous(module: OffPolicyAlgorithm) -> tuple[int, spaces.Box, nn.Module | None]:
    """Probe the env and return ``(obs_dim, action_space, encoder)`` for SAC and TD3.

    They take flat vector observations as they are; other observations (Dicts without images) through
    a parameter-free encoder (one-hot, flatten, concatenate), whose output size is then ``obs_dim``.
    """
    obs_space, action_space = module.probe_spaces()
    encoder = observation_encoder(obs_space)
    if encoder is None:
        return int(np.prod(obs_space.shape)), action_space, None
    return encoder.out_features, action_space, encoder
