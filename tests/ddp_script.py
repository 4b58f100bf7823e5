"""Trains one algorithm with a real DDP strategy and writes what each rank saw to ``OUT/rank<r>.json``.

Run by tests/test_ddp.py in a subprocess (Lightning's ``ddp`` strategy re-launches this script once per
rank), or by torchrun for the two-node loopback test:

    python tests/ddp_script.py OUT ALGO [key=value ...]           # 2 processes on this machine
    python tests/ddp_script.py OUT ALGO stop_at=1024 ...          # also save OUT/stop.ckpt at 1024 env steps and stop
    python tests/ddp_script.py OUT ALGO resume='"OUT/stop.ckpt"'  # continue from a checkpoint
    torchrun --nnodes 2 ... tests/ddp_script.py OUT ALGO nodes=2  # one process per node
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

import lightrl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.resume_check import StopAt  # noqa: E402


class RecordRank(L.Callback):
    """Keeps the first observations this rank acted on, and the parameters at the end."""

    def __init__(self):
        self.first_obs = None
        self.train_batches = 0
        self.validations: list[tuple[float, float]] = []  # (eval/return_mean, eval/episodes) after each validation

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if os.environ.get("LIGHTRL_TEST_FAIL_RANK") == str(trainer.global_rank):
            raise RuntimeError(f"injected failure on rank {trainer.global_rank}")
        self.train_batches += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.first_obs is None:
            self.first_obs = pl_module.source.collector.obs.tolist()

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            self.validations.append((metrics["eval/return_mean"].item(), metrics["eval/episodes"].item()))

    def on_train_end(self, trainer, pl_module):
        self.episodes = len(pl_module.source.recent_returns)


def main() -> None:
    out, algo, *overrides = sys.argv[1:]
    options = dict(item.split("=", 1) for item in overrides)
    nodes = int(options.pop("nodes", 1))
    devices = int(options.pop("devices", 2 if nodes == 1 else 1))
    precision = options.pop("precision", "32-true")
    strategy = options.pop("strategy", "ddp")
    evaluate = options.pop("evaluate", "false") == "true"
    stop_at, resume = json.loads(options.pop("stop_at", "null")), json.loads(options.pop("resume", "null"))
    kwargs = {key: json.loads(value) for key, value in options.items()}
    model = getattr(lightrl, algo)(**kwargs)
    record = RecordRank()
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, num_nodes=nodes, strategy=strategy, precision=precision,
        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[record] + ([StopAt(stop_at, Path(out) / "stop.ckpt")] if stop_at else []),
        deterministic=True,
    )
    trainer.fit(model, ckpt_path=resume)
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    facts = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "env_steps": model.env_steps,
        "global_step": trainer.global_step,
        "train_batches": record.train_batches,
        "first_obs": record.first_obs,
        "episodes": record.episodes,
        "params_sha": hashlib.sha256(params.numpy().tobytes()).hexdigest(),
        "epochs": trainer.current_epoch,
        "validations": record.validations,
    }
    if model.policy.obs_normalizer is not None:  # normalize_obs: the statistics each rank ended with
        facts["obs_statistics"] = {key: value.tolist() for key, value in model.policy.obs_normalizer.state_dict().items()}
    if evaluate:
        facts["eval_return"], _ = lightrl.evaluate(model, num_episodes=10)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{trainer.global_rank}.json").write_text(json.dumps(facts))
    # Lightning leaves the process group up after fit; gloo's threads can abort the interpreter's exit.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
