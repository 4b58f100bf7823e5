"""A real offline W&B run: the default logger of `lightrl fit`, with env steps as its x-axis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import wandb

from lightrl.cli import main, wandb_mode
from wandb_records import history_rows


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no W&B account
    yield tmp_path
    wandb.finish()


def test_mode_is_offline_without_account_and_online_with_key(offline_wandb, monkeypatch):
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


@pytest.mark.timeout(300)
def test_fit_writes_offline_run_with_logged_metrics(offline_wandb, capsys):
    main(["fit", "--config", str(Path(__file__).parents[1] / "experiments" / "ppo_cartpole.yaml"),
          "--model.total_timesteps", "768", "--trainer.enable_progress_bar", "false"])
    run_files = list(offline_wandb.glob("runs/wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    assert f"wandb sync {run_files[0].parent.relative_to(offline_wandb)}" in capsys.readouterr().out
    # wandb's service process writes the record file; on a loaded machine it can finish a moment after wandb.finish().
    deadline = time.monotonic() + 30
    rows = []
    while len(rows) < 3 and time.monotonic() < deadline:
        if run_files[0].read_bytes()[:4] == b":W&B":  # the service may not have written the file's header yet
            rows = [row for row in history_rows(run_files[0]) if "env_steps" in row]
        if len(rows) < 3:
            time.sleep(0.5)
    assert [row["env_steps"] for row in rows] == [256, 512, 768]
    assert [row["trainer/global_step"] for row in rows] == [256, 512, 768]
    expected = {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
                "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl",
                "losses/old_approx_kl", "losses/clipfrac", "losses/explained_variance"}
    assert expected <= set().union(*rows)
