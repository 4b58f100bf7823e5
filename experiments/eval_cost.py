"""Evaluation's share of a run's wall time: experiments/ppo_cartpole.yaml with validation on and off.

Times Lightning's validation loop (sanity check, each epoch's end, the end of the run) inside the run, and
prints it against the run's wall time; the runs alternate on, off, on, off.

    python experiments/eval_cost.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lightrl  # noqa: E402

CONFIG = Path(__file__).with_name("ppo_cartpole.yaml")


class ValidationTimer(L.Callback):
    """Seconds spent in validation, and how many validations ran."""

    def __init__(self):
        self.seconds, self.count, self.start = 0.0, 0, 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.seconds += time.perf_counter() - self.start
        self.count += 1


def main(repeats: int = 2) -> None:
    torch.set_num_threads(1)
    init_args = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]
    for _ in range(repeats):
        for validate in (True, False):
            timer = ValidationTimer()
            off = {} if validate else {"limit_val_batches": 0, "num_sanity_val_steps": 0}
            trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                                enable_checkpointing=False, callbacks=[timer], **off)  # fmt: skip
            start = time.perf_counter()
            trainer.fit(lightrl.PPO(**init_args))
            wall = time.perf_counter() - start
            print(f"validation {'on ' if validate else 'off'}: {wall:.1f} s, {timer.count} validations in "
                  f"{timer.seconds:.2f} s ({100 * timer.seconds / wall:.1f}% of the run)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
