"""Where the time of CPU DDP goes: 1 process against 2, and 2 DDP processes against 2 independent ones.

PPO with CleanRL's defaults (4 envs per process), the recipe of ``benchmark.py --ddp``. Each repeat runs,
alternating, in fresh processes:

- ``1 proc``: one process, torch's default intra-op threads (as ``benchmark.py --ddp`` ran it);
- ``1 proc, 1 thread``: the same with one thread;
- ``2 indep``: two single processes at once, one thread each, sharing nothing (what 2 cores give two
  copies of the work: the ceiling for DDP here);
- ``2 ddp``: ``Trainer(devices=2, strategy="ddp")``, which also times each gradient all-reduce (a
  communication hook that waits for it): the time a rank spends in gloo, waiting for the other rank
  included.

Reported: total env steps per second from the first batch on (min / median / max), and per DDP rank its torch threads and the
share of its wall time spent in all-reduces.

    python experiments/ddp_cpu.py --timesteps 40000 --repeats 2     # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed_allreduce(state: dict, bucket):
    """A DDP communication hook: the average of the gradients over ranks, timed into ``state``."""
    import torch
    import torch.distributed as dist

    start = time.perf_counter()
    tensor = bucket.buffer()
    dist.all_reduce(tensor)
    tensor.div_(dist.get_world_size())
    state["seconds"] += time.perf_counter() - start
    state["calls"] += 1
    future = torch.futures.Future()
    future.set_result(tensor)
    return future


def run(devices: int, timesteps: int, threads: int) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    from benchmark import ROWS, lightrl_model

    if threads:
        torch.set_num_threads(threads)
    model = lightrl_model(ROWS["ppo_cleanrl"], timesteps, seed=1)
    comm = {"seconds": 0.0, "calls": 0}

    class TimeAllReduce(Callback):
        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()
            if devices > 1:  # Lightning registers communication hooks on CUDA only: register it on the DDP module
                trainer.strategy.model.register_comm_hook(comm, timed_allreduce)

    timer = TimeAllReduce()
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, max_epochs=-1,
                        callbacks=[timer])  # fmt: skip
    trainer.fit(model)
    wall = time.perf_counter() - timer.start  # from the first batch: process-group and env start-up left out
    record = {"rank": trainer.global_rank, "sps": model.env_steps / wall, "threads": torch.get_num_threads(),
              "allreduce_share": comm["seconds"] / wall, "allreduces": comm["calls"]}  # fmt: skip
    print("RESULT " + json.dumps(record), flush=True)


def results(proc: subprocess.CompletedProcess) -> list[dict]:
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]


def launch(devices: int, timesteps: int, threads: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--run", str(devices), str(timesteps), str(threads)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(popen: subprocess.Popen) -> list[dict]:
    out, err = popen.communicate()
    return results(subprocess.CompletedProcess(popen.args, popen.returncode, out, err))


def summary(values: list[float]) -> str:
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=40_000, help="env steps of each run (all its processes together)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--run", nargs=3, type=int, metavar=("DEVICES", "STEPS", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run(*args.run)
        return
    sps: dict[str, list[float]] = {"1 proc": [], "1 proc, 1 thread": [], "2 indep": [], "2 ddp": []}
    ranks: list[dict] = []
    for _ in range(args.repeats):
        sps["1 proc"].append(finish(launch(1, args.timesteps))[0]["sps"])
        sps["1 proc, 1 thread"].append(finish(launch(1, args.timesteps, threads=1))[0]["sps"])
        pair = [launch(1, args.timesteps // 2, threads=1) for _ in range(2)]
        sps["2 indep"].append(sum(finish(p)[0]["sps"] for p in pair))
        ddp = finish(launch(2, args.timesteps))
        sps["2 ddp"].append(ddp[0]["sps"])  # env_steps counts both ranks
        ranks += ddp
    for name, values in sps.items():
        print(f"{name:<17} total SPS (min / median / max) {summary(values)}")
    for base in ("1 proc", "1 proc, 1 thread"):
        ratios = ", ".join(f"{name} {statistics.median(sps[name]) / statistics.median(sps[base]):.2f}x" for name in ("2 indep", "2 ddp"))
        print(f"against {base}: {ratios}")
    for r in ranks:
        print(f"ddp rank {r['rank']}: {r['threads']} torch thread(s), {r['allreduces']} all-reduces, {100 * r['allreduce_share']:.0f}% of its wall time in them")


if __name__ == "__main__":
    main()
