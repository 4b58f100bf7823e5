"""Speed benchmark: lightrl against Stable-Baselines3 on the same hyperparameters, in one run.

Each (row, library, repeat) trains in a fresh subprocess; libraries alternate A B A B so that machine
noise hits both alike. Reported: env steps per second (min / median / max over repeats), the ratio of
medians, and the deterministic evaluation return (10 episodes) at the end of each run.

    python experiments/benchmark.py                      # every row, 3 repeats
    python experiments/benchmark.py --rows ppo_cleanrl --repeats 5 --timesteps 100000
    python experiments/benchmark.py --ddp                 # total SPS of 1 vs 2 DDP processes (CPU, gloo)

Needs the `bench` extra (`pip install -e .[bench]`; `make benchmark` installs it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXPERIMENTS = Path(__file__).parent

# Each row: the lightrl experiment config, and the SB3 algorithm, kwargs and number of envs of the same recipe
# (see shared/ANCHORS.md). `timesteps` is the row's default budget.
ROWS = {
    "ppo_cleanrl": {
        "title": "PPO CartPole-v1, CleanRL defaults",
        "timesteps": 100_000,
        "lightrl": "ppo_cleanrl_cartpole.yaml",
        "sb3": ("PPO", dict(n_steps=128, batch_size=128, n_epochs=4, learning_rate="linear:2.5e-4", gamma=0.99, gae_lambda=0.95,
                            clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                            policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), optimizer_kwargs=dict(eps=1e-5))), 4),
    },
    "ppo_zoo": {
        "title": "PPO CartPole-v1, RL-zoo recipe",
        "timesteps": 100_000,
        "lightrl": "ppo_cartpole.yaml",
        "sb3": ("PPO", dict(n_steps=32, batch_size=256, n_epochs=20, learning_rate="linear:1e-3", gamma=0.98, gae_lambda=0.8,
                            clip_range="linear:0.2", ent_coef=0.0), 8),
    },
    "dqn_zoo": {
        "title": "DQN CartPole-v1, RL-zoo recipe",
        "timesteps": 50_000,
        "lightrl": "dqn_cartpole.yaml",
        "sb3": ("DQN", dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
                            target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                            exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256])), 1),
    },
    "sac_pendulum": {
        "title": "SAC Pendulum-v1, lr 1e-3",
        "timesteps": 10_000,
        "lightrl": "sac_pendulum.yaml",
        "sb3": ("SAC", dict(learning_rate=1e-3), 1),
    },
}


def lightrl_config(row: dict) -> dict:
    import yaml

    return yaml.safe_load((EXPERIMENTS / row["lightrl"]).read_text())["model"]


def lightrl_model(row: dict, timesteps: int, seed: int):
    import lightrl

    config = lightrl_config(row)
    cls = getattr(lightrl, config["class_path"].rsplit(".", 1)[1])
    return cls(**{**config["init_args"], "total_timesteps": timesteps, "seed": seed})


def sb3_value(value):
    if isinstance(value, str) and value.startswith("linear:"):
        start = float(value.split(":")[1])
        return lambda progress_remaining: progress_remaining * start
    return value


def run_lightrl(row: dict, timesteps: int, seed: int) -> dict:
    import lightning as L

    import lightrl

    model = lightrl_model(row, timesteps, seed)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, max_epochs=-1)
    start = time.perf_counter()
    trainer.fit(model)
    seconds = time.perf_counter() - start
    mean, _ = lightrl.evaluate(model, num_episodes=10, seed=1000)
    return {"sps": model.env_steps / seconds, "return": mean, "env_steps": model.env_steps}


def run_sb3(row: dict, timesteps: int, seed: int) -> dict:
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    name, kwargs, num_envs = row["sb3"]
    env_id = lightrl_config(row)["init_args"]["env_id"]
    env = make_vec_env(env_id, n_envs=num_envs, seed=seed)
    model = getattr(sb3, name)("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **{k: sb3_value(v) for k, v in kwargs.items()})
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    seconds = time.perf_counter() - start
    mean, _ = evaluate_policy(model, make_vec_env(env_id, n_envs=1, seed=1000), n_eval_episodes=10, deterministic=True)
    return {"sps": model.num_timesteps / seconds, "return": float(mean), "env_steps": model.num_timesteps}


def worker(row_name: str, library: str, timesteps: int, seed: int, threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    row = ROWS[row_name]
    result = (run_lightrl if library == "lightrl" else run_sb3)(row, timesteps, seed)
    print("RESULT " + json.dumps(result))


def ddp_worker(devices: int, timesteps: int) -> None:
    """PPO with CleanRL's defaults over ``devices`` CPU processes (4 envs each); rank 0 prints the total SPS."""
    import lightning as L

    import lightrl

    model = lightrl_model(ROWS["ppo_cleanrl"], timesteps, seed=1)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, max_epochs=-1)
    start = time.perf_counter()
    trainer.fit(model)
    if trainer.is_global_zero:
        print("RESULT " + json.dumps({"sps": model.env_steps / (time.perf_counter() - start), "env_steps": model.env_steps}))


def ddp_report(timesteps: int, repeats: int) -> None:
    """Total env steps/s of 1 vs 2 DDP processes on this machine, alternating."""
    results: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for devices in (1, 2):
            proc = subprocess.run([sys.executable, __file__, "--ddp-worker", str(devices), str(timesteps)], capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"DDP with {devices} processes failed:\n{proc.stderr[-3000:]}")
            results[devices].append(json.loads(lines[-1][len("RESULT "):])["sps"])
    for devices, sps in results.items():
        print(f"{'PPO CartPole-v1, CleanRL, DDP (gloo)':<36} {f'{devices} proc':<8} {summarize(sps)}", flush=True)
    ratio = statistics.median(results[2]) / statistics.median(results[1])
    print(f"{'':<36} {'ratio':<8} 2 vs 1 process total SPS = {ratio:.2f}x  ({repeats} repeats, {timesteps} steps)", flush=True)


def measure(row_name: str, library: str, timesteps: int, seed: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", row_name, library, str(timesteps), str(seed), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{library} {row_name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def memory_report() -> None:
    """Bytes per stored transition, and a full 1M-transition buffer, for HalfCheetah-sized spaces."""
    import torch

    from lightrl.data.replay import ReplayBuffer

    buffer = ReplayBuffer(1_000_000, 1, (17,), torch.float32, (6,), torch.float32)
    naive = 2 * 17 * 4 + 6 * 4 + 4 + 1  # obs and next_obs, action, reward, done
    print(f"replay buffer, obs (17,) + action (6,) float32: {buffer.bytes_per_transition:.1f} bytes/transition "
          f"(storing next_obs too: {naive}); a full 1M buffer holds {buffer.nbytes / 2**20:.0f} MiB", flush=True)


def summarize(values: list[float]) -> str:
    return f"{min(values):8.0f} {statistics.median(values):8.0f} {max(values):8.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=None, help="override every row's budget")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of every run, both libraries (0: torch's default); the networks are "
                             "tiny, and on a small shared machine extra threads only spin against each other")
    parser.add_argument("--ddp", action="store_true", help="report total SPS of 1 vs 2 DDP processes instead")
    parser.add_argument("--worker", nargs=4, metavar=("ROW", "LIB", "STEPS", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--ddp-worker", nargs=2, type=int, metavar=("DEVICES", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        ddp_worker(*args.ddp_worker)
        return
    if args.ddp:
        ddp_report(args.timesteps or 100_000, args.repeats)
        return
    if args.worker:
        row_name, library, steps, seed = args.worker
        worker(row_name, library, int(steps), int(seed), args.threads)
        return

    memory_report()
    print(f"torch threads per run: {args.threads or 'default'}")
    print(f"{'row':<36} {'library':<8} {'SPS min':>8} {'median':>8} {'max':>8} {'return (median)':>16}")
    for row_name in args.rows:
        timesteps = args.timesteps or ROWS[row_name]["timesteps"]
        results: dict[str, list[dict]] = {"lightrl": [], "sb3": []}
        for repeat in range(args.repeats):
            for library in ("lightrl", "sb3"):  # alternate A B A B
                results[library].append(measure(row_name, library, timesteps, 1 + repeat, args.threads))
        for library, runs in results.items():
            sps = [r["sps"] for r in runs]
            ret = statistics.median(r["return"] for r in runs)
            print(f"{ROWS[row_name]['title']:<36} {library:<8} {summarize(sps)} {ret:16.1f}", flush=True)
        ratio = statistics.median(r["sps"] for r in results["lightrl"]) / statistics.median(r["sps"] for r in results["sb3"])
        print(f"{'':<36} {'ratio':<8} lightrl/SB3 median SPS = {ratio:.2f}x  ({args.repeats} repeats, {timesteps} steps)", flush=True)


if __name__ == "__main__":
    main()
