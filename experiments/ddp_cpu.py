"""Where the time of CPU DDP goes: N DDP processes against N independent ones, for N in ``--ranks``.

PPO with CleanRL's defaults (4 envs per process), the recipe of ``benchmark.py --ddp``. Every process runs
one torch thread (``OMP_NUM_THREADS=1``) and ``--timesteps`` env steps of its own (weak scaling: N ranks
run N times the steps of one). Each repeat runs, in fresh processes, for each N:

- ``N indep``: N single processes at once, sharing nothing: what N cores give N copies of the work, the
  machine's own ceiling for DDP;
- ``N ddp``: ``Trainer(devices=N, strategy="ddp")`` (gloo), which also times each gradient all-reduce
  (a communication hook that waits for it): the time a rank spends in gloo, waiting for the others included.

Reported: total env steps per second from the first batch on (min / median / max), the speed-up of each
against one process, and per DDP rank the share of its wall time spent in all-reduces.

    python experiments/ddp_cpu.py --timesteps 40000 --repeats 2                 # 1 and 2 processes, ~2 min on 2 cores
    python experiments/ddp_cpu.py --ranks 1 2 4 8 --timesteps 40000 --repeats 1  # a machine of 8 cores or more
"""

from __future__ import annotations

import argparse
import json
import os
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


def run(devices: int, timesteps: int) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    from benchmark import ROWS, lightrl_model

    model = lightrl_model(ROWS["ppo_cleanrl"], timesteps * devices, seed=1)
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


def launch(devices: int, timesteps: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--run", str(devices), str(timesteps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # Lightning's launcher would give each rank cores // N threads
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(popen: subprocess.Popen) -> list[dict]:
    out, err = popen.communicate()
    return results(subprocess.CompletedProcess(popen.args, popen.returncode, out, err))


def summary(values: list[float]) -> str:
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=40_000, help="env steps of each process")
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2], help="numbers of processes to compare (1 is the baseline)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--run", nargs=2, type=int, metavar=("DEVICES", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run(*args.run)
        return
    counts = sorted(set(args.ranks) | {1})
    sps: dict[str, list[float]] = {}
    ranks: dict[int, list[dict]] = {}
    for _ in range(args.repeats):
        for n in counts:
            group = [launch(1, args.timesteps) for _ in range(n)]
            sps.setdefault(f"{n} indep", []).append(sum(finish(p)[0]["sps"] for p in group))
            if n > 1:
                ddp = finish(launch(n, args.timesteps))
                sps.setdefault(f"{n} ddp", []).append(ddp[0]["sps"])  # env_steps counts every rank
                ranks.setdefault(n, []).extend(ddp)
    base = statistics.median(sps["1 indep"])
    for name, values in sps.items():
        print(f"{name:<9} total SPS (min / median / max) {summary(values)}   {statistics.median(values) / base:.2f}x of 1 process")
    for n, records in ranks.items():
        shares = [100 * r["allreduce_share"] for r in records]
        print(f"{n} ddp: {records[0]['allreduces']} all-reduces per rank, {min(shares):.0f}-{max(shares):.0f}% of a rank's wall time in them")
    if args.json:
        args.json.write_text(json.dumps({"timesteps_per_process": args.timesteps, "sps": sps,
                                         "ranks": {str(n): r for n, r in ranks.items()}}, indent=1))


if __name__ == "__main__":
    main()
