"""Closing the module's envs (and the async actor process) when ``fit`` fails."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class CloseSourceOnException(Callback):
    """Closes the module's experience source when ``fit`` fails: Lightning then skips the module's ``teardown``.

    Without it a failed fit would leave the async actor process (or ``vectorization="async"`` workers)
    running. lightrl modules add it themselves; it closes the module's ``source``.
    """

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if pl_module.collecting:
            pl_module.source.close()
