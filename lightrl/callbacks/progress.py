"""Progress bars that count env steps against ``total_timesteps``, for Lightning's TQDM and Rich bars."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar


def env_step_metrics(pl_module: L.LightningModule) -> dict[str, str]:
    """SPS and the mean return of the last 100 episodes, as the bars show them."""
    metrics = {"SPS": f"{pl_module.sps:.0f}"}
    recent = pl_module.source.recent_returns if pl_module.collecting else ()
    if recent:
        metrics["return"] = f"{sum(recent) / len(recent):.1f}"
    return metrics


def env_steps_done(pl_module: L.LightningModule) -> int:
    """The env steps the bar shows: ``env_steps``, at most ``total_timesteps``."""
    return min(pl_module.env_steps, pl_module.hparams.total_timesteps)


class EnvStepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting env steps with SPS and the mean return of the last 100 episodes.

    lightrl modules install it in place of the default bar; pass ``Trainer(enable_progress_bar=False)``
    to have none.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=pl_module.hparams.total_timesteps)
        bar.n = env_steps_done(pl_module)
        bar.unit = "steps"
        bar.set_description("env steps")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        """SPS and the mean return of the last 100 episodes (also shown at the end of the epoch)."""
        return env_step_metrics(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = env_steps_done(pl_module)
        if self._should_update(batch_idx + 1, None) or n >= self.train_progress_bar.total:
            self.train_progress_bar.n = n
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            self.train_progress_bar.refresh()


class EnvStepRichProgressBar(RichProgressBar):
    """Lightning's Rich bar, counting env steps with SPS and the recent mean return.

    lightrl modules install it in place of ``RichProgressBar()`` (``--trainer.callbacks RichProgressBar``).
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._show_env_steps(pl_module)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        """SPS and the mean return of the last 100 episodes."""
        return env_step_metrics(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._show_env_steps(pl_module)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def _show_env_steps(self, pl_module: L.LightningModule) -> None:
        if self.progress is not None and self.train_progress_bar_id is not None:
            total = pl_module.hparams.total_timesteps
            self.progress.update(self.train_progress_bar_id, total=total, completed=env_steps_done(pl_module), description="env steps")
