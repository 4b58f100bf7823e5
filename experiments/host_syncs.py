"""Count the host-device synchronizations of each algorithm on CUDA, per gradient step, and say where they are.

torch's sync debug mode warns at every operation that makes the host wait for the GPU (``.item()``, a
``.cpu()`` copy, a data-dependent shape). This script trains each algorithm briefly on one CUDA device with
that mode on, counts the warnings, and attributes each to the innermost lightrl frame on the stack:

- ``acting``: inside collection (``lightrl/data/``, or a method named ``collect*``): copying actions to the
  envs needs one per vector step, by design;
- ``learning``: the rest of the training step: losses, optimizer steps, schedules, logging.

    python experiments/host_syncs.py                   # PPO, A2C, DQN, SAC, TD3
    python experiments/host_syncs.py --algos SAC --precision 16-mixed --json syncs.json

Prints, per algorithm, the syncs per optimizer step and the lines that cause them; exits 0 with a message on a
machine without CUDA.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import traceback
import warnings
from pathlib import Path

import lightning as L
import torch

import lightrl

RUNS = {
    "PPO": dict(env_id="CartPole-v1", num_envs=4, num_steps=128, total_timesteps=2048),
    "A2C": dict(env_id="CartPole-v1", total_timesteps=2000),
    "DQN": dict(env_id="CartPole-v1", total_timesteps=3000, learning_starts=1000),
    "SAC": dict(env_id="Pendulum-v1", total_timesteps=700, learning_starts=200),
    "TD3": dict(env_id="Pendulum-v1", total_timesteps=700, learning_starts=200),
}
PACKAGE = str(Path(lightrl.__file__).parent)


class CountSyncs(L.Callback):
    """Counts synchronizing CUDA operations during training, by kind and place, and the optimizer steps."""

    def __init__(self) -> None:
        self.places: collections.Counter[tuple[str, str]] = collections.Counter()
        self.optimizer_steps = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.catcher = warnings.catch_warnings()
        self.catcher.__enter__()
        warnings.simplefilter("always")
        shown = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if "synchronizing" not in str(message):
                return shown(message, category, filename, lineno, file, line)
            frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(PACKAGE)]
            acting = any("/data/" in f.filename or f.name.startswith("collect") for f in frames)
            inner = frames[-1] if frames else None
            where = f"{Path(inner.filename).relative_to(PACKAGE)}:{inner.lineno} {inner.name}" if inner else f"{filename}:{lineno}"
            self.places[("acting" if acting else "learning", where)] += 1

        warnings.showwarning = showwarning
        torch.cuda.set_sync_debug_mode("warn")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.optimizer_steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self.catcher.__exit__(None, None, None)


def count(algo: str, precision: str) -> dict:
    model = getattr(lightrl, algo)(seed=1, **RUNS[algo])
    counter = CountSyncs()
    trainer = L.Trainer(accelerator="cuda", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, max_epochs=-1, callbacks=[counter],
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model)
    totals = collections.Counter()
    for (kind, _), n in counter.places.items():
        totals[kind] += n
    steps = max(counter.optimizer_steps, 1)
    return {"algo": algo, "precision": precision, "env_steps": model.env_steps, "optimizer_steps": counter.optimizer_steps,
            "learning_per_optimizer_step": totals["learning"] / steps, "acting_per_env_step": totals["acting"] / max(model.env_steps, 1),
            "places": [{"kind": k, "where": w, "count": n} for (k, w), n in counter.places.most_common(12)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("host_syncs: no CUDA device here; run this on a GPU machine.")
        return
    results = []
    for algo in args.algos:
        r = count(algo, args.precision)
        results.append(r)
        print(f"{algo} {args.precision}: {r['optimizer_steps']} optimizer steps, {r['learning_per_optimizer_step']:.2f} syncs per "
              f"optimizer step in learning, {r['acting_per_env_step']:.3f} per env step in acting", flush=True)
        for place in r["places"]:
            print(f"    {place['count']:6d}  {place['kind']:<8} {place['where']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
