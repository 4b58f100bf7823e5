"""Learning curves of CSVLogger runs: ``charts/episodic_return`` against env steps, one line per run, a plot per env.

    python experiments/learning_curves.py RUN_DIR [RUN_DIR ...] --out docs/benchmarks/mujoco_ppo.png

Each RUN_DIR is a ``--trainer.logger CSVLogger`` save dir (``<dir>/version_*/metrics.csv``); its ``config.yaml``
gives the env id and the seed. Also prints, per run, the mean of the last 10 training episodes that
``last.ckpt`` holds (the collector's raw episode returns), the figure the MuJoCo results are reported in.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path


def read_run(run_dir: Path) -> tuple[str, int, list[tuple[float, float]], float | None]:
    """``(env_id, seed, [(env_steps, return)], mean of the last 10 raw episodes or None)`` of one run."""
    import torch
    import yaml

    version = sorted(run_dir.glob("version_*"))[-1]
    init_args = yaml.safe_load((version / "config.yaml").read_text())["model"]["init_args"]
    curve = [(float(row["env_steps"]), float(row["charts/episodic_return"]))
             for row in csv.DictReader((version / "metrics.csv").open()) if row.get("charts/episodic_return")]  # fmt: skip
    last = None
    ckpt = version / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        returns = torch.load(ckpt, weights_only=True)["lightrl_ranks"][0]["collector"]["recent_returns"][-10:]
        last = statistics.fmean(returns) if returns else None
    return init_args["env_id"], int(init_args["seed"]), curve, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="write the figure here (needs matplotlib)")
    args = parser.parse_args()
    runs = [read_run(run) for run in args.runs]
    for env_id, seed, curve, last in runs:
        steps = int(curve[-1][0]) if curve else 0
        print(f"{env_id:<16} seed {seed}  env steps {steps:>8}  mean of the last 10 episodes: {'n/a' if last is None else f'{last:.1f}'}")
    if args.out is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({env_id for env_id, *_ in runs})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for env_id, seed, curve, _ in sorted(runs, key=lambda r: r[1]):
            if env_id == env and curve:
                ax.plot(*zip(*curve), label=f"seed {seed}", linewidth=1)
        ax.set(title=env, xlabel="env steps", ylabel="episodic return (raw)")
        ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
