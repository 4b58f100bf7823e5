"""Paired microbenchmarks: each private torch fast path lightrl used against its public replacement.

The figures behind docs/benchmarks.md, "Private fast paths and their public replacements", and the check
to rerun after a torch upgrade. Each case alternates the private (A) and the public (B) version in blocks
of ``--inner`` calls, ``--blocks`` blocks each, in this one process with one torch thread, and prints the
median time per call. It also checks that both give the same tensors (``torch.equal``).

    python experiments/private_fast_paths.py                  # every case, about a minute
    python experiments/private_fast_paths.py --cases adam clip
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightrl.compat import FusedAdam  # noqa: E402
from lightrl.nn.actor_critic import ActorCritic  # noqa: E402
from lightrl.nn.mlp import mlp, sequential_forward  # noqa: E402
from lightrl.optim import clip_grad_norm_  # noqa: E402


def paired(name: str, a: Callable[[], object], b: Callable[[], object], blocks: int, inner: int) -> None:
    times: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(3):
        a(), b()
    for block in range(blocks):
        order = (("A", a), ("B", b)) if block % 2 == 0 else (("B", b), ("A", a))
        for key, fn in order:
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[key].append((time.perf_counter() - start) / inner * 1e6)
    ma, mb = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"{name}: private {ma:.1f} us, public {mb:.1f} us, difference {mb - ma:+.1f} us", flush=True)


def private_sequential_forward(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """lightrl's sequential_forward before 2026-12-01: parameters read from ``Module._parameters``."""
    fresh = False
    for layer in net:
        if type(layer) is nn.Linear:
            params = layer._parameters
            x, fresh = F.linear(x, params["weight"], params["bias"]), True
            continue
        x = (torch.tanh_(x) if fresh else torch.tanh(x)) if type(layer) is nn.Tanh else (torch.relu_(x) if fresh else torch.relu(x))
        fresh = False
    return x


@torch.no_grad()
def private_clip(params: list[torch.Tensor], max_norm: float) -> float:
    """lightrl.optim.clip_grad_norm_ before 2026-12-01: ``torch._foreach_norm`` and ``torch._foreach_mul_``."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    if math.isfinite(norm) and norm + 1e-6 > max_norm:
        torch._foreach_mul_(grads, max_norm / (norm + 1e-6))
    return norm


def case_adam(blocks: int, inner: int) -> None:
    torch.manual_seed(0)
    nets = [mlp(4, [256, 256], 2, nn.ReLU) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    target = mlp(4, [256, 256], 2, nn.ReLU)
    obs, next_obs = torch.randn(64, 4), torch.randn(64, 4)
    actions, rewards = torch.randint(0, 2, (64,)), torch.randn(64)
    optimizers = [FusedAdam(nets[0].parameters(), lr=1e-4), torch.optim.Adam(nets[1].parameters(), lr=1e-4, fused=True)]

    def step(net: nn.Sequential, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            td_target = rewards + 0.99 * sequential_forward(target, next_obs).max(1).values
        q = sequential_forward(net, obs).gather(1, actions[:, None]).squeeze(1)
        optimizer.zero_grad()
        F.smooth_l1_loss(q, td_target).backward()
        optimizer.step()

    paired("DQN gradient step (64 x 4-256-256-2), FusedAdam vs Adam(fused=True)", lambda: step(nets[0], optimizers[0]),
           lambda: step(nets[1], optimizers[1]), blocks, max(1, inner // 4))  # fmt: skip
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))


def case_clip(blocks: int, inner: int) -> None:
    torch.manual_seed(0)
    q = mlp(4, [256, 256], 2, nn.ReLU)
    q(torch.randn(64, 4)).square().mean().backward()
    params = list(q.parameters())
    paired("gradient norm, DQN 256-256, within max_norm 10", lambda: private_clip(params, 10.0), lambda: clip_grad_norm_(params, 10.0), blocks, inner)
    agent = nn.ModuleList([mlp(4, [64, 64], 2), mlp(4, [64, 64], 1)])
    sum(net(torch.randn(128, 4)).square().sum() for net in agent).backward()
    params = list(agent.parameters())
    grads = [p.grad.clone() for p in params]

    def clipped(clip: Callable) -> list[torch.Tensor]:
        for p, g in zip(params, grads):
            p.grad.copy_(g)
        clip(params, 0.5)
        return [p.grad for p in params]

    paired("gradient clipping, PPO 64-64 agent to 0.5", lambda: clipped(private_clip), lambda: clipped(clip_grad_norm_), blocks, inner)
    a = [g.clone() for g in clipped(private_clip)]
    assert all(torch.equal(x, y) for x, y in zip(a, clipped(clip_grad_norm_)))


def case_polyak(blocks: int, inner: int) -> None:
    torch.manual_seed(0)
    online = [p.detach() for _ in range(2) for p in mlp(4, [256, 256], 1, nn.ReLU).parameters()]
    targets = [[p.detach().clone() for p in online] for _ in range(2)]

    def private() -> None:
        torch._foreach_lerp_(targets[0], online, 0.005)

    def public() -> None:
        for t, o in zip(targets[1], online):
            t.lerp_(o, 0.005)

    paired("Polyak update, SAC's twin 256-256 critics", private, public, blocks, inner)
    assert all(torch.equal(x, y) for x, y in zip(*targets))  # both moved alike, block for block


def case_forward(blocks: int, inner: int) -> None:
    env = gym.make("CartPole-v1")
    agent, obs = ActorCritic(env.observation_space, env.action_space), torch.randn(4, 4)

    def act(forward: Callable) -> torch.Tensor:
        with torch.no_grad():
            return forward(agent.actor, obs), forward(agent.critic, obs)

    paired("PPO acting forward (actor and critic, 4 envs), _parameters vs .weight", lambda: act(private_sequential_forward),
           lambda: act(sequential_forward), blocks, inner)  # fmt: skip
    assert all(torch.equal(x, y) for x, y in zip(act(private_sequential_forward), act(sequential_forward)))


CASES = {"adam": case_adam, "clip": case_clip, "polyak": case_polyak, "forward": case_forward}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--blocks", type=int, default=80)
    parser.add_argument("--inner", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.cases:
        CASES[name](args.blocks, args.inner)


if __name__ == "__main__":
    main()
