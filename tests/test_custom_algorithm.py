"""A user's own RLModule subclass, outside the package, runs from the CLI with `--model module.Class`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"


@pytest.mark.timeout(300)
def test_custom_algorithm_trains_from_the_cli_and_learns(tmp_path):
    # The examples' folder first, then the caller's path (a checkout's lightrl, in a worktree).
    path = os.pathsep.join(p for p in (str(EXAMPLES), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    fit = subprocess.run(
        [sys.executable, "-m", "lightrl.cli", "fit", "--model", "vanilla_pg.VanillaPG", "--model.total_timesteps", "30000",
         "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "logs", "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = next(tmp_path.glob("logs/**/*.ckpt"))
    evaluate = subprocess.run([sys.executable, "-m", "lightrl.cli", "evaluate", str(checkpoint)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert evaluate.stdout.startswith("VanillaPG on CartPole-v1: return ")
    mean_return = float(evaluate.stdout.split("return ")[1].split(" ")[0])
    assert mean_return >= 100  # random play scores about 22
    export = subprocess.run([sys.executable, "-m", "lightrl.cli", "export", str(checkpoint), "--output", "policy.pt2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr[-3000:]
    assert export.stdout.startswith("VanillaPG policy for CartPole-v1 written to policy.pt2")
    assert (tmp_path / "policy.pt2").stat().st_size > 0
