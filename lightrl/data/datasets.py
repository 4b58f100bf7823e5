"""The IterableDataset through which Lightning pulls experience from an algorithm's envs."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader, IterableDataset


class ExperienceDataset(IterableDataset):
    """Yields the batches of ``generate()``: a rollout (on-policy) or replay samples (off-policy).

    Acting happens here, in the main process and with the module's current weights: the loader must
    use ``num_workers=0`` (a worker process would hold a stale copy of the policy). The generator
    belongs to the module, which keeps env state between iterators.
    """

    def __init__(self, generate: Callable[[], Iterator[Any]]):
        self.generate = generate

    def __iter__(self) -> Iterator[Any]:
        return iter(self.generate())


def experience_loader(generate: Callable[[], Iterator[Any]]) -> DataLoader:
    """A DataLoader over :class:`ExperienceDataset` that passes each batch through unchanged."""
    return DataLoader(ExperienceDataset(generate), batch_size=None, num_workers=0)
