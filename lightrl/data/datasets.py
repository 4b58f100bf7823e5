"""The datasets through which Lightning pulls experience from an algorithm's envs, and evaluation runs."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset


class ExperienceDataset(IterableDataset):
    """Yields the batches of ``generate()``: a rollout (on-policy) or update phases (off-policy).

    Acting happens here, in the main process and with the module's current weights: the loader must
    use ``num_workers=0`` (a worker process would hold a stale copy of the policy). The generator
    belongs to the module, which keeps env state between iterators: Lightning makes a new iterator at
    each epoch, and it continues where the previous one stopped.

    With ``batches_per_epoch``, ``len()`` is the number of batches in one epoch, so that Lightning ends
    each epoch after that many training steps (and runs its epoch-end validation and callbacks then).
    Without it the dataset has no length and the whole run is one epoch.
    """

    def __init__(self, generate: Callable[[], Iterator[Any]], batches_per_epoch: int | None = None):
        self.generate = generate
        self.batches_per_epoch = batches_per_epoch

    def __iter__(self) -> Iterator[Any]:
        return iter(self.generate())

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("this experience stream has no epochs")  # what len() of an unsized dataset raises
        return self.batches_per_epoch


class ExperienceLoader(DataLoader):
    """A DataLoader over :class:`ExperienceDataset` that Lightning may resume in the middle of an epoch.

    Lightning's ``state_dict`` / ``load_state_dict`` interface marks a loader as resumable. The position in
    the experience stream (env steps, envs, RNG states, replay buffer) is saved by the module itself,
    under ``checkpoint["lightrl"]`` and ``checkpoint["lightrl_ranks"]`` (see :mod:`lightrl.algos.resume`),
    so the loader has nothing of its own to add.
    """

    def state_dict(self) -> dict[str, Any]:
        """Empty: the module's checkpoint section holds the stream's position."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the module's ``on_load_checkpoint`` restores the stream's position."""


def experience_loader(generate: Callable[[], Iterator[Any]], batches_per_epoch: int | None = None) -> DataLoader:
    """An :class:`ExperienceLoader` that passes each batch through unchanged."""
    return ExperienceLoader(ExperienceDataset(generate, batches_per_epoch), batch_size=None, num_workers=0, generator=own_generator())


def evaluation_loader() -> DataLoader:
    """The loader of ``validation_step`` and ``test_step``: one batch per run, whose step plays all its episodes.

    The step splits the episodes over the DDP ranks itself; every rank gets this same single batch.
    """
    return DataLoader([0], batch_size=None, num_workers=0, generator=own_generator())


def own_generator() -> torch.Generator:
    """A generator for a DataLoader's base seed, so that each new iterator (every epoch, every validation)
    leaves the global torch RNG, and with it the training run, as it was."""
    return torch.Generator().manual_seed(0)
