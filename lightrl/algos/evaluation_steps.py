"""The evaluation half of :class:`~lightrl.algos.base.RLModule`: Lightning's validate, test and predict loops.

``validation_step`` and ``test_step`` play deterministic episodes on envs of their own, split over the
DDP ranks, and log the statistics through ``self.log``, so that stock callbacks (``ModelCheckpoint``,
``EarlyStopping``, ``ReduceLROnPlateau``) see them. ``forward`` and ``predict_step`` give the policy's
deterministic actions.
"""

from __future__ import annotations

import math
import os
from functools import partial
from typing import Any

import gymnasium as gym
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torch.utils.data import DataLoader

from lightrl.rng import isolated_rng
from lightrl.data.collector import Collector
from lightrl.data.datasets import evaluation_loader, own_generator
from lightrl.envs.vector import make_vec_env
from lightrl.evaluation import play_episodes

#: Seeds of the evaluation envs, apart from the training envs' ``seed + rank * num_envs + i``.
EVAL_SEED_OFFSET = 10_000
TEST_SEED_OFFSET = 20_000


class EvaluationSteps:
    """``forward``, the validation, test and predict dataloaders and steps of every lightrl algorithm."""

    def forward(self, obs: Tensor) -> Tensor:
        """The policy's deterministic actions for a batch of observations (what ``trainer.predict`` returns)."""
        return self.act(obs, deterministic=True)

    # ----------------------------------------------------------------- evaluation: Lightning's validate, test, predict
    def val_dataloader(self) -> DataLoader:
        """One batch: ``validation_step`` plays all the evaluation episodes."""
        return evaluation_loader()

    def test_dataloader(self) -> DataLoader:
        """One batch: ``test_step`` plays all the test episodes."""
        return evaluation_loader()

    def predict_dataloader(self) -> DataLoader:
        """The first observations of ``eval_episodes`` fresh episodes; pass your own observations to ``trainer.predict`` instead."""
        envs = make_vec_env(self.hparams.env_id, self.hparams.eval_episodes, seed=self.hparams.seed + TEST_SEED_OFFSET,
                            env_kwargs=self.hparams.env_kwargs, env_wrappers=self.env_wrappers)  # fmt: skip
        try:
            collector = Collector(envs, torch.device("cpu"))
            collector.reset()
            obs = collector.obs
        finally:
            envs.close()
        return DataLoader([obs], batch_size=None, num_workers=0, generator=own_generator())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Play ``eval_episodes`` deterministic episodes; log ``eval/return_mean``, ``eval/return_std``, ``eval/episode_length``, ``eval/episodes``."""
        self.evaluation_step("eval", self.hparams.eval_episodes, self.hparams.seed + EVAL_SEED_OFFSET)
        if self.hparams.capture_video and self.global_rank == 0 and not self.trainer.sanity_checking:
            self.record_video()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Play ``test_episodes`` deterministic episodes; log ``test/return_mean``, ``test/return_std``, ``test/episode_length``, ``test/episodes``."""
        self.evaluation_step("test", self.hparams.test_episodes, self.hparams.seed + TEST_SEED_OFFSET)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Deterministic actions for a batch of observations (a tensor, or a ``TensorDataset``'s 1-tuple)."""
        obs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(obs)

    def evaluation_step(self, prefix: str, num_episodes: int, seed: int) -> None:
        """Play ``num_episodes`` deterministic episodes split over the ranks, and log their statistics under ``prefix/``.

        Rank ``r`` plays its share on envs seeded from ``seed + 1000 * r``. The results of all ranks are
        gathered, so every rank logs the same values. The global RNGs are left as they were, so that
        evaluating never changes training.
        """
        rank, world = self.global_rank, self.world_size
        mine = num_episodes // world + int(rank < num_episodes % world)
        slots = -(-num_episodes // world)  # all_gather needs the same shape on every rank: pad with NaN
        results = torch.full((slots, 2), math.nan, dtype=torch.float64, device=self.device)
        if mine:
            with isolated_rng():
                returns, lengths = play_episodes(self, mine, seed=seed + 1000 * rank)
            results[:mine] = torch.tensor([returns, lengths], dtype=torch.float64).T
        if world > 1 and torch.distributed.is_initialized():
            # torch.distributed's list all_gather: LightningModule.all_gather goes through a deprecated torch function.
            parts = [torch.empty_like(results) for _ in range(world)]
            torch.distributed.all_gather(parts, results)
            results = torch.cat(parts)
        gathered = results.reshape(-1, 2)
        gathered = gathered[~gathered[:, 0].isnan()]
        returns, lengths = gathered[:, 0], gathered[:, 1]
        metrics = {
            f"{prefix}/return_mean": returns.mean(),
            f"{prefix}/return_std": returns.std(unbiased=False),
            f"{prefix}/episode_length": lengths.mean(),
            f"{prefix}/episodes": torch.tensor(float(len(returns)), dtype=torch.float64, device=self.device),
            "step": torch.tensor(float(self.env_steps), dtype=torch.float64, device=self.device),  # x-axis: env steps
        }
        # The values are already equal on all ranks; sync_dist keeps Lightning's epoch-level checks satisfied.
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)

    def record_video(self) -> str:
        """Play one deterministic episode into ``<run>/videos/eval-step<N>-episode-0.mp4``, log it to W&B; return its path."""
        folder = os.path.join(os.path.dirname(self.checkpoint_dir()), "videos")
        prefix = f"eval-step{self.env_steps}"
        record = partial(gym.wrappers.RecordVideo, video_folder=folder, name_prefix=prefix, episode_trigger=lambda episode: episode == 0, disable_logger=True)
        with isolated_rng():
            play_episodes(self, 1, seed=self.hparams.seed + EVAL_SEED_OFFSET - 1, env_kwargs={"render_mode": "rgb_array"}, wrappers=[record])
        path = os.path.join(folder, f"{prefix}-episode-0.mp4")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_video("eval/video", [path], step=self.env_steps)
        return path
