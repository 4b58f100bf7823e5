"""Check every algorithm on CUDA at 32-true, bf16-mixed and 16-mixed: does it learn, and how fast.

    python experiments/gpu_check.py                 # all algorithms, all precisions
    python experiments/gpu_check.py --algos PPO SAC --precisions bf16-mixed
    python experiments/gpu_check.py --jobs 5 --json gpu_check.json   # one process per algorithm, at once

Prints one row per (algorithm, precision): env steps/s during training, the deterministic evaluation
return (10 episodes) against a threshold that a learning run clears, and the optimizer steps the AMP grad
scaler skipped (``charts/skipped_optimizer_steps``; only 16-mixed has a scaler). With ``--jobs`` above 1 the
algorithms run at once, in a process each, and share the machine: their SPS are lower than alone. Exits 1 if any run fails to learn, and 0
with a message on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import torch

import lightrl

# Short budgets that a correct implementation learns within, and the return that shows it did.
CHECKS = {
    "PPO": (dict(env_id="CartPole-v1", num_envs=8, num_steps=32, update_epochs=20, num_minibatches=1, gamma=0.98,
                 gae_lambda=0.8, learning_rate=1e-3, ent_coef=0.0, clip_vloss=False, total_timesteps=60_000), 300.0),
    "A2C": (dict(env_id="CartPole-v1", total_timesteps=100_000), 150.0),
    "DQN": (dict(env_id="CartPole-v1", total_timesteps=50_000), 300.0),
    "SAC": (dict(env_id="Pendulum-v1", total_timesteps=8_000, learning_starts=1000), -400.0),
    "TD3": (dict(env_id="Pendulum-v1", total_timesteps=15_000, learning_starts=1000), -400.0),
}
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def check(algo: str, precision: str) -> dict:
    kwargs, threshold = CHECKS[algo]
    model = getattr(lightrl, algo)(seed=1, **kwargs)
    trainer = L.Trainer(accelerator="cuda", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, max_epochs=-1)
    start = time.perf_counter()
    trainer.fit(model)
    sps = model.env_steps / (time.perf_counter() - start)
    mean, _ = lightrl.evaluate(model.cuda(), num_episodes=10)
    return {"algo": algo, "precision": precision, "sps": sps, "return": mean, "threshold": threshold,
            "skipped_optimizer_steps": model.skipped_optimizer_steps}


def checks_in_process(algo: str, precisions: list[str]) -> list[dict]:
    """:func:`check` of ``algo`` at each precision, one after the other in a fresh process (``--one``), so that
    algorithms can run at once while each process pays its imports once."""
    proc = subprocess.run([sys.executable, __file__, "--one", algo, *precisions], capture_output=True, text=True)
    rows = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or len(rows) < len(precisions):
        rows += [{"algo": algo, "precision": p, "error": proc.stderr[-2000:]} for p in precisions[len(rows):]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--jobs", type=int, default=1, help="algorithms run at once, each in its own process")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--one", nargs="+", metavar="ALGO PRECISION", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run this on a GPU machine.")
        return
    if args.one:
        for precision in args.one[1:]:
            print("RESULT " + json.dumps(check(args.one[0], precision)), flush=True)
        return
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  ({args.jobs} at once)")
    print(f"{'algo':<5} {'precision':<11} {'SPS':>8} {'return':>9} {'threshold':>9} {'skipped':>8}  learned")
    if args.jobs == 1:
        batches = ([check(algo, precision)] for algo in args.algos for precision in args.precisions)
    else:
        batches = ThreadPoolExecutor(max_workers=args.jobs).map(lambda algo: checks_in_process(algo, args.precisions), args.algos)
    rows, failed = [], False
    for batch in batches:
        for row in batch:
            rows.append(row)
            if "error" in row:
                failed = True
                print(f"{row['algo']:<5} {row['precision']:<11} FAILED: {row['error'][-600:]}", flush=True)
                continue
            learned = row["return"] >= row["threshold"]
            failed |= not learned
            print(f"{row['algo']:<5} {row['precision']:<11} {row['sps']:8.0f} {row['return']:9.1f} {row['threshold']:9.1f} "
                  f"{row['skipped_optimizer_steps']:8d}  {'yes' if learned else 'NO'}", flush=True)
            if args.json:  # written as rows arrive, so that a run stopped at a time limit keeps what it measured
                args.json.write_text(json.dumps(rows, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
