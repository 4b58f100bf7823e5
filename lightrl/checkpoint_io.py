"""Checkpoint files that are never half-written, and a previous ``last.ckpt`` to fall back on.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in the
system's temp folder; where that is another filesystem than the run's (a tmpfs ``/tmp``), the final move
is a copy into the checkpoint's own path, which a full disk or a kill can leave half-written.
:class:`AtomicCheckpointIO` writes next to the checkpoint, syncs, then renames (``os.replace``): the
path holds the old file or the new one, whole. The ``last*.ckpt`` it replaces stays as
``last.ckpt.prev`` (a hard link: no copy), to resume from if ``last.ckpt`` is ever damaged.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

#: Suffix of the previous version of a ``last*.ckpt``.
PREVIOUS = ".prev"


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, no permission); the message says what is left to resume from."""


def previous_version(path: str | os.PathLike) -> Path | None:
    """The ``.prev`` copy that :class:`AtomicCheckpointIO` kept of ``path``, if there is one."""
    prev = Path(f"{path}{PREVIOUS}")
    return prev if prev.is_file() else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic: a temporary file beside the checkpoint, fsync, ``os.replace``.

    A failed write (``OSError``: disk full, permission, file size limit) removes the temporary file, leaves
    the previous checkpoint as it was, and raises :class:`CheckpointWriteError` with a one-line message.
    Remote paths (``s3://...``) go to Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialize first: a failure below is then always an OSError of the file system
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a process killed while writing
                stale.unlink(missing_ok=True)
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            if path.name.startswith("last") and path.is_file():
                keep_previous(path)
            os.replace(tmp, path)
            sync_folder(path.parent)
        except OSError as err:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            kept = f"the previous {path.name} is unchanged" if path.is_file() else f"the checkpoints already in {str(path.parent)!r} are unchanged"
            raise CheckpointWriteError(
                f"checkpoint {str(path)!r} could not be written ({err.strerror or err}); {kept}. "
                "Free disk space or fix the folder's permissions, then resume with --ckpt_path last."
            ) from None


def keep_previous(path: Path) -> None:
    """Keep ``path`` as ``path.prev`` (a hard link, replaced atomically); skipped where hard links are not supported."""
    link = path.with_name(f".{path.name}{PREVIOUS}.tmp-{os.getpid()}")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, f"{path}{PREVIOUS}")
    except OSError:
        link.unlink(missing_ok=True)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power loss (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpoints(Callback):
    """Makes the Trainer write checkpoints with :class:`AtomicCheckpointIO` (lightrl modules add it themselves).

    Only Lightning's default ``TorchCheckpointIO`` is replaced; a ``CheckpointIO`` plugin of your own is kept.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
