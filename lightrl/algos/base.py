"""``RLModule``: the LightningModule every lightrl algorithm is built on."""

from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from gymnasium import spaces
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from lightrl.algos import evaluation_steps as evaluation
from lightrl.algos.resume import RankState, attached_trainer, check_resume, checkpoint_dir, checkpoint_metadata, fail_nonfinite
from lightrl.algos.schedulers import keep_scheduler_monitors, resume_lambda_schedules, step_lr_schedulers
from lightrl.algos.trainer_flags import check_trainer_flags, set_log_cadence
from lightrl.callbacks import default_callbacks
from lightrl.data.collector import CollectorSpec
from lightrl.data.datasets import evaluation_loader, experience_loader
from lightrl.data.source import COLLECTOR_MODES, EnvSource
from lightrl.envs.checks import require_video_support, run_env_checker
from lightrl.envs.masks import mask_wrapper_spec, masked_observation_space, probe_action_mask
from lightrl.envs.spaces import check_action_space, check_observation_space
from lightrl.envs.vector import VECTORIZATIONS, make_env, resolve_wrapper, resolve_wrappers, wrapper_spec
from lightrl.optim import OptimizerIteration, clip_grad_norm_, grad_scaler, scaler_iteration
from lightrl.policies import Policy
from lightrl.rng import seed_all
from lightrl.threads import share_cpu_threads
from lightrl.timing import IterationTimer


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds: hyperparameter checks, before any env exists."""
    if not condition:
        raise ValueError(message)


def require_widths(hidden_sizes: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``hidden_sizes`` is a non-empty list of positive layer widths."""
    require(len(hidden_sizes) > 0 and all(h > 0 for h in hidden_sizes), f"hidden_sizes must be positive widths, got {hidden_sizes}.")


class RLModule(L.LightningModule):
    """Base of every lightrl algorithm: envs, experience dataloader, env-step budget, logging.

    A subclass builds its networks in ``__init__`` (after calling ``super().__init__`` and
    :meth:`probe_spaces`), with the acting ones inside its :attr:`policy` (a :class:`~lightrl.policies.Policy`:
    what collectors, evaluation and :func:`lightrl.export` act with), and implements :meth:`generate_batches`
    (what the dataloader yields), ``training_step(self, dataloader_iter)`` (which takes its batch with
    :meth:`next_batch`) and ``configure_optimizers``. The Trainer owns precision, devices
    and strategy. ``total_timesteps`` counts env steps over all sub-envs and all DDP ranks; training
    stops once :attr:`env_steps` reaches it, so no ``max_steps`` is needed.

    Hyperparameters are recorded from the ``__init__`` signatures (``save_hyperparameters``, and
    LightningCLI's parser), so a subclass should pass to ``super().__init__`` only its own arguments and
    ``**kwargs``, not literals: a literal would be missing from ``hparams`` when the CLI builds the model.

    Args:
        env_id: A registered gymnasium id.
        seed: Seeds the networks' initialisation, the envs (``seed + rank * num_envs + i``) and the
            sampling RNG (``seed + rank``).
        total_timesteps: Budget in env steps, summed over sub-envs and ranks.
        num_envs: Sub-envs per process.
        vectorization: ``"auto"`` (the env's native vector env for CartPole and Atari ids without
            ``env_wrappers``, else ``"sync"``), ``"native"``, ``"sync"``, ``"async"`` (a process per sub-env, for
            expensive envs) or ``"envpool"``; see :func:`lightrl.envs.make_vec_env`.
        env_kwargs: Keyword arguments for ``gym.make``.
        timesteps_per_epoch: Global env steps per training epoch, rounded to whole training steps (a
            rollout, or ``phases_per_training_step`` update phases). Lightning's epoch-end machinery runs
            at each epoch's end: validation (evaluation), ``ModelCheckpoint`` (``last.ckpt``),
            ``EarlyStopping``, epoch-interval LR schedulers, ``max_epochs``.
        eval_episodes: Deterministic episodes per validation run (``validation_step``), on envs seeded
            apart from the training envs and split over the DDP ranks. How often validation runs is the
            Trainer's ``check_val_every_n_epoch``; ``Trainer(limit_val_batches=0)`` turns it off.
        test_episodes: Deterministic episodes of ``trainer.test`` (``test_step``), on envs of their own seeds.
        capture_video: Record one episode at each validation (mp4 beside the run, and to W&B).
        check_env: Run gymnasium's env checker on the env before training.
        collector: ``"sync"`` (act and train in turn) or ``"async"`` (an actor process collects with a copy of
            the policy while the learner trains; see :mod:`lightrl.data.async_actor`). Only for algorithms
            with ``supports_async_collector = True``; checkpoints then cannot hold the envs' state.
        compile: ``torch.compile`` the policy networks and the loss functions (CUDA graphs on GPU); see
            :mod:`lightrl.compile`. Falls back to eager, with a warning, where torch.compile is unavailable.
        env_wrappers: gymnasium wrappers applied to every sub-env, in training and evaluation, each a
            ``{"class_path": "gymnasium.wrappers.ClipAction", "init_args": {...}}`` (YAML, CLI) or an importable
            callable ``env -> env`` (Python). They sit inside lightrl's episode statistics, which still sum
            the env's raw rewards, so logged returns are the env's own.
        normalize_obs: Normalize observations by their running mean and variance (float Box observations, or
            the float Box parts of a Dict). The statistics are buffers of the policy: checkpointed, combined
            over DDP ranks, frozen in evaluation and exported with it.
        normalize_reward: Divide rewards by the running standard deviation of each sub-env's discounted return
            (``gamma``), as SB3's VecNormalize; logged returns stay raw.
        clip_obs: Normalized observations are clipped to ``[-clip_obs, clip_obs]``.
        clip_reward: Normalized rewards are clipped to ``[-clip_reward, clip_reward]``.
        gamma: Discount factor, in (0, 1]: the algorithm's, and that of ``normalize_reward``'s returns.
        max_grad_norm: Clip each optimizer's gradients (each parameter group on its own) to this global norm,
            after the AMP grad scaler has unscaled them; ``None`` disables it.
        action_masking: Never take an action the env marks invalid (algorithms with ``supports_action_masking``:
            PPO, A2C, DQN). ``None``: on when the env gives a mask, from (in this precedence) an ``"action_mask"``
            entry of its Dict observations, ``info["action_mask"]``, or an ``action_masks()`` method; ``True``: the env
            must give one; ``False``: masks are ignored. See :mod:`lightrl.envs.masks`.

    Example::

        class Greedy(lightrl.policies.Policy):
            def __init__(self, q, obs_space, action_space):
                super().__init__(obs_space, action_space)
                self.q = q

            def act(self, obs):
                return self.q(self.preprocess(obs)).argmax(-1)

            explore = act

        class MyAlgo(RLModule):
            def __init__(self, env_id="CartPole-v1", learning_rate=1e-3, **kwargs):
                super().__init__(env_id, **kwargs)
                obs_space, action_space = self.probe_spaces()
                q = lightrl.nn.mlp(obs_space.shape[0], [64], action_space.n)
                self.policy = Greedy(q, obs_space, action_space)
                self.setup_normalization()  # normalize_obs: the policy's observation statistics

            def generate_batches(self):
                ...  # step self.source.collector with self.policy, yield batches until self.budget_reached
    """

    #: Space classes the algorithm accepts; checked by :meth:`probe_spaces` (with ``spaces.Dict``, a Dict of
    #: the others, one level deep).
    observation_spaces: tuple[type[spaces.Space], ...] = (spaces.Box,)
    action_spaces: tuple[type[spaces.Space], ...] = (spaces.Discrete, spaces.Box)
    #: Whether ``(C, H, W)`` uint8 image observations (or Dict parts) are accepted.
    image_observations: bool = True
    #: Shown after an unsupported action space: what to use instead.
    action_space_hint: str = ""
    #: Whether ``action_masking`` can be on: the algorithm builds masked networks when :attr:`action_mask_source` is set.
    supports_action_masking: bool = False
    #: Whether ``collector="async"`` works: the algorithm collects through its :attr:`source` (a rollout or
    #: replay source) and acts only through its :attr:`policy`, which the actor process gets a copy of.
    supports_async_collector: bool = False
    #: The acting part, built by the subclass's ``__init__``: what collectors, evaluation and export act with.
    policy: Policy
    #: Env steps between log points under Lightning's default ``Trainer(log_every_n_steps=50)``, which
    #: lightrl replaces by ``max(1, log_interval // env_steps_per_batch)`` training steps (a log point per
    #: PPO rollout by default); an explicit ``log_every_n_steps`` is kept. See :func:`~lightrl.algos.trainer_flags.set_log_cadence`.
    log_interval: int = 1000

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
    ):
        super().__init__()
        require(isinstance(env_id, str) and bool(env_id), f"env_id must be a gymnasium id such as 'CartPole-v1', got {env_id!r}.")
        require(total_timesteps > 0, f"total_timesteps must be a positive number of env steps, got {total_timesteps}.")
        require(num_envs > 0, f"num_envs must be a positive integer, got {num_envs}.")
        require(vectorization in VECTORIZATIONS, f"vectorization must be one of {VECTORIZATIONS}, got {vectorization!r}.")
        require(timesteps_per_epoch > 0, f"timesteps_per_epoch must be a positive number of env steps, got {timesteps_per_epoch}.")
        require(eval_episodes > 0, f"eval_episodes must be a positive integer, got {eval_episodes}.")
        require(test_episodes > 0, f"test_episodes must be a positive integer, got {test_episodes}.")
        require(collector in COLLECTOR_MODES, f"collector must be one of {COLLECTOR_MODES}, got {collector!r}.")
        require(
            collector == "sync" or type(self).supports_async_collector,
            f"collector='async' is not supported by {type(self).__name__} (supports_async_collector = False); "
            "use collector='sync', or one of lightrl's PPO, A2C, DQN, SAC, TD3.",
        )
        require(
            collector == "sync" or vectorization != "async",
            "collector='async' runs the envs in one actor process, which cannot start vectorization='async' workers; "
            "use vectorization='sync' or 'envpool' with it.",
        )
        require(action_masking in (None, True, False), f"action_masking must be True, False or None (on when the env gives a mask), got {action_masking!r}.")
        require(
            action_masking is not True or type(self).supports_action_masking,
            f"action_masking=True is not supported by {type(self).__name__}; use PPO or A2C (Discrete, MultiDiscrete actions) or DQN (Discrete).",
        )
        if capture_video:
            require_video_support()
        require(isinstance(compile, bool), f"compile must be True or False, got {compile!r}.")
        require(clip_obs > 0, f"clip_obs must be positive, got {clip_obs}.")
        require(clip_reward > 0, f"clip_reward must be positive, got {clip_reward}.")
        require(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}.")
        require(max_grad_norm is None or max_grad_norm > 0, f"max_grad_norm must be positive or None, got {max_grad_norm}.")
        require(isinstance(env_wrappers, (list, tuple)) or env_wrappers is None,
                f"env_wrappers must be a list of {{'class_path': ..., 'init_args': ...}} entries, got {env_wrappers!r}.")  # fmt: skip
        require(not env_wrappers or vectorization not in ("envpool", "native"),
                f"env_wrappers do not apply to vectorization={vectorization!r} (one vector env, no per-env wrappers); use 'sync' or 'async'.")  # fmt: skip
        wrappers = [wrapper_spec(entry, i) for i, entry in enumerate(env_wrappers or ())]
        #: The resolved ``env_wrappers``: what every env of this module is wrapped with.
        self.env_wrappers = resolve_wrappers(wrappers)
        self.save_hyperparameters()
        # As plain data (class paths), so that checkpoints and the async actor hold no code.
        self.hparams.env_wrappers = wrappers or None
        #: Where the env's action mask comes from (``"obs"``, ``"info"``, ``"method"``), set by :meth:`probe_spaces`; None: no masking.
        self.action_mask_source: str | None = None
        #: ``env_wrappers`` entries (plain data) that carry the mask into the observations; empty without masking.
        self.mask_wrappers: tuple[dict[str, Any], ...] = ()
        self.env_steps = 0
        self.skipped_optimizer_steps = 0
        #: Where the experience comes from (made at ``setup``, see :meth:`make_source`); closed at the end of a fit.
        self.source: EnvSource | None = None
        self.episode_return = MeanMetric()
        self.episode_length = MeanMetric()
        self._fit_start: tuple[float, int] | None = None
        #: This process's RNG, source and exploration states, saved in checkpoints (see :class:`~lightrl.algos.resume.RankState`).
        self.rank_state = RankState(self)
        self.scheduler_monitors: dict[Any, tuple[str, bool]] = {}  # filled by configure_optimizers (keep_scheduler_monitors)
        self.timer = IterationTimer()  # time/* metrics: where each iteration's time goes

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Lightning drops schedulers' "monitor" under manual optimization; keep it for step_lr_schedulers.
        own = cls.__dict__.get("configure_optimizers")
        if own is not None and not getattr(own, "keeps_scheduler_monitors", False):
            cls.configure_optimizers = keep_scheduler_monitors(own)

    # ----------------------------------------------------------------- spaces and envs
    def probe_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        """Create one env to read and check its spaces; call after validating hyperparameters.

        Raises:
            ValueError: on an unknown env id, or a space this algorithm does not support.
        """
        if self.hparams.check_env:
            run_env_checker(self.hparams.env_id, self.hparams.env_kwargs)
        hp = self.hparams
        own_wrappers = self.env_wrappers[: len(self.env_wrappers) - len(self.mask_wrappers)]  # without a previous probe's mask wrapper
        env = make_env(hp.env_id, hp.env_kwargs, env_wrappers=own_wrappers)
        try:
            obs_space, action_space = env.observation_space, env.action_space
            name = type(self).__name__
            check_observation_space(name, obs_space, self.observation_spaces, self.image_observations)
            check_action_space(name, action_space, self.action_spaces, self.action_space_hint)
            source = probe_action_mask(env, hp.env_id, hp.action_masking if self.supports_action_masking else False)
        finally:
            env.close()
        if source is not None:
            require(hp.vectorization not in ("native", "envpool"),
                    f"action masks are read by a wrapper of each sub-env, which vectorization={hp.vectorization!r} has not; use 'sync' or 'async'.")  # fmt: skip
            # The mask travels in the observations: every env of this module (training, evaluation, predict) gets the wrapper.
            self.mask_wrappers = (mask_wrapper_spec(source, hp.env_id),)
            obs_space = masked_observation_space(obs_space, action_space)
        else:
            self.mask_wrappers = ()
        self.env_wrappers = [*own_wrappers, *map(resolve_wrapper, self.mask_wrappers)]
        self.action_mask_source = source
        self.observation_space, self.action_space = obs_space, action_space
        return obs_space, action_space

    def setup_normalization(self) -> None:
        """Give :attr:`policy` its observation normalizer with ``normalize_obs``; call once the policy is built."""
        if self.hparams.normalize_obs:
            self.policy.normalize_observations(self.hparams.clip_obs)

    def sync_obs_statistics(self) -> None:
        """Merge the observations accumulated by every rank into the policy's statistics (a collective with DDP).

        Every rank calls it at the same point (all ranks run the same number of batches), and every rank
        ends with the same statistics.
        """
        normalizer = self.policy.obs_normalizer
        if normalizer is None:
            return
        reduce = (lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")) if self.world_size > 1 else None
        normalizer.sync(reduce)

    @property
    def world_size(self) -> int:
        """Number of DDP processes (1 outside a Trainer)."""
        trainer = attached_trainer(self)
        return trainer.world_size if trainer is not None else 1

    @property
    def env_steps_per_batch(self) -> int | None:
        """Global env steps collected for one training batch (all ranks); None if it varies.

        Epochs are counted in whole batches of this size (see :attr:`batches_per_epoch`). A subclass whose
        batches are not of a fixed size keeps None, and its run is then one epoch.
        """
        return None

    @property
    def batches_per_epoch(self) -> int | None:
        """Training batches per epoch: ``timesteps_per_epoch`` rounded to whole batches (at least one)."""
        per_batch = self.env_steps_per_batch
        if per_batch is None:
            return None
        return max(1, round(self.hparams.timesteps_per_epoch / per_batch))

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
        rank = self.trainer.global_rank
        seed_all(self.hparams.seed + rank)
        hp = self.hparams
        require(not hp.normalize_obs or self.policy.obs_normalizer is not None,
                f"normalize_obs=True, but {type(self).__name__} did not call self.setup_normalization() after building its policy.")  # fmt: skip
        spec = CollectorSpec(
            hp.env_id, hp.num_envs, hp.seed, rank, self.world_size, hp.vectorization, hp.env_kwargs, hp.total_timesteps,
            env_wrappers=tuple(hp.env_wrappers or ()) + self.mask_wrappers,
            reward_normalization=(hp.gamma, hp.clip_reward) if hp.normalize_reward else None,
        )
        # "sync": the envs, here; "async": an actor process that makes them at the first batch.
        self.source = self.make_source(spec)

    def make_source(self, spec: CollectorSpec) -> EnvSource:
        """This fit's experience source over the envs of ``spec`` (override this): here, the bare envs.

        The on- and off-policy bases return a :class:`~lightrl.data.rollout_source.RolloutSource` or a
        :class:`~lightrl.data.replay_source.ReplaySource`; a module that steps ``self.source.collector``
        itself keeps this one.
        """
        return EnvSource(spec, self.device, self.timer, self.acting_context, self.hparams.collector)

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self.collecting:
            self.rank_state.final = self.rank_state.state_dict()  # so that a checkpoint saved after fit can still continue the run
            self.source.close()  # the envs (and the actor process); what the source stored stays readable

    def train_dataloader(self) -> DataLoader:
        self.source.device = self.device
        # Every rank computes the same length from global counters, so all end each epoch at the same batch.
        return experience_loader(self._batches, self.batches_per_epoch)

    def _batches(self) -> Iterator[Any]:
        # The RNG states are restored at the first batch, once Lightning has set everything up.
        self.rank_state.resume()
        self.source.start(self.policy, self.env_steps)
        yield from self.generate_batches()

    def next_batch(self, dataloader_iter: Iterator) -> Any:
        """The next batch, fetched when the step asks for it.

        Algorithms take ``training_step(self, dataloader_iter)`` so that Lightning does not prefetch:
        a prefetched rollout would be collected with the weights from before the previous update.
        """
        batch, _batch_idx, _dataloader_idx = next(dataloader_iter)
        return batch

    def generate_batches(self) -> Iterator[Any]:
        """Step the envs and yield training batches until the budget is reached (override this)."""
        raise NotImplementedError

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """Actions for a batch of observations: :attr:`policy`'s ``act`` if ``deterministic``, else its ``explore``."""
        return self.policy.act(obs) if deterministic else self.policy.explore(obs)

    @contextmanager
    def optimizer_iteration(self) -> Iterator[OptimizerIteration]:
        """One step of each optimizer, with the AMP grad scaler updated once, at the end (see :func:`lightrl.optim.scaler_iteration`).

        Afterwards ``iteration.skipped`` tells whether the scaler skipped a step (inf/NaN gradients), so
        that target networks are not moved towards weights that did not change.

        Example::

            with self.optimizer_iteration() as iteration:
                ...  # backward and step each optimizer once
            if not iteration.skipped:
                polyak_update(self.target.parameters(), self.online.parameters(), tau)
        """
        with scaler_iteration(grad_scaler(self)) as iteration:
            yield iteration
        self.skipped_optimizer_steps += int(iteration.skipped)

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``manual_backward``, refusing a NaN or Inf loss before it reaches the weights."""
        finite = math.isfinite(loss.item()) if loss.numel() == 1 else bool(torch.isfinite(loss).all())  # item(): one scalar read, no reduction
        if not finite:
            fail_nonfinite(self, f"{'NaN' if bool(torch.isnan(loss).any()) else 'Inf'} in the loss")
        super().manual_backward(loss, *args, **kwargs)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this after the AMP scaler has unscaled the gradients, so the clipped norm is the true one.
        max_grad_norm = self.hparams.max_grad_norm
        if max_grad_norm is None:
            return
        if type(self.trainer.precision_plugin) not in (Precision, MixedPrecision):  # e.g. FSDP: the plugin's own clipping
            self.clip_gradients(optimizer, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")
            return
        # Each parameter group on its own, as if it had its own optimizer (SAC's actor and entropy coefficient).
        for group in optimizer.param_groups:
            norm = clip_grad_norm_(group["params"], max_grad_norm)  # torch's rule; see lightrl.optim
            if not math.isfinite(norm) and grad_scaler(self) is None:  # a grad scaler skips such steps itself
                fail_nonfinite(self, f"{'NaN' if math.isnan(norm) else 'Inf'} in the gradients")

    def acting_context(self):
        """The Trainer's precision context, so acting runs in the same precision as training."""
        trainer = attached_trainer(self)
        if trainer is None:
            return torch.autocast("cpu", enabled=False)
        return trainer.precision_plugin.forward_context()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightrl"] = checkpoint_metadata(self)
        self.rank_state.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_resume(self, checkpoint)
        trainer = attached_trainer(self)
        if trainer is not None and trainer.state.fn != "fit":
            # validate, test and predict use the weights: the training callbacks' states (their folders, best scores) are not theirs.
            checkpoint.pop("callbacks", None)
        self.env_steps = checkpoint["lightrl"]["env_steps"]
        self.rank_state.keep(checkpoint)
        # Checkpoints written before the policies existed keep the acting networks at the top level
        # ("agent.*", "q_network.*", "actor.*"); they now live under "policy.".
        state = checkpoint.get("state_dict")
        if state is not None:
            own = self.state_dict().keys()
            for key in [k for k in state if k not in own and f"policy.{k}" in own]:
                state[f"policy.{key}"] = state.pop(key)

    # ----------------------------------------------------------------- budget and logging
    def on_train_start(self) -> None:
        self._fit_start = (time.perf_counter(), self.env_steps)
        self.timer.reset()
        resume_lambda_schedules(self.trainer)  # a resume with a longer budget: the restored lr is the old budget's

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.source.publish(self.policy)  # the async actor acts with the new weights from its next batch
        self.timer.step()
        if self.budget_reached:
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        # For callbacks only (EarlyStopping, ModelCheckpoint with check_on_train_epoch_end): the mean return of each
        # rank's last 100 episodes, over all ranks. Loggers get charts/episodic_return at each logged step instead.
        recent = list(self.source.recent_returns) if self.collecting else []
        totals = self.trainer.strategy.reduce(torch.tensor([sum(recent), len(recent)], dtype=torch.float64, device=self.device), reduce_op="sum")
        if totals[1] > 0:  # the same on every rank, so all of them log (a collective) or none does
            self.log("charts/episodic_return", totals[0] / totals[1], on_step=False, on_epoch=True, sync_dist=True, logger=False, batch_size=1)
        step_lr_schedulers(self, "epoch")
        if self.budget_reached:
            self.trainer.should_stop = True

    @property
    def sps(self) -> float:
        """Env steps per second since training started (all ranks)."""
        if self._fit_start is None:
            return 0.0
        start_time, start_steps = self._fit_start
        return (self.env_steps - start_steps) / max(time.perf_counter() - start_time, 1e-9)

    @property
    def should_log(self) -> bool:
        """Whether the loggers write this batch's metrics: every ``Trainer(log_every_n_steps)`` batches, and the last.

        Lightning's own rule, from the Trainer's public counters: the n-th training batch of the fit
        (counted across epochs and resumes) is written when n is a multiple of ``log_every_n_steps``,
        or when training is stopping, as it is once the batch that reaches the budget ends (so the
        final values are always in the logs). On the other batches Lightning drops what ``self.log`` was given,
        so lightrl skips those calls, and the collector keeps its finished episodes, which then count
        towards the next logged mean return instead of being lost.
        """
        trainer = attached_trainer(self)
        if trainer is None:
            return True
        if trainer.log_every_n_steps == 0:
            return False
        return (trainer.fit_loop.total_batch_idx + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop or self.budget_reached

    def log_metrics(self, metrics: dict[str, Tensor | float]) -> None:
        """Log ``metrics`` and the episode statistics with the global env step as the x-axis.

        Does nothing on batches that Lightning does not write (see :attr:`should_log`).
        """
        if not self.should_log:
            return
        returns, lengths = self.source.pop_finished_episodes()
        if returns:
            self.episode_return.update(torch.tensor(returns, device=self.device))
            self.episode_length.update(torch.tensor(lengths, device=self.device, dtype=torch.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compute() before any update: the mean is nan, handled below
            mean_return, mean_length = self.episode_return.compute(), self.episode_length.compute()
        self.episode_return.reset()
        self.episode_length.reset()
        if not math.isnan(mean_return.item()):
            metrics = {**metrics, "charts/episodic_return": mean_return, "charts/episodic_length": mean_length}
        metrics = {**metrics, **self.timer.metrics(), "charts/SPS": self.sps, "env_steps": float(self.env_steps)}
        if grad_scaler(self) is not None:
            metrics["charts/skipped_optimizer_steps"] = float(self.skipped_optimizer_steps)
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
        # Lightning takes a metric named "step" as the x-axis of every logger.
        self.log("step", torch.tensor(self.env_steps, dtype=torch.float64), on_step=True, on_epoch=False, batch_size=1)

    # ----------------------------------------------------------------- evaluation: Lightning's validate, test, predict
    def forward(self, obs: Tensor) -> Tensor:
        """The policy's deterministic actions for a batch of observations (what ``trainer.predict`` returns)."""
        return self.act(obs, deterministic=True)

    def val_dataloader(self) -> DataLoader:
        return evaluation_loader()  # one batch: validation_step plays all the evaluation episodes

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader()

    def predict_dataloader(self) -> DataLoader:
        return evaluation.first_observations(self)  # pass your own observations to trainer.predict instead

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Play ``eval_episodes`` deterministic episodes; log ``eval/return_mean``, ``eval/return_std``, ``eval/episode_length``, ``eval/episodes``."""
        hp = self.hparams
        evaluation.evaluate_and_log(self, "eval", hp.eval_episodes, hp.seed + evaluation.EVAL_SEED_OFFSET)
        if hp.capture_video and self.global_rank == 0 and not self.trainer.sanity_checking:
            evaluation.record_video(self, os.path.join(os.path.dirname(checkpoint_dir(self.trainer)), "videos"))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Play ``test_episodes`` deterministic episodes; log ``test/return_mean``, ``test/return_std``, ``test/episode_length``, ``test/episodes``."""
        evaluation.evaluate_and_log(self, "test", self.hparams.test_episodes, self.hparams.seed + evaluation.TEST_SEED_OFFSET)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Deterministic actions for a batch of observations (a tensor, or a ``TensorDataset``'s 1-tuple)."""
        return self(batch[0] if isinstance(batch, (tuple, list)) else batch)

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        # The first hook Lightning calls with the Trainer attached, before it checks its own configuration
        # and before setup() creates any env: Trainer flags that cannot apply are refused here.
        check_trainer_flags(self.trainer, self)
        set_log_cadence(self.trainer, self)
        return default_callbacks(self)
