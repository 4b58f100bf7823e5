"""What DQN, SAC and TD3 share: a replay buffer filled by the exploration policy, and a fixed replay ratio.

Each vector step of every rank adds one transition per sub-env to that rank's buffer. Updates are counted
in global env steps: once ``learning_starts`` env steps have been taken, every ``train_frequency`` env steps
bring ``gradient_steps`` gradient steps. All the gradient steps that fall due at one vector step are sampled
at once and yielded as a single batch shaped ``[num_gradient_steps, batch_size, ...]``; one
``training_step`` then runs them in a loop. Lightning's overhead is thus paid once per update phase
(e.g. 128 gradient steps every 256 env steps in the RL-zoo DQN recipe), not once per gradient step.
Where phases are short (SAC and TD3 take one gradient step per env step), one ``training_step`` runs
several of them (``phases_per_training_step``), each after collecting its own env steps as before.
Since the counters are global, every DDP rank yields the same number of batches. Each rank samples
``batch_size`` transitions from its own buffer, and DDP averages the gradients: with ``world_size`` ranks a
gradient step sees ``world_size * batch_size`` transitions, and the ranks together take the same number of
gradient steps per global env step as a single process.

Mixed precision with several optimizers: Lightning's ``16-mixed`` plugin unscales, steps and calls
``scaler.update()`` at every ``optimizer.step()``. SAC and TD3 run the optimizer steps of one gradient
step inside ``RLModule.optimizer_iteration()``, which holds the update back until all of them have
stepped (as PyTorch prescribes for several optimizers) and skips the target-network update when the
scaler skipped a step. An optimizer steps at most once per iteration (the scaler allows no more), so
SAC's repeated actor updates (``policy_frequency > 1``) get an iteration each. Gradient clipping
(``max_grad_norm``) runs in :meth:`on_before_optimizer_step`, after Lightning has unscaled the gradients.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from gymnasium import spaces
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightrl.algos.base import RLModule, require
from lightrl.data.experience import Transitions
from lightrl.data.replay import ReplayBuffer
from lightrl.errors import NonFiniteError
from lightrl.nn.encoders import observation_encoder
from lightrl.optim import adam

#: With ``phases_per_training_step=None``, a ``training_step`` runs update phases until it holds this many gradient steps.
AUTO_GRADIENT_STEPS_PER_TRAINING_STEP = 8


class OffPolicyAlgorithm(RLModule):
    """Collects experience into a :class:`~lightrl.data.replay.ReplayBuffer` and yields sampled batches.

    A subclass builds its :attr:`policy` (an :class:`~lightrl.policies.ExploringPolicy`, made with
    ``learning_starts``: its ``explore`` gives the actions taken while collecting) and implements
    :meth:`train_batch` (the gradient steps of one batch) and ``configure_optimizers``.

    Args:
        buffer_size: Transitions kept in the replay buffer of each process.
        learning_starts: Global env steps collected before the first update.
        batch_size: Transitions per gradient step, per process.
        gamma: Discount factor, in (0, 1].
        tau: Target-network interpolation factor in (0, 1]; 1 copies the online network.
        train_frequency: Global env steps between update phases.
        gradient_steps: Gradient steps per update phase; the replay ratio is ``gradient_steps / train_frequency``.
        n_step: Steps summed into each sampled reward (n-step returns).
        max_grad_norm: Clip each optimizer's gradients to this global norm; ``None`` disables it.
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

    def __init__(
        self,
        buffer_size: int,
        learning_starts: int,
        batch_size: int,
        gamma: float,
        tau: float,
        train_frequency: int,
        gradient_steps: int,
        n_step: int = 1,
        max_grad_norm: float | None = None,
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
        require(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}.")
        require(0 < tau <= 1, f"tau must be in (0, 1] (1 copies the online network into the target), got {tau}.")
        require(train_frequency > 0, f"train_frequency must be a positive number of env steps, got {train_frequency}.")
        require(gradient_steps > 0, f"gradient_steps must be a positive integer, got {gradient_steps}.")
        require(n_step > 0, f"n_step must be a positive integer, got {n_step}.")
        require(max_grad_norm is None or max_grad_norm > 0, f"max_grad_norm must be positive or None, got {max_grad_norm}.")
        require(
            phases_per_training_step is None or phases_per_training_step > 0,
            f"phases_per_training_step must be a positive integer or None (automatic), got {phases_per_training_step}.",
        )
        if phases_per_training_step is None:
            phases_per_training_step = -(-AUTO_GRADIENT_STEPS_PER_TRAINING_STEP // gradient_steps)
        self.phases_per_training_step = phases_per_training_step
        self.replay_buffer: ReplayBuffer | None = None
        self.num_updates = 0  # gradient steps taken, the clock of delayed policy and target updates
        self.updates_resume_at = 0  # after resuming without a replay buffer: no updates before this env step
        self._logged_buffer_size = False
        self._sampler: torch.Generator | None = None
        self.experience = Transitions(train_frequency)

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

    def on_fit_start(self) -> None:
        # Here, unlike in setup(), the module is on its device: the buffer is allocated there.
        if self.replay_buffer is None:
            self.replay_buffer = ReplayBuffer.for_spaces(
                self.hparams.buffer_size, self.hparams.num_envs, self.observation_space, self.action_space, self.device
            )
            # Sampling and exploration draw from their own generators, seeded per rank, so runs repeat exactly.
            rank = self.trainer.global_rank
            self._sampler = torch.Generator(self.device).manual_seed(self.hparams.seed + rank)
            self.policy.exploration.reseed(self.hparams.seed + rank + 10_000)
        if self.hparams.compile:
            self.policy.compile_acting(self.device)

    # ----------------------------------------------------------------- experience
    def updates_due(self, before: int, after: int) -> int:
        """Gradient steps that fall due when the global env-step count goes from ``before`` to ``after``.

        One update phase for each multiple of ``train_frequency`` in ``(before, after]`` that is past
        ``learning_starts``, as in Stable-Baselines3 (``num_timesteps > learning_starts``).
        """
        freq = self.hparams.train_frequency
        start = max(before, self.hparams.learning_starts, self.updates_resume_at)
        if after <= start:
            return 0
        return (after // freq - start // freq) * self.hparams.gradient_steps

    @property
    def env_steps_per_batch(self) -> int:
        """Global env steps per training batch (``phases_per_training_step`` update phases) once updates have started."""
        return self.phases_per_training_step * self.hparams.train_frequency

    def generate_batches(self) -> Iterator[Iterator[dict[str, Tensor]]]:
        """Yield, per ``training_step``, an iterator over its update phases (see :meth:`update_phases`)."""
        while not self.budget_reached:
            yield self.update_phases(self.phases_per_training_step)

    def update_phases(self, count: int) -> Iterator[dict[str, Tensor]]:
        """Up to ``count`` update phases, each collected when it is asked for, after the previous one has trained.

        One training step is one batch for Lightning, however many phases it holds, so that epochs (and
        a resumed epoch's position) are counted in training steps. The budget may end the iterator early.
        """
        for _ in range(count):
            try:
                batch = self.next_phase()
            except NonFiniteError as err:  # collected here, inside training_step, not in the dataloader's generator
                self.fail_nonfinite(str(err))
            if batch is None:
                return
            yield batch

    def next_phase(self) -> dict[str, Tensor] | None:
        """Collect until an update phase falls due and return its sampled batch; None once the budget is reached."""
        while not self.budget_reached:
            before = self.env_steps
            self.collect_step()
            num_steps = self.updates_due(before, self.env_steps)
            if num_steps:
                tic = self.timer.start()
                self.sync_obs_statistics()  # every rank reaches each phase, so the collective is matched
                batch = self.sample(num_steps)
                self.timer.add("data", tic)
                return batch
        return None

    def collect_step(self) -> None:
        """One vector step with the policy's exploring actions, stored in the replay buffer.

        With ``collector="async"`` the actor process took the step: its transition is stored here.
        """
        transition = self.collector.collect(self.experience, self.policy, self.env_steps)
        timer = self.timer
        tic = timer.start()
        self.replay_buffer.add(*transition)
        if self.policy.obs_normalizer is not None:
            self.policy.obs_normalizer.accumulate(transition[0])
        tic = timer.add("data", tic)
        before = self.env_steps
        self.env_steps += self.steps_per_env_step
        self.after_env_step(before, self.env_steps)
        timer.add("learn", tic)  # target-network updates

    def after_env_step(self, before: int, after: int) -> None:
        """Called after each vector step with the global env-step count before and after it."""

    def sample(self, num_steps: int) -> dict[str, Tensor]:
        """``num_steps * batch_size`` transitions in one draw, shaped ``[num_steps, batch_size, ...]``.

        The buffer keeps raw observations; with ``normalize_obs`` they are normalized here by the current
        statistics, as Stable-Baselines3 does.
        """
        hp = self.hparams
        data = self.replay_buffer.sample(num_steps * hp.batch_size, hp.n_step, hp.gamma, self._sampler)
        normalizer = self.policy.obs_normalizer
        if normalizer is not None:
            data = {**data, "observations": normalizer(data["observations"]), "next_observations": normalizer(data["next_observations"])}
        return {key: steps_view(value, num_steps, hp.batch_size) for key, value in data.items()}

    # ----------------------------------------------------------------- training
    def training_step(self, dataloader_iter: Iterator) -> None:
        metrics = None
        for batch in self.next_batch(dataloader_iter):  # the phases are collected as the loop asks for them
            tic = self.timer.start()
            metrics = self.train_batch(batch)
            self.timer.add("learn", tic)
        self.step_lr_schedulers("step")
        if metrics is not None and self.should_log:  # skip building the log calls on batches Lightning does not write
            self.log_metrics(metrics)

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

    def rank_state(self) -> dict[str, Any]:
        state = {**super().rank_state(), "sampler": self._sampler.get_state(), "explorer": self.policy.exploration.generator.get_state()}
        if self.hparams.save_replay_buffer:
            state["replay_buffer"] = self.replay_buffer.state_dict()
            size = sum(t.nbytes for t in state["replay_buffer"].values() if isinstance(t, Tensor))
            if not self._logged_buffer_size:
                rank_zero_info(f"lightrl: checkpoints include the replay buffer ({size / 2**20:.1f} MiB per process).")
                self._logged_buffer_size = True
        return state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.num_updates = checkpoint["lightrl"].get("num_updates", 0)
        self.updates_resume_at = checkpoint["lightrl"].get("updates_resume_at", 0)
        self.policy.exploration.env_steps = self.env_steps  # explore() of a loaded module: the epsilon it ended with

    def load_rank_state(self, state: dict[str, Any]) -> None:
        super().load_rank_state(state)
        self._sampler.set_state(state["sampler"])
        self.policy.exploration.generator.set_state(state["explorer"])
        if "replay_buffer" in state:
            self.replay_buffer.load_state_dict(state["replay_buffer"])
        else:
            # Without the buffer, refill it with the current policy for learning_starts env steps before updating.
            self.updates_resume_at = self.env_steps + self.hparams.learning_starts
            rank_zero_warn(
                f"The checkpoint has no replay buffer (save_replay_buffer=False): the buffer is refilled for "
                f"{self.hparams.learning_starts} env steps before updates resume, so this run will not match an uninterrupted one."
            )


def steps_view(value: Tensor | dict[str, Tensor], num_steps: int, batch_size: int) -> Tensor | list[dict[str, Tensor]]:
    """``[num_steps * batch_size, ...]`` samples as ``[num_steps, batch_size, ...]``; a list of ``num_steps``
    dicts for Dict observations (what the training loops iterate over, one gradient step each)."""
    if isinstance(value, dict):
        parts = {key: steps_view(part, num_steps, batch_size) for key, part in value.items()}
        return [{key: part[i] for key, part in parts.items()} for i in range(num_steps)]
    return value.view(num_steps, batch_size, *value.shape[1:])


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
