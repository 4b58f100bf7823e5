"""Evaluation during training, with the best checkpoint by evaluation return and videos."""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

import gymnasium as gym
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from lightrl.rng import rng_state, set_rng_state
from lightrl.evaluation import episode_returns


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Leave the global torch, numpy and python RNGs as they were, so evaluation never changes training."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class EvalCheckpoint(ModelCheckpoint):
    """Evaluate every ``every_n_env_steps`` and keep the best checkpoint by ``eval/return_mean``, plus ``last``.

    Each evaluation plays ``num_episodes`` deterministic episodes on fresh envs (split over the DDP
    ranks, seeded apart from the training envs), logs ``eval/return_mean`` and ``eval/return_std`` at
    the current env step, and then saves ``best-step=<env step>.ckpt`` if the mean return is the best so
    far, and ``last.ckpt``. The end of training always brings a last evaluation. With
    ``capture_video=True`` one more episode is recorded on rank 0 (gymnasium's ``RecordVideo``,
    ``rgb_array``): the mp4 goes to ``videos/`` beside the checkpoints and, with a W&B logger, to the run
    as ``eval/video``.

    lightrl modules add this callback themselves when ``eval_frequency > 0``; it then takes the place
    of the Trainer's default ``ModelCheckpoint``.

    Args:
        every_n_env_steps: Global env steps between evaluations.
        num_episodes: Episodes per evaluation, over all ranks.
        capture_video: Record one episode per evaluation.
        seed: Seed of the evaluation envs (rank ``r`` uses ``seed + 1000 * r``).
        **kwargs: ``ModelCheckpoint`` arguments (``dirpath``, ``save_top_k``, ...); ``monitor``, ``mode``
            and ``save_last`` are set by this callback.
    """

    MONITOR = "eval/return_mean"

    def __init__(self, every_n_env_steps: int, num_episodes: int = 10, capture_video: bool = False, seed: int = 10_000, **kwargs: Any):
        if every_n_env_steps < 1:
            raise ValueError(f"every_n_env_steps must be a positive number of env steps, got {every_n_env_steps}.")
        kwargs.setdefault("filename", "best-{step}")
        super().__init__(monitor=self.MONITOR, mode="max", save_last=True, **kwargs)
        self.every_n_env_steps = every_n_env_steps
        self.num_episodes = num_episodes
        self.capture_video = capture_video
        self.seed = seed
        self.evaluated_at = -1
        self.last_result: tuple[float, float] | None = None
        self.last_video: str | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        steps = pl_module.env_steps
        due = steps // self.every_n_env_steps > max(self.evaluated_at, 0) // self.every_n_env_steps
        if steps == self.evaluated_at or not (due or pl_module.budget_reached):
            return
        mean, std = self.evaluate(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = {**self._monitor_candidates(trainer), self.MONITOR: torch.tensor(mean), "eval/return_std": torch.tensor(std), "step": torch.tensor(steps)}
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: checkpoints are saved after each evaluation, including the one at the end."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: lightrl evaluates in the training loop."""

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[float, float]:
        """Run one evaluation, log it, and return ``(mean, std)`` of the return over all ranks."""
        rank, world = trainer.global_rank, trainer.world_size
        per_rank = -(-self.num_episodes // world)
        with isolated_rng():
            returns = episode_returns(pl_module, per_rank, seed=self.seed + 1000 * rank)
            if self.capture_video and trainer.is_global_zero:
                self.last_video = self.record_video(trainer, pl_module)
        gathered = trainer.strategy.all_gather(torch.tensor(returns, dtype=torch.float64, device=pl_module.device))
        all_returns = gathered.reshape(-1).double()
        mean, std = all_returns.mean().item(), all_returns.std(unbiased=False).item()
        self.evaluated_at, self.last_result = pl_module.env_steps, (mean, std)
        metrics = {self.MONITOR: mean, "eval/return_std": std}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=pl_module.env_steps)
            if self.last_video and isinstance(logger, WandbLogger) and trainer.is_global_zero:
                logger.log_video("eval/video", [self.last_video], step=pl_module.env_steps)
        return mean, std

    def record_video(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """Play one deterministic episode into ``<run>/videos/eval-step<N>-episode-0.mp4``; return its path."""
        folder = os.path.join(os.path.dirname(str(self.dirpath)), "videos")
        prefix = f"eval-step{pl_module.env_steps}"
        record = partial(gym.wrappers.RecordVideo, video_folder=folder, name_prefix=prefix, episode_trigger=lambda _: True, disable_logger=True)
        episode_returns(pl_module, 1, seed=self.seed - 1, env_kwargs={"render_mode": "rgb_array"}, wrappers=[record])
        return os.path.join(folder, f"{prefix}-episode-0.mp4")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "evaluated_at": self.evaluated_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.evaluated_at = state_dict.get("evaluated_at", -1)
