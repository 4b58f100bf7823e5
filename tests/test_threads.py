"""lightrl.threads: a multi-process CPU run shares the node's cores among its processes."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightrl import threads


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    before = torch.get_num_threads()
    torch.set_num_threads(8)  # torch's default on 8 cores
    yield
    torch.set_num_threads(before)


def ddp_trainer(devices: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False)


def test_each_of_two_processes_gets_half_the_cores(eight_cpus):
    assert threads.share_cpu_threads(ddp_trainer(2)) == 4
    assert torch.get_num_threads() == 4


def test_one_process_keeps_torchs_default(eight_cpus):
    assert threads.share_cpu_threads(ddp_trainer(1)) is None
    assert torch.get_num_threads() == 8


def test_omp_num_threads_is_left_to_the_user(eight_cpus, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert threads.share_cpu_threads(ddp_trainer(2)) is None
    assert torch.get_num_threads() == 8


def test_fewer_threads_than_the_share_are_kept(eight_cpus):
    torch.set_num_threads(2)
    assert threads.share_cpu_threads(ddp_trainer(2)) is None
    assert torch.get_num_threads() == 2

