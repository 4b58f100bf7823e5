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


def planned_env_steps(pl_module: L.LightningModule) -> int:
    """The env steps the run will have taken when it stops: ``total_timesteps`` rounded up to what one step adds.

    On-policy algorithms collect whole rollouts (``env_steps_per_batch``); the others stop after the vector
    step that reaches the budget (the source's ``spec.steps_per_env_step``). Never less than the steps already taken.
    """
    from lightrl.algos.on_policy import OnPolicyAlgorithm  # here: the algorithms import the callbacks

    total, done = pl_module.hparams.total_timesteps, pl_module.env_steps
    if isinstance(pl_module, OnPolicyAlgorithm):
        unit = pl_module.env_steps_per_batch
    else:  # one vector step of every rank: the source's spec, while fitting
        unit = pl_module.source.spec.steps_per_env_step if getattr(pl_module, "collecting", False) else 1
    return max(-(-total // unit) * unit if unit else total, done)


def final_metrics(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
    """What the bar ends on: the run's SPS, the mean return of the last 100 episodes over all ranks (as logged for
    callbacks at the end of the last epoch), and the last evaluation's mean return."""
    metrics = {"SPS": f"{pl_module.sps:.0f}"}
    for name, key in (("return", "charts/episodic_return"), ("eval", "eval/return_mean")):
        if key in trainer.callback_metrics:
            metrics[name] = f"{float(trainer.callback_metrics[key]):.1f}"
    return metrics


#: Lightning's TQDM format without its own rate: the bar counts env steps, and SPS is the one rate shown.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class EnvStepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting env steps with SPS and the mean return of the last 100 episodes.

    lightrl modules install it in place of the default bar; pass ``Trainer(enable_progress_bar=False)``
    to have none.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=planned_env_steps(pl_module))
        bar.n = pl_module.env_steps
        bar.unit = "steps"
        bar.bar_format = BAR_FORMAT
        bar.set_description("env steps")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        """SPS and the mean return of the last 100 episodes (also shown at the end of the epoch)."""
        return env_step_metrics(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = pl_module.env_steps
        if self._should_update(batch_idx + 1, None) or n >= self.train_progress_bar.total:
            self.train_progress_bar.n = n
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            self.train_progress_bar.refresh()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """End on the run's final figures (see :func:`final_metrics`), then close the bar."""
        bar = self.train_progress_bar
        if not bar.disable:
            bar.total = bar.n = pl_module.env_steps
            bar.set_postfix(final_metrics(trainer, pl_module), refresh=False)
            bar.refresh()
        super().on_train_end(trainer, pl_module)


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

    def configure_columns(self, trainer: L.Trainer) -> list:
        """Lightning's columns without its rate of batches per second: SPS is the one rate shown."""
        return [column for column in super().configure_columns(trainer) if type(column).__name__ != "ProcessingSpeedColumn"]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._show_env_steps(pl_module)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Lightning's epoch end, with the bar left at the env steps."""
        super().on_train_epoch_end(trainer, pl_module)
        self._show_env_steps(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """End on the run's final figures (see :func:`final_metrics`)."""
        if not self.is_disabled and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, total=pl_module.env_steps, completed=pl_module.env_steps)
            if self._metric_component is not None:
                self._metric_component.update(final_metrics(trainer, pl_module))
            self.refresh()
        super().on_train_end(trainer, pl_module)

    def _show_env_steps(self, pl_module: L.LightningModule) -> None:
        if self.progress is not None and self.train_progress_bar_id is not None:
            total = planned_env_steps(pl_module)
            self.progress.update(self.train_progress_bar_id, total=total, completed=pl_module.env_steps, description="env steps")
