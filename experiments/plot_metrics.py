"""Plot a CSVLogger run's training return against env steps and wall time.

    lightrl fit --config experiments/dqn_pong.yaml --trainer.logger CSVLogger --trainer.logger.save_dir runs/pong
    python experiments/plot_metrics.py runs/pong/version_0/metrics.csv docs/benchmarks/dqn_pong.png

``charts/episodic_return`` is the mean return of the episodes that ended since the previous logged step; the
wall time of a row is ``env_steps / charts/SPS`` (the run's mean speed up to that step). The thick line is the
mean over the last ``--window`` logged values.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Env steps, wall minutes and returns of the rows that logged a return."""
    rows = [r for r in csv.DictReader(path.open()) if r.get("charts/episodic_return") and r.get("charts/SPS")]
    if not rows:
        raise SystemExit(f"{path} has no rows with both charts/episodic_return and charts/SPS.")
    steps = np.array([float(r["env_steps"]) for r in rows])
    minutes = steps / np.array([float(r["charts/SPS"]) for r in rows]) / 60
    return steps, minutes, np.array([float(r["charts/episodic_return"]) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", type=Path, help="a CSVLogger metrics.csv")
    parser.add_argument("out", type=Path, help="the image to write (.png)")
    parser.add_argument("--window", type=int, default=20, help="logged values in the running mean (default 20)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    steps, minutes, returns = load(args.metrics)
    smooth = np.array([returns[max(0, i + 1 - args.window) : i + 1].mean() for i in range(len(returns))])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, x, label in zip(axes, (steps / 1e3, minutes), ("env steps (thousands)", "wall minutes from fit start")):
        ax.plot(x, returns, alpha=0.3, linewidth=0.8)
        ax.plot(x, smooth, linewidth=2)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training return")
    fig.suptitle(args.title or str(args.metrics))
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}: {len(returns)} points, last running mean {smooth[-1]:.2f} at {steps[-1]:.0f} env steps, {minutes[-1]:.1f} min")


if __name__ == "__main__":
    main()
