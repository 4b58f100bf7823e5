"""Lightning's validate, test and predict for an :class:`~lightrl.algos.base.RLModule`: its hooks are these plain functions.

:func:`evaluate_and_log` plays deterministic episodes on envs of their own, split over the DDP ranks, and
logs the statistics through ``module.log``, so that stock callbacks (``ModelCheckpoint``,
``EarlyStopping``, ``ReduceLROnPlateau``) see them. :func:`record_video` records one episode.
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

from lightrl.algos.resume import checkpoint_dir
from lightrl.data.collector import Collector
from lightrl.data.datasets import evaluation_loader, own_generator
from lightrl.envs.vector import make_vec_env
from lightrl.evaluation import play_episodes
from lightrl.rng import isolated_rng

#: Seeds of the evaluation envs, apart from the training envs' ``seed + rank * num_envs + i``.
EVAL_SEED_OFFSET = 10_000
TEST_SEED_OFFSET = 20_000


def first_observations(module: Any) -> DataLoader:
    """``predict_dataloader``: the first observations of ``eval_episodes`` fresh episodes (pass your own to ``trainer.predict`` instead)."""
    hp = module.hparams
    envs = make_vec_env(hp.env_id, hp.eval_episodes, seed=hp.seed + TEST_SEED_OFFSET, env_kwargs=hp.env_kwargs, env_wrappers=module.env_wrappers)
    try:
        obs = Collector(envs, torch.device("cpu")).reset()
    finally:
        envs.close()
    return DataLoader([obs], batch_size=None, num_workers=0, generator=own_generator())


def evaluate_and_log(module: Any, prefix: str, num_episodes: int, seed: int) -> None:
    """Play ``num_episodes`` deterministic episodes split over the ranks, and log their statistics under ``prefix/``.

    Rank ``r`` plays its share on envs seeded from ``seed + 1000 * r``. The results of all ranks are
    gathered, so every rank logs the same values. The global RNGs are left as they were, so that
    evaluating never changes training.
    """
    rank, world = module.global_rank, module.world_size
    mine = num_episodes // world + int(rank < num_episodes % world)
    slots = -(-num_episodes // world)  # all_gather needs the same shape on every rank: pad with NaN
    results = torch.full((slots, 2), math.nan, dtype=torch.float64, device=module.device)
    if mine:
        with isolated_rng():
            returns, lengths = play_episodes(module, mine, seed=seed + 1000 * rank)
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
        f"{prefix}/episodes": torch.tensor(float(len(returns)), dtype=torch.float64, device=module.device),
        "step": torch.tensor(float(module.env_steps), dtype=torch.float64, device=module.device),  # x-axis: env steps
    }
    # The values are already equal on all ranks; sync_dist keeps Lightning's epoch-level checks satisfied.
    module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)


def evaluation_dataloader(module: Any) -> DataLoader:
    """``val_dataloader`` and ``test_dataloader``: one batch, since :func:`validation_step` plays all the episodes."""
    return evaluation_loader()


def validation_step(module: Any, batch: Any, batch_idx: int) -> None:
    """Play ``eval_episodes`` deterministic episodes; log ``eval/return_mean``, ``eval/return_std``, ``eval/episode_length``, ``eval/episodes``.

    With ``capture_video``, rank 0 also records one episode (outside the sanity check) beside the run's checkpoints.
    """
    hp = module.hparams
    evaluate_and_log(module, "eval", hp.eval_episodes, hp.seed + EVAL_SEED_OFFSET)
    if hp.capture_video and module.global_rank == 0 and not module.trainer.sanity_checking:
        record_video(module, os.path.join(os.path.dirname(checkpoint_dir(module.trainer)), "videos"))


def test_step(module: Any, batch: Any, batch_idx: int) -> None:
    """Play ``test_episodes`` deterministic episodes; log ``test/return_mean``, ``test/return_std``, ``test/episode_length``, ``test/episodes``."""
    evaluate_and_log(module, "test", module.hparams.test_episodes, module.hparams.seed + TEST_SEED_OFFSET)


def predict_step(module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
    """Deterministic actions for a batch of observations (a tensor, or a ``TensorDataset``'s 1-tuple)."""
    return module(batch[0] if isinstance(batch, (tuple, list)) else batch)


def record_video(module: Any, folder: str) -> str:
    """Play one deterministic episode into ``<folder>/eval-step<N>-episode-0.mp4``, log it to W&B; return its path."""
    prefix = f"eval-step{module.env_steps}"
    record = partial(gym.wrappers.RecordVideo, video_folder=folder, name_prefix=prefix, episode_trigger=lambda episode: episode == 0, disable_logger=True)
    with isolated_rng():
        play_episodes(module, 1, seed=module.hparams.seed + EVAL_SEED_OFFSET - 1, env_kwargs={"render_mode": "rgb_array"}, wrappers=[record])
    path = os.path.join(folder, f"{prefix}-episode-0.mp4")
    for logger in module.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_video("eval/video", [path], step=module.env_steps)
    return path
