"""``RLModule``: the LightningModule every lightrl algorithm is built on.

What it hands to other objects and modules: hyperparameter and space checks (:mod:`lightrl.algos.checks`), the
experience source (:mod:`lightrl.data.source`, made in ``setup``), per-rank state in checkpoints
(:class:`~lightrl.algos.resume.RankState`), logging (:mod:`lightrl.algos.training_log`), precision and
non-finite guards (:mod:`lightrl.algos.precision`), evaluation (:mod:`lightrl.algos.evaluation_steps`) and LR
schedulers (:mod:`lightrl.algos.schedulers`).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from gymnasium import spaces
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from lightrl import budget, normalize
from lightrl.algos import checks, precision, training_log
from lightrl.algos import evaluation_steps as evaluation
from lightrl.algos.checks import check_base_hyperparameters, check_normalization
from lightrl.algos.resume import RankState, attached_trainer, load_run_state, save_run_state
from lightrl.algos.schedulers import keep_scheduler_monitors, resume_lambda_schedules, step_lr_schedulers
from lightrl.algos.trainer_flags import check_trainer_flags, set_log_cadence
from lightrl.callbacks import default_callbacks
from lightrl.data.collector import CollectorSpec
from lightrl.data.datasets import experience_loader
from lightrl.data.source import EnvSource
from lightrl.envs.vector import resolve_wrappers, wrapper_spec
from lightrl.policies import Policy
from lightrl.rng import seed_all
from lightrl.threads import share_cpu_threads
from lightrl.timing import IterationTimer


def collector_spec(module: RLModule) -> CollectorSpec:
    """What this rank's envs are: ``module``'s env hyperparameters, its rank and the world size."""
    hp = module.hparams
    return CollectorSpec(
        hp.env_id, hp.num_envs, hp.seed, module.trainer.global_rank, module.world_size, hp.vectorization, hp.env_kwargs,
        hp.total_timesteps, env_wrappers=tuple(hp.env_wrappers or ()) + module.mask_wrappers,
        reward_normalization=(hp.gamma, hp.clip_reward) if hp.normalize_reward else None,
    )  # fmt: skip


class RLModule(L.LightningModule):
    """Base of every lightrl algorithm: envs, experience dataloader, env-step budget, logging.

    A subclass builds its networks and :attr:`policy` in ``__init__`` (passing its own arguments and ``**kwargs``, not
    literals, to ``super().__init__``), and implements :meth:`generate_batches`, ``training_step(self, dataloader_iter)``
    and ``configure_optimizers`` (see docs/custom-algorithm.md). Training stops at ``total_timesteps`` env steps.

    Args:
        env_id: A registered gymnasium id.
        seed: Seeds the networks, the envs (``seed + rank * num_envs + i``) and the sampling RNG (``seed + rank``).
        total_timesteps: Budget in env steps, summed over sub-envs and DDP ranks.
        num_envs: Sub-envs per process.
        vectorization: ``"auto"``, ``"native"``, ``"sync"``, ``"async"`` or ``"envpool"`` (see :func:`lightrl.envs.make_vec_env`).
        env_kwargs: Keyword arguments for ``gym.make``.
        timesteps_per_epoch: Global env steps per epoch (validation, ``ModelCheckpoint``, epoch LR schedulers), in whole training steps.
        eval_episodes: Deterministic episodes per validation, split over the DDP ranks (``Trainer(limit_val_batches=0)``: none).
        test_episodes: Deterministic episodes of ``trainer.test``, on envs of their own seeds.
        capture_video: Record one episode at each validation (mp4 beside the run, and to W&B).
        check_env: Run gymnasium's env checker on the env before training.
        collector: ``"sync"`` (act and train in turn) or ``"async"`` (an actor process, :mod:`lightrl.data.async_actor`).
        compile: ``torch.compile`` the policy networks and the loss functions (see :mod:`lightrl.compile`).
        env_wrappers: gymnasium wrappers of every sub-env, ``{"class_path": ..., "init_args": {...}}`` or callables ``env -> env``.
        normalize_obs: Normalize observations by running statistics, buffers of the policy (checkpointed, exported).
        normalize_reward: Divide rewards by the running std of each sub-env's discounted return (SB3's VecNormalize).
        clip_obs: Normalized observations are clipped to ``[-clip_obs, clip_obs]``.
        clip_reward: Normalized rewards are clipped to ``[-clip_reward, clip_reward]``.
        gamma: Discount factor in (0, 1]: the algorithm's, and that of ``normalize_reward``'s returns.
        max_grad_norm: Clip each optimizer's parameter groups to this norm, after AMP unscaling; ``None``: no clipping.
        action_masking: Never take an action the env marks invalid (PPO, A2C, DQN); ``None``: when the env gives masks (:mod:`lightrl.envs.masks`).
        recurrent: ``"lstm"`` or ``"gru"``: a recurrent core after the observation encoder (PPO, A2C; :mod:`lightrl.nn.recurrent`); ``None``: none.
    """

    #: Space classes the algorithm accepts, checked by :meth:`probe_spaces` (``spaces.Dict``: of the others).
    observation_spaces: tuple[type[spaces.Space], ...] = (spaces.Box,)
    action_spaces: tuple[type[spaces.Space], ...] = (spaces.Discrete, spaces.Box)
    #: Whether ``(C, H, W)`` uint8 image observations (or Dict parts) are accepted.
    image_observations: bool = True
    #: Shown after an unsupported action space: what to use instead.
    action_space_hint: str = ""
    #: Whether ``action_masking`` can be on: the algorithm builds masked networks when ``action_mask_source`` is set.
    supports_action_masking: bool = False
    #: Whether ``collector="async"`` works: it collects through :attr:`source` and acts only through :attr:`policy`.
    supports_async_collector: bool = False
    #: The acting part, built by the subclass's ``__init__``: what sources, evaluation and export act with.
    policy: Policy
    #: Env steps between log points under Lightning's default ``log_every_n_steps`` (:func:`~lightrl.algos.trainer_flags.set_log_cadence`).
    log_interval: int = 2048

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        seed: int = 1,
        total_timesteps: int = 100_000,
        num_envs: int = 4,
        vectorization: str = "auto",
        env_kwargs: dict[str, Any] | None = None,
        timesteps_per_epoch: int = 20_000,
        eval_episodes: int = 10,
        test_episodes: int = 100,
        capture_video: bool = False,
        check_env: bool = False,
        collector: str = "sync",
        compile: bool = False,
        env_wrappers: list[dict[str, Any] | str] | None = None,
        normalize_obs: bool = False,
        normalize_reward: bool = False,
        clip_obs: float = 10.0,
        clip_reward: float = 10.0,
        gamma: float = 0.99,
        max_grad_norm: float | None = None,
        action_masking: bool | None = None,
        recurrent: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        check_base_hyperparameters(type(self), self.hparams)
        wrappers = [wrapper_spec(entry, i) for i, entry in enumerate(env_wrappers or ())]
        self.env_wrappers = resolve_wrappers(wrappers)  # what every env of this module is wrapped with
        self.hparams.env_wrappers = wrappers or None  # as plain data (class paths): checkpoints and the async actor hold no code
        self.env_steps = self.skipped_optimizer_steps = 0
        self.action_mask_source, self.mask_wrappers = None, ()  # where masks come from, and their wrappers: set by probe_spaces
        #: Where the experience comes from (made at ``setup``, see :meth:`make_source`); closed at the end of a fit.
        self.source: EnvSource | None = None
        self.episode_return, self.episode_length = MeanMetric(), MeanMetric()  # what log_metrics averages
        self.fit_start: tuple[float, int] | None = None  # (time, env_steps) at on_train_start: the SPS clock
        #: This process's RNG, source and exploration states, saved in checkpoints (see :class:`~lightrl.algos.resume.RankState`).
        self.rank_state = RankState(self)
        self.scheduler_monitors: dict[Any, tuple[str, bool]] = {}  # filled by configure_optimizers (keep_scheduler_monitors)
        self.timer = IterationTimer()  # time/* metrics: where each iteration's time goes

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        keep_scheduler_monitors(cls)  # Lightning drops schedulers' "monitor" under manual optimization

    probe_spaces, setup_normalization = checks.probe_spaces, normalize.setup_normalization  # plain functions: see their docstrings

    @property
    def world_size(self) -> int:
        """Number of DDP processes (1 outside a Trainer)."""
        trainer = attached_trainer(self)
        return trainer.world_size if trainer is not None else 1

    env_steps_per_batch: int | None = None
    """Global env steps collected for one training batch (all ranks); None if it varies (the run is then one epoch)."""

    batches_per_epoch = property(budget.batches_per_epoch)

    @property
    def budget_reached(self) -> bool:
        """Whether :attr:`env_steps` has reached ``total_timesteps``."""
        return self.env_steps >= self.hparams.total_timesteps

    @property
    def collecting(self) -> bool:
        """Whether a fit's experience source is open (between ``setup`` and ``teardown``)."""
        return self.source is not None and not self.source.closed

    def setup(self, stage: str) -> None:
        if stage != "fit" or self.collecting:
            return
        share_cpu_threads(self.trainer)
        seed_all(self.hparams.seed + self.trainer.global_rank)
        check_normalization(self)
        self.source = self.make_source(collector_spec(self))  # "sync": the envs, here; "async": an actor process, at the first batch

    def make_source(self, spec: CollectorSpec) -> EnvSource:
        """This fit's experience source over the envs of ``spec`` (override this); here the bare envs, stepped by the module."""
        return EnvSource(spec, self.device, self.timer, partial(precision.acting_context, self), self.hparams.collector)

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self.collecting:
            self.rank_state.final = self.rank_state.state_dict()  # so that a checkpoint saved after fit can still continue the run
            self.source.close()  # the envs (and the actor process); what the source stored stays readable

    def train_dataloader(self) -> DataLoader:
        self.source.device = self.device
        # Every rank computes the same length from global counters, so all end each epoch at the same batch.
        return experience_loader(self._batches, self.batches_per_epoch)

    def _batches(self) -> Iterator[Any]:
        self.rank_state.resume()  # the RNG states, at the first batch, once Lightning has set everything up
        self.source.start(self.policy, self.env_steps)
        yield from self.generate_batches()

    def next_batch(self, dataloader_iter: Iterator) -> Any:
        """The next batch, when ``training_step(self, dataloader_iter)`` asks for it: not prefetched with older weights."""
        batch, _batch_idx, _dataloader_idx = next(dataloader_iter)
        return batch

    def generate_batches(self) -> Iterator[Any]:
        """Step the envs and yield training batches until the budget is reached (override this)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- updates, checkpoints, logging
    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``manual_backward``, refusing a NaN or Inf loss before it reaches the weights."""
        precision.check_finite_loss(self, loss)
        super().manual_backward(loss, *args, **kwargs)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        precision.clip_gradients(self, optimizer, self.hparams.max_grad_norm)  # after the AMP scaler has unscaled them

    on_save_checkpoint, on_load_checkpoint = save_run_state, load_run_state  # what a checkpoint holds beyond Lightning's: see resume.py

    def on_train_start(self) -> None:
        self.fit_start = (time.perf_counter(), self.env_steps)
        self.timer.reset()
        resume_lambda_schedules(self.trainer)  # a resume with a longer budget: the restored lr is the old budget's

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.source.publish(self.policy)  # the async actor acts with the new weights from its next batch
        self.timer.step()
        if self.budget_reached:
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        training_log.log_recent_return(self)
        step_lr_schedulers(self, "epoch")
        if self.budget_reached:
            self.trainer.should_stop = True

    sps, log_metrics = property(training_log.steps_per_second), training_log.log_metrics  # what is logged and when: see training_log

    # ----------------------------------------------------------------- Lightning's validate, test and predict
    def forward(self, obs: Tensor) -> Tensor:
        """The policy's deterministic actions for a batch of observations (what ``trainer.predict`` returns)."""
        return self.policy.act(obs)

    # Plain functions of lightrl.algos.evaluation_steps, which say what each plays and logs.
    val_dataloader = test_dataloader = evaluation.evaluation_dataloader
    predict_dataloader = evaluation.first_observations
    validation_step = evaluation.validation_step
    test_step = evaluation.test_step
    predict_step = evaluation.predict_step

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        # The first hook with the Trainer attached, before any env exists: refuse Trainer flags that cannot apply.
        check_trainer_flags(self.trainer, self)
        set_log_cadence(self.trainer, self)
        return default_callbacks(self)
