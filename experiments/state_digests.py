"""Same computation: per-tensor sha256 digests of the final ``state_dict`` of short, fixed training runs.

A refactor that must not change a computed weight runs this before and after: ``--write`` records the
digests of the current tree in a JSON file, ``--check`` (the default) trains the same runs again and
compares. The runs are those of issue 22's acceptance, each with ``vectorization="sync"`` given explicitly:
PPO CartPole 2,048 env steps, PPO Pendulum 1,024, A2C 1,000, DQN 3,000, SAC 600, TD3 600, and async PPO
(seed 3, 1,536 steps); and a DQN run whose target network gets several Polyak updates per vector step.

Tensors are compared by content, in ``state_dict`` order, not by name: a refactor may rename a key
(e.g. move a network under another attribute) without changing any weight. Each run's entry keeps the
names too, and a renamed key is reported as such; a changed, added or missing tensor is a failure.

Usage::

    python experiments/state_digests.py --write experiments/state_digests_dc109a1.json
    python experiments/state_digests.py --check experiments/state_digests_dc109a1.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings

import lightning as L
import torch

import lightrl

#: name -> (algorithm, keyword arguments). Off-policy runs start learning early enough to take many updates.
RUNS = {
    "ppo_cartpole": ("PPO", dict(env_id="CartPole-v1", total_timesteps=2048, seed=1)),
    "ppo_pendulum": ("PPO", dict(env_id="Pendulum-v1", total_timesteps=1024, seed=1, normalize_obs=True)),
    "a2c_cartpole": ("A2C", dict(env_id="CartPole-v1", total_timesteps=1000, seed=1)),
    "dqn_cartpole": ("DQN", dict(env_id="CartPole-v1", total_timesteps=3000, seed=1, learning_starts=500, buffer_size=2000,
                                 batch_size=32, train_frequency=10, gradient_steps=2, target_network_frequency=250, hidden_sizes=[32])),
    # Several target updates per vector step (4 envs, every 6 env steps, tau 0.5) and an n-step buffer.
    "dqn_polyak": ("DQN", dict(env_id="CartPole-v1", total_timesteps=2000, seed=2, num_envs=4, learning_starts=200, buffer_size=1000,
                               batch_size=16, train_frequency=8, gradient_steps=2, target_network_frequency=6, tau=0.5, n_step=3,
                               hidden_sizes=[16])),
    "sac_pendulum": ("SAC", dict(env_id="Pendulum-v1", total_timesteps=600, seed=1, learning_starts=100, buffer_size=1000,
                                 batch_size=32, hidden_sizes=[32])),
    "td3_pendulum": ("TD3", dict(env_id="Pendulum-v1", total_timesteps=600, seed=1, learning_starts=100, buffer_size=1000,
                                 batch_size=32, hidden_sizes=[32])),
    "ppo_async": ("PPO", dict(env_id="CartPole-v1", total_timesteps=1536, num_envs=2, num_steps=128, seed=3, collector="async")),
}


def digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def train(algo: str, kwargs: dict) -> list[tuple[str, str]]:
    """Train one run to its budget; ``[(state_dict key, digest)]`` in ``state_dict`` order."""
    model = getattr(lightrl, algo)(vectorization="sync", **kwargs)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model)
    return [(key, digest(value)) for key, value in model.state_dict().items()]


def compare(name: str, expected: list[list[str]], actual: list[tuple[str, str]]) -> list[str]:
    """Differences between two runs' digests, by content in order; renamed keys are noted, not failed."""
    problems, notes = [], []
    if len(expected) != len(actual):
        problems.append(f"{name}: {len(expected)} tensors expected, {len(actual)} found")
    for (old_key, old), (new_key, new) in zip(expected, actual):
        if old != new:
            problems.append(f"{name}: tensor {old_key!r} (now {new_key!r}) differs")
        elif old_key != new_key:
            notes.append(f"{name}: {old_key!r} is now {new_key!r} (same content)")
    for note in notes:
        print("  renamed:", note)
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", metavar="JSON", help="record the digests of this tree")
    mode.add_argument("--check", metavar="JSON", default="experiments/state_digests_dc109a1.json", help="compare with recorded digests")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results, problems = {}, []
    expected = {} if args.write else json.load(open(args.check))
    for name in args.runs:
        tic = time.perf_counter()
        algo, kwargs = RUNS[name]
        results[name] = train(algo, kwargs)
        status = ""
        if not args.write:
            found = compare(name, expected[name], results[name])
            problems += found
            status = "DIFFERENT" if found else "identical"
        print(f"{name}: {len(results[name])} tensors, {time.perf_counter() - tic:.1f} s {status}", flush=True)
    if args.write:
        with open(args.write, "w") as f:
            json.dump({k: [list(p) for p in v] for k, v in results.items()}, f, indent=1)
        print(f"wrote {args.write}")
        return 0
    for problem in problems:
        print("FAIL:", problem)
    print("all identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
