"""Quiet the first screen of a run: hide the dependencies' messages that say nothing about it.

Each filter matches one exact message from one source, so that every other warning still shows:

- Lightning's "💡 Tip" adverts for its cloud services (``rank_zero_info`` on every ``Trainer``).
- Lightning's notice that the callbacks from ``configure_callbacks`` override the Trainer's: lightrl
  replaces Lightning's default ``ModelCheckpoint`` and progress bar on purpose (see
  :func:`lightrl.callbacks.default_callbacks`). The notice still shows for any other callback.
- Lightning's remark that an ``IterableDataset`` with ``__len__`` may be inaccurate with several
  workers: lightrl's experience loader has none (``num_workers=0``), and its length is the epoch's.
- Lightning's remark that an epoch has fewer batches than ``log_every_n_steps``: it counts the logging
  interval over the whole run, so lightrl's short epochs still log every ``log_every_n_steps`` steps.
- The ``FutureWarning`` that torch 2.13 raises inside Lightning 2.6's own ``_pytree`` helper.
- Lightning's two notes that lightrl's ``training_step(self, dataloader_iter)`` is experimental; lightrl
  takes it on purpose (see :meth:`lightrl.algos.base.RLModule.next_batch`).
"""

from __future__ import annotations

import logging
import re
import warnings

#: Lightning's logger for ``rank_zero_info`` messages.
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"

HIDDEN_INFO = (
    re.compile(re.escape("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")),
    re.compile(re.escape("💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]")),
    re.compile(
        re.escape("The following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks passed to Trainer: ")
        + r"(ModelCheckpoint|TQDMProgressBar|RichProgressBar)(, (ModelCheckpoint|TQDMProgressBar|RichProgressBar))*$"
    ),
)


class HideLightningNotices(logging.Filter):
    """Drops the Lightning info messages in :data:`HIDDEN_INFO`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in HIDDEN_INFO)


def install() -> None:
    """Install the filters (idempotent); ``import lightrl`` calls it."""
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if not any(isinstance(f, HideLightningNotices) for f in logger.filters):
        logger.addFilter(HideLightningNotices())
    warnings.filterwarnings(
        "ignore", message=re.escape("You are using the `dataloader_iter` step flavor."), category=UserWarning,
        module=r"lightning\.pytorch\.trainer\.configuration_validator",
    )
    warnings.filterwarnings(
        "ignore", message=re.escape("Found `dataloader_iter` argument in the `training_step`."), category=UserWarning,
        module=r"lightning\.pytorch\.loops\.utilities",
    )
    warnings.filterwarnings(
        "ignore", message=re.escape("Your `IterableDataset` has `__len__` defined."), category=UserWarning,
        module=r"lightning\.pytorch\.utilities\.data",
    )
    warnings.filterwarnings(
        "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval", category=UserWarning,
        module=r"lightning\.pytorch\.loops\.fit_loop",
    )
    warnings.filterwarnings(
        "ignore", message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"), category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
