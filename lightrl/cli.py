"""The ``lightrl`` command: LightningCLI for training, plus ``lightrl evaluate`` for checkpoints.

Examples::

    lightrl fit --config experiments/ppo_cartpole.yaml
    lightrl fit --config experiments/ppo_cartpole.yaml --model.num_envs 16 --trainer.precision bf16-mixed
    lightrl fit --model PPO --model.env_id Acrobot-v1 --trainer.logger CSVLogger
    lightrl evaluate runs/lightrl/<run>/checkpoints/last.ckpt --num_episodes 10
"""

from __future__ import annotations

import argparse
import netrc
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightrl.algos.base import RLModule
from lightrl.utils import load_module

DEFAULT_LOGGER = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"project": "lightrl", "save_dir": "runs"}}


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, without a traceback."""


def wandb_mode() -> str:
    """``WANDB_MODE`` if set; ``online`` with an API key or a ``wandb login``; otherwise ``offline``."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class LightRLCLI(LightningCLI):
    """LightningCLI over every :class:`~lightrl.algos.base.RLModule`, with lightrl's Trainer defaults.

    Defaults: W&B logging (offline without an account), ``max_epochs=-1`` (the env-step budget ends
    the run) and a log line per training step.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.max_epochs": -1, "trainer.log_every_n_steps": 1, "trainer.logger": DEFAULT_LOGGER})

    def before_instantiate_classes(self) -> None:
        if "WANDB_MODE" not in os.environ and wandb_mode() == "offline":
            os.environ["WANDB_MODE"] = "offline"

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as err:  # bad hyperparameters, env id, space, devices
            raise UsageError(str(err)) from err


    def after_fit(self) -> None:
        """After ``lightrl fit``: finish an offline W&B run and print the ``wandb sync`` command that uploads it."""
        logger = self.trainer.logger
        if isinstance(logger, WandbLogger) and self.trainer.is_global_zero and os.environ.get("WANDB_MODE") == "offline":
            run_dir = Path(logger.experiment.dir).parent
            import wandb

            wandb.finish()
            print(f"W&B run saved offline. Upload it with:\n  wandb sync {run_dir}")


def evaluate_main(argv: Sequence[str]) -> None:
    """``lightrl evaluate CKPT``: load a checkpoint and print the mean and std of its evaluation return."""
    from lightrl.evaluation import evaluate

    parser = argparse.ArgumentParser(prog="lightrl evaluate", description="Evaluate a lightrl checkpoint on fresh envs.")
    parser.add_argument("ckpt_path", help="a checkpoint written by `lightrl fit` or Trainer.fit")
    parser.add_argument("--num_episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the greedy one")
    args = parser.parse_args(argv)
    if not Path(args.ckpt_path).is_file():
        raise UsageError(f"checkpoint {args.ckpt_path!r} does not exist; pass the path of a .ckpt file.")
    module = load_module(args.ckpt_path)
    mean, std = evaluate(module, num_episodes=args.num_episodes, seed=args.seed, deterministic=not args.stochastic)
    print(f"{type(module).__name__} on {module.hparams.env_id}: return {mean:.2f} +/- {std:.2f} over {args.num_episodes} episodes")


def one_line(message: str) -> str:
    """The useful part of an error as one line: jsonargparse wraps a model's error in a Union report."""
    message = re.sub(r"\s+", " ", message).strip()
    wrapped = re.search(r"Errors: - (.*?) - Expected a <class 'NoneType'>", message)
    return wrapped.group(1) if wrapped else message


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightrl`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "evaluate":
            evaluate_main(args[1:])
            return
        LightRLCLI(
            RLModule,
            subclass_mode_model=True,
            args=None if argv is None else args,
            seed_everything_default=False,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
        )
    except (UsageError, argparse.ArgumentError) as err:
        print(f"lightrl: error: {one_line(str(err))} (see `lightrl --help`)", file=sys.stderr)
        sys.exit(2)
    finally:
        # Lightning leaves a DDP process group up after fit; gloo's threads can abort the interpreter's exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
