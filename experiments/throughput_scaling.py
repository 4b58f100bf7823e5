"""Per-env-step cost of PPO's collection and update at 64, 256 and 1,024 native CartPole sub-envs.

Trains ``experiments/ppo_cartpole_throughput.yaml`` with rollouts of 8,192 samples (``num_steps = 8192 // num_envs``)
and prints, per env step, the native env alone (``make_vec_env(...).step`` with random actions) and the fit's
``time/*`` sections summed over the whole run (docs/benchmarks.md, "Throughput").

    python experiments/throughput_scaling.py [--timesteps 500000] [--envs 64 256 1024]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

RECIPE = Path(__file__).parent / "ppo_cartpole_throughput.yaml"


def env_alone(num_envs: int, vector_steps: int = 200) -> float:
    """Microseconds per env step of the native CartPole alone."""
    from lightrl.envs.vector import make_vec_env

    envs = make_vec_env("CartPole-v1", num_envs, seed=1, vectorization="native")
    envs.reset()
    actions = np.random.default_rng(0).integers(0, 2, (vector_steps, num_envs))
    start = time.perf_counter()
    for a in actions:
        envs.step(a)
    envs.close()
    return (time.perf_counter() - start) / (vector_steps * num_envs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=500_000)
    parser.add_argument("--envs", type=int, nargs="+", default=[64, 256, 1024])
    args = parser.parse_args()
    torch.set_num_threads(1)
    import lightning as L

    import lightrl
    from lightrl.timing import IterationTimer

    IterationTimer.metrics = lambda self: {}  # keep the totals of the whole fit (each log point would start a new window)
    recipe = yaml.safe_load(RECIPE.read_text())["model"]["init_args"]
    print("sub-envs | env alone | " + " | ".join(lightrl.timing.SECTIONS) + " | rest   (microseconds per env step) | SPS")
    for n in args.envs:
        alone = env_alone(n)
        model = lightrl.PPO(**{**recipe, "num_envs": n, "num_steps": max(1, 8192 // n), "total_timesteps": args.timesteps})
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0)  # fmt: skip
        start = time.perf_counter()
        trainer.fit(model)
        fit = time.perf_counter() - start
        per_step = {k: v / model.env_steps * 1e6 for k, v in model.timer.totals.items()}
        rest = fit / model.env_steps * 1e6 - sum(per_step.values())
        print(f"{n} | {alone:.2f} | " + " | ".join(f"{v:.2f}" for v in per_step.values()) + f" | {rest:.2f} | {model.env_steps / fit:,.0f}", flush=True)


if __name__ == "__main__":
    main()
