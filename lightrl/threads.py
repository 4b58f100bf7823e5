"""CPU threads of each process in a multi-process run: the cores shared out, not each rank taking them all.

torch's default intra-op thread count is the number of cores. With several DDP processes on one CPU
machine, each would start that many threads, and they would spin against each other on tiny networks.
Lightning's own launcher (``Trainer(devices=N)`` run as a script) already sets ``OMP_NUM_THREADS`` to
cores // N before it starts the ranks; processes started by someone else (SLURM's ``srun``, a custom
launcher) get no such limit. :func:`share_cpu_threads` applies the same rule there.
"""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator


def available_cpus() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def share_cpu_threads(trainer: L.Trainer) -> int | None:
    """Limit torch's intra-op threads to this node's cores divided by its processes, in a multi-process CPU run.

    Nothing changes with one process, on an accelerator other than the CPU, when ``OMP_NUM_THREADS`` is
    set (your choice, or that of Lightning's launcher or torchrun), or when torch already uses fewer
    threads. Returns the thread count it set, else None.

    Args:
        trainer: The Trainer of the run (its ``world_size``, ``accelerator`` and ``num_devices``).
    """
    if trainer.world_size == 1 or not isinstance(trainer.accelerator, CPUAccelerator) or "OMP_NUM_THREADS" in os.environ:
        return None
    threads = max(1, available_cpus() // max(1, trainer.num_devices))
    if torch.get_num_threads() <= threads:
        return None
    torch.set_num_threads(threads)
    return threads
