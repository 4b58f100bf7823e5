"""Check every algorithm on CUDA at 32-true, bf16-mixed and 16-mixed: does it learn, and how fast.

    python experiments/gpu_check.py                 # all algorithms, all precisions
    python experiments/gpu_check.py --algos PPO SAC --precisions bf16-mixed

Prints one row per (algorithm, precision): env steps/s during training and the deterministic
evaluation return (10 episodes) against a threshold that a learning run clears. Exits 1 if any run
fails to learn, and 0 with a message on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import sys
import time

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


def check(algo: str, precision: str) -> tuple[float, float, float]:
    kwargs, threshold = CHECKS[algo]
    model = getattr(lightrl, algo)(seed=1, **kwargs)
    trainer = L.Trainer(accelerator="cuda", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, max_epochs=-1)
    start = time.perf_counter()
    trainer.fit(model)
    sps = model.env_steps / (time.perf_counter() - start)
    mean, _ = lightrl.evaluate(model.cuda(), num_episodes=10)
    return sps, mean, threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run this on a GPU machine.")
        return
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'algo':<5} {'precision':<11} {'SPS':>8} {'return':>9} {'threshold':>9}  learned")
    failed = False
    for algo in args.algos:
        for precision in args.precisions:
            sps, mean, threshold = check(algo, precision)
            learned = mean >= threshold
            failed |= not learned
            print(f"{algo:<5} {precision:<11} {sps:8.0f} {mean:9.1f} {threshold:9.1f}  {'yes' if learned else 'NO'}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
