"""Faults on purpose: a checkpoint write that fails, an async env worker that dies, a damaged last.ckpt.

After each, the run resumes from a whole checkpoint and no checkpoint file is left half-written.
"""

from __future__ import annotations

import os
import resource
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import lightrl
from lightrl.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from lightrl.cli import main
from lightrl.errors import EnvWorkerDied

RUN = dict(env_id="CartPole-v1", seed=3, num_envs=2, num_steps=32, hidden_sizes=[8], timesteps_per_epoch=64, eval_episodes=1)


def fit(model, root, callbacks=(), ckpt_path=None, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        callbacks=list(callbacks), **trainer_kwargs)  # fmt: skip
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


def env_steps(path) -> int:
    return torch.load(path, weights_only=True)["lightrl"]["env_steps"]


def leftovers(folder) -> list[str]:
    """Files in a checkpoint folder that are not whole checkpoints (temporary files of a write)."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


class FileSizeLimit(Callback):
    """From the end of epoch ``epoch`` on, files cannot grow past ``limit`` bytes: writes fail as on a full disk (EFBIG)."""

    def __init__(self, epoch: int, limit: int = 4096):
        self.epoch, self.limit, self.previous = epoch, limit, None

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and self.previous is None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with an OSError instead of killing the process
            self.previous = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.previous[1]))

    def restore(self):
        if self.previous is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, self.previous)


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_says_so_in_one_line(tmp_path):
    limit = FileSizeLimit(epoch=1)
    try:
        with pytest.raises(CheckpointWriteError) as error:
            fit(lightrl.PPO(**RUN, total_timesteps=256), tmp_path, [limit], limit_val_batches=0)  # last.ckpt is the only checkpoint
    finally:
        limit.restore()
    folder = tmp_path / "checkpoints"
    message = str(error.value)
    assert "\n" not in message and "could not be written (File too large)" in message and "is unchanged" in message
    assert leftovers(folder) == []
    assert env_steps(folder / "last.ckpt") == 64  # the end of epoch 0, whole
    resumed = lightrl.PPO(**RUN, total_timesteps=256)
    fit(resumed, tmp_path, ckpt_path=folder / "last.ckpt")
    assert resumed.env_steps == 256 and env_steps(folder / "last.ckpt") == 256


def test_atomic_writes_keep_the_previous_last_checkpoint_and_clear_stale_temporary_files(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    (tmp_path / ".last.ckpt.tmp-99999").write_bytes(b"half a checkpoint from a killed process")
    io.save_checkpoint({"n": torch.tensor(1)}, path)
    io.save_checkpoint({"n": torch.tensor(2)}, path)
    assert leftovers(tmp_path) == []
    assert torch.load(path, weights_only=True)["n"] == 2 and torch.load(f"{path}.prev", weights_only=True)["n"] == 1


class KillEnvWorker(Callback):
    """SIGKILLs the worker process of sub-env 1 once the run has passed ``at`` env steps."""

    def __init__(self, at: int):
        self.at, self.processes = at, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.processes is None and pl_module.env_steps >= self.at:
            self.processes = list(pl_module.source.collector.envs.env.unwrapped.processes)
            os.kill(self.processes[1].pid, signal.SIGKILL)


@pytest.mark.timeout(300)
def test_a_killed_async_env_worker_is_a_clear_error_not_a_hang(tmp_path):
    run = {**RUN, "vectorization": "async", "total_timesteps": 320}
    kill = KillEnvWorker(at=160)
    with pytest.raises(EnvWorkerDied, match=r"sub-env 1 of 2 \(CartPole-v1, vectorization='async', worker pid \d+\) died \(killed by SIGKILL\)"):
        fit(lightrl.PPO(**run), tmp_path, [kill])
    kill.processes[0].join(timeout=10)
    assert not kill.processes[0].is_alive()  # the surviving worker was stopped too
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert env_steps(last) == 192 and leftovers(last.parent) == []  # killed after the rollout that reached 192, saved at its epoch end
    resumed = lightrl.PPO(**run)
    with pytest.warns(UserWarning, match="envs' state was not restored"):  # async envs restart their episodes (docs/checkpoints.md)
        fit(resumed, tmp_path, ckpt_path=last)
    assert resumed.env_steps == 320


def test_a_damaged_last_checkpoint_is_named_and_the_previous_one_resumes(tmp_path, capsys):
    args = ["fit", "--model", "PPO", *[f"--model.{k}={v}" for k, v in RUN.items() if k != "hidden_sizes"], "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    main([*args, "--model.total_timesteps", "128"])
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert env_steps(f"{last}.prev") == 64 and env_steps(last) == 128
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a disk that lost the second half
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--model.total_timesteps", "256", "--ckpt_path", "last"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert f"checkpoint '{last}' cannot be read" in err and f"resume with --ckpt_path '{last}.prev'" in err
    main([*args, "--model.total_timesteps", "256", "--ckpt_path", f"{last}.prev"])
    assert env_steps(last) == 256


def test_cli_reports_a_failed_checkpoint_write_in_one_line(tmp_path, capsys):
    config = tmp_path / "limit.yaml"
    config.write_text("trainer:\n  callbacks:\n    - class_path: test_faults.FileSizeLimit\n      init_args:\n        epoch: 1\n")
    args = ["fit", "--model", "PPO", *[f"--model.{k}={v}" for k, v in RUN.items() if k != "hidden_sizes"], "--model.total_timesteps", "256",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
            "--trainer.default_root_dir", str(tmp_path), "--config", str(config)]  # fmt: skip
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightrl: error:")]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert exit_info.value.code == 1 and len(err) == 1
    assert err[0] == (f"lightrl: error: checkpoint '{last}' could not be written (File too large); the previous last.ckpt is unchanged. "
                      "Free disk space or fix the folder's permissions, then resume with --ckpt_path last.")  # fmt: skip
    main([*args[:-2], "--ckpt_path", "last"])  # without the limit: continues from epoch 0's last.ckpt
    assert env_steps(last) == 256 and leftovers(last.parent) == []
