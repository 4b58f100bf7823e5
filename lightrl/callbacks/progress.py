"""A progress bar that counts env steps against ``total_timesteps``."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class EnvStepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting env steps with SPS and the mean return of the last 100 episodes.

    lightrl modules install it in place of the default bar; pass ``Trainer(enable_progress_bar=False)``
    to have none.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=pl_module.hparams.total_timesteps)
        bar.n = pl_module.env_steps
        bar.unit = "steps"
        bar.set_description("env steps")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        """SPS and the mean return of the last 100 episodes (also shown at the end of the epoch)."""
        metrics = {"SPS": f"{pl_module.sps:.0f}"}
        recent = pl_module.collector.recent_returns if pl_module.collector is not None else ()
        if recent:
            metrics["return"] = f"{sum(recent) / len(recent):.1f}"
        return metrics

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = min(pl_module.env_steps, pl_module.hparams.total_timesteps)
        if self._should_update(batch_idx + 1, None) or n >= self.train_progress_bar.total:
            self.train_progress_bar.n = n
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            self.train_progress_bar.refresh()
