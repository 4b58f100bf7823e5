"""Collectors and backends: raw env stepping (gymnasium sync vs EnvPool) and end-to-end training SPS
(sync vs ``collector="async"`` vs ``vectorization="envpool"``), in one run, one measurement at a time.

    python experiments/collectors_benchmark.py raw                 # CartPole-v1, 8 envs, random actions
    python experiments/collectors_benchmark.py ppo --timesteps 50000
    python experiments/collectors_benchmark.py dqn --timesteps 20000

Each end-to-end row reports wall-clock SPS (including the actor's start) and SPS after the first batch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

EXPERIMENTS = Path(__file__).parent


def raw_sps(vectorization: str, num_envs: int = 8, steps: int = 20_000) -> float:
    from lightrl.envs import make_vec_env

    envs = make_vec_env("CartPole-v1", num_envs=num_envs, seed=1, vectorization=vectorization)
    envs.reset()
    actions = np.random.default_rng(0).integers(0, 2, (steps // num_envs, num_envs))
    start = time.perf_counter()
    for a in actions:
        envs.step(a)
    envs.close()
    return steps / (time.perf_counter() - start)


def train_sps(config: str, timesteps: int, **overrides) -> tuple[float, float, float]:
    import lightning as L

    import lightrl

    model_config = yaml.safe_load((EXPERIMENTS / config).read_text())["model"]
    cls = getattr(lightrl, model_config["class_path"].rsplit(".", 1)[1])
    model = cls(**{**model_config["init_args"], "total_timesteps": timesteps, **overrides})

    class FirstBatch(L.Callback):
        mark: tuple[float, int] | None = None

        def on_train_batch_end(self, trainer, pl_module, *args):
            if self.mark is None:
                self.mark = (time.perf_counter(), pl_module.env_steps)

    first = FirstBatch()
    trainer = L.Trainer(callbacks=[first], max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    start = time.perf_counter()
    trainer.fit(model)
    end = time.perf_counter()
    steady = (model.env_steps - first.mark[1]) / (end - first.mark[0])
    return model.env_steps / (end - start), steady, lightrl.evaluate(model, num_episodes=10)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["raw", "ppo", "dqn"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timesteps", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for repeat in range(args.repeats):
        if args.what == "raw":
            print(f"raw CartPole-v1 x8, repeat {repeat}: sync {raw_sps('sync'):.0f} SPS, envpool {raw_sps('envpool'):.0f} SPS", flush=True)
            continue
        config, timesteps = ("ppo_cleanrl_cartpole.yaml", 50_000) if args.what == "ppo" else ("dqn_cartpole.yaml", 20_000)
        variants = [("sync", {}), ("async", {"collector": "async"})]
        if args.what == "ppo":
            variants.append(("envpool", {"vectorization": "envpool"}))
        for name, overrides in variants:
            wall, steady, ret = train_sps(config, args.timesteps or timesteps, **overrides)
            print(f"{args.what} {name}, repeat {repeat}: {wall:.0f} SPS wall, {steady:.0f} after the first batch, return {ret:.0f}", flush=True)


if __name__ == "__main__":  # the async collector spawns a process: the entry point must be guarded
    main()
