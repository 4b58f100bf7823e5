"""Exact resume, measured: an interrupted and resumed run ends with the same weights as an uninterrupted one.

Three trainings on CPU with a fixed seed and ``Trainer(deterministic=True)``:
(a) uninterrupted to the budget; (b) stopped after ``stop_at`` env steps, with a checkpoint;
(c) resumed from (b)'s checkpoint to the budget. Prints the largest absolute difference between the
parameters of (a) and (c) (0 means exact) and, for contrast, between (a) and (b).

    python experiments/resume_check.py                 # PPO and DQN (replay buffer in the checkpoint)
    python experiments/resume_check.py --algos dqn --timesteps 20000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lightrl  # noqa: E402


class StopAt(Callback):
    """Save a checkpoint and stop once ``env_steps`` reaches ``stop_at``."""

    def __init__(self, stop_at: int, path: Path):
        self.stop_at, self.path = stop_at, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.env_steps >= self.stop_at and not trainer.should_stop:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


class StopAtEpochEnd(Callback):
    """Save a checkpoint and stop at the end of epoch ``epoch``, where Lightning's ModelCheckpoint saves."""

    def __init__(self, epoch: int, path: Path):
        self.epoch, self.path = epoch, path

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def trainer(*callbacks: Callback) -> L.Trainer:
    return L.Trainer(deterministic=True, max_epochs=-1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))  # fmt: skip


def run_resume_check(make_model: Callable[[], L.LightningModule], stop_at: int | Callback, path: Path):
    """Train (a), (b) and (c) as described above; return the three modules.

    ``stop_at``: the env step at which (b) stops, or a callback that stops it (e.g. :class:`StopAtEpochEnd`).
    """
    a, b, c = make_model(), make_model(), make_model()
    trainer().fit(a)
    trainer(StopAt(stop_at, path) if isinstance(stop_at, int) else stop_at).fit(b)
    trainer().fit(c, ckpt_path=path)
    return a, b, c


def max_abs_diff(x: torch.nn.Module, y: torch.nn.Module) -> float:
    """Largest absolute difference between the parameters and buffers of two modules of one class."""
    return max((p - q).abs().max().item() for p, q in zip(x.state_dict().values(), y.state_dict().values()) if p.is_floating_point())


RECIPES = {
    "ppo": lambda t: lightrl.PPO("CartPole-v1", seed=1, total_timesteps=t, num_envs=4, num_steps=128),
    "dqn": lambda t: lightrl.DQN("CartPole-v1", seed=1, total_timesteps=t, learning_starts=1000, train_frequency=256,
                                 gradient_steps=128, batch_size=64, buffer_size=100_000, save_replay_buffer=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--timesteps", type=int, default=10_240, help="budget of (a) and (c); (b) stops at half")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.algos:
        with tempfile.TemporaryDirectory() as tmp:
            a, b, c = run_resume_check(lambda: RECIPES[name](args.timesteps), args.timesteps // 2, Path(tmp) / "b.ckpt")
        print(f"{name}: env steps a={a.env_steps} b={b.env_steps} c={c.env_steps}; "
              f"max |a - c| = {max_abs_diff(a, c):.3g}, max |a - b| = {max_abs_diff(a, b):.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
