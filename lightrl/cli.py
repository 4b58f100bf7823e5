"""The ``lightrl`` command: LightningCLI's fit, validate, test and predict, plus ``lightrl evaluate`` and ``lightrl export``.

Examples::

    lightrl fit --config experiments/ppo_cartpole.yaml
    lightrl fit --config experiments/ppo_cartpole.yaml --model.num_envs 16 --trainer.precision bf16-mixed
    lightrl fit --model PPO --model.env_id Acrobot-v1 --trainer.logger CSVLogger
    lightrl fit --config experiments/ppo_cartpole.yaml --ckpt_path last    # continue the newest interrupted run
    lightrl validate --model PPO --ckpt_path last                           # eval_episodes episodes: eval/return_mean
    lightrl test --model PPO --ckpt_path runs/lightrl/<run>/checkpoints/last.ckpt   # test_episodes episodes
    lightrl predict --model PPO --ckpt_path last                            # actions for the first observations
    lightrl evaluate --ckpt_path last --num_episodes 10                     # shorthand: prints mean +/- std
    lightrl export runs/lightrl/<run>/checkpoints/last.ckpt --output policy.onnx   # or policy.pt2
"""

from __future__ import annotations

import argparse
import importlib
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
from lightrl.algos.resume import check_class, check_resume
from lightrl.algos.trainer_flags import UnsupportedTrainerFlag
from lightrl.compat import CkptPathHook
from lightrl.deploy import FORMATS, export
from lightrl.errors import NonFiniteError
from lightrl.evaluation import evaluate
from lightrl.utils import load_module

#: What each subcommand does, for ``lightrl --help``.
SUBCOMMAND_HELP = {
    "fit": "Train a model until total_timesteps (--ckpt_path continues a run).",
    "validate": "Play eval_episodes deterministic episodes with a checkpoint's policy; log eval/return_mean.",
    "test": "Play test_episodes deterministic episodes on envs of their own seeds; log test/return_mean.",
    "predict": "Print the deterministic actions for the first observations of eval_episodes fresh episodes.",
}
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


class LightRLCLI(CkptPathHook, LightningCLI):
    """LightningCLI over every :class:`~lightrl.algos.base.RLModule`, with lightrl's Trainer defaults.

    Defaults: W&B logging (offline without an account), ``max_epochs=-1`` (the env-step budget ends
    the run) and a log line per training step.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.max_epochs": -1, "trainer.log_every_n_steps": 1, "trainer.logger": DEFAULT_LOGGER})

    def parse_arguments(self, parser, args) -> None:
        self.argv = list(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)

    def parse_ckpt_path(self) -> None:
        # Replaces LightningCLI's version, which loads the checkpoint's hyperparameters over the command line's
        # and fails obscurely on a checkpoint of another algorithm.
        self.resume_checkpoint = None
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        if config is None or not config.get("ckpt_path"):
            if subcommand in ("validate", "test", "predict"):
                raise UsageError(f"`lightrl {subcommand}` needs a trained policy: pass --ckpt_path PATH (or --ckpt_path last).")
            return
        roots = checkpoint_roots(config.trainer, default_logger_dir=subcommand != "fit")
        path = resolve_ckpt_path(config.ckpt_path, roots)
        config.ckpt_path = path
        if path is None:
            if subcommand != "fit":
                folders = ", ".join(sorted({repr(str(root)) for root in roots}))
                raise UsageError(f"--ckpt_path last: no last.ckpt in a checkpoints/ folder under {folders}.")
            print("lightrl: --ckpt_path last: no last checkpoint found yet; starting a new run.", file=sys.stderr)
            return
        checkpoint = self.resume_checkpoint = read_checkpoint(path)
        model_class = config.model.class_path
        try:
            check_class(checkpoint.get("lightrl", {}).get("class_path"), class_path_of(model_class), source=f"checkpoint {path!r}")
        except ValueError as err:
            raise UsageError(str(err)) from None
        # The run keeps the checkpoint's hyperparameters, except those set by --model.* flags.
        explicit = {m.group(1) for arg in self.argv if (m := re.match(r"--model\.(?:init_args\.)?(\w+)", arg))}
        hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k not in explicit and not k.startswith("_")}
        self.config = self.parser.parse_object({subcommand: {"model": {"class_path": model_class, "init_args": hparams}}}, self.config)
        run_id = checkpoint.get("lightrl", {}).get("wandb_run_id")
        logger = self.config[subcommand].trainer.get("logger")
        if subcommand == "fit" and run_id and str(getattr(logger, "class_path", "")).endswith("WandbLogger") and not logger.init_args.get("id"):
            logger.init_args.id = run_id  # continue the same W&B run, in the same run folder
            logger.dict_kwargs = {**(logger.get("dict_kwargs") or {}), "resume": "allow"}

    def before_instantiate_classes(self) -> None:
        if "WANDB_MODE" not in os.environ and wandb_mode() == "offline":
            os.environ["WANDB_MODE"] = "offline"
        trainer_config = self.config[self.config.subcommand].trainer
        for logger in trainer_config.get("logger") if isinstance(trainer_config.get("logger"), list) else [trainer_config.get("logger")]:
            save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
            if save_dir and str(getattr(logger, "class_path", "")).endswith("WandbLogger"):
                # W&B looks for a git repository from its folder and warns when the folder does not exist yet.
                Path(save_dir).mkdir(parents=True, exist_ok=True)

    def check_checkpoint(self) -> None:
        """Before a subcommand with ``--ckpt_path``: check that the checkpoint fits the model; report a mismatch in one line."""
        if self.resume_checkpoint is not None:
            try:
                check_resume(self.model, self.resume_checkpoint, source=f"checkpoint {self.config[self.subcommand].ckpt_path!r}")
            except ValueError as err:
                raise UsageError(str(err)) from None
            self.resume_checkpoint = None  # the Trainer loads it again; do not hold two copies

    before_fit = before_validate = before_test = before_predict = check_checkpoint

    def predict(self, model: RLModule, **kwargs) -> None:
        """``lightrl predict``: the Trainer's predict, then the actions printed, one row per observation."""
        predictions = self.trainer.predict(model, **kwargs)
        if self.trainer.is_global_zero:
            actions = torch.cat([torch.as_tensor(p) for p in predictions])
            print(f"{type(model).__name__} on {model.hparams.env_id}: deterministic actions for {len(actions)} observations:")
            print(actions.tolist())

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


def class_path_of(import_path: str) -> str:
    """``module.QualName`` of the class at ``import_path`` (``lightrl.PPO`` -> ``lightrl.algos.ppo.PPO``)."""
    module, _, name = import_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return f"{cls.__module__}.{cls.__qualname__}"


def checkpoint_roots(trainer_config, default_logger_dir: bool = False) -> list[Path]:
    """Folders under which a run's checkpoints are written: the loggers' save dirs and ``default_root_dir``.

    With ``default_logger_dir``, also the default logger's ``runs/``, so that ``lightrl validate
    --trainer.logger false`` finds what a plain ``lightrl fit`` wrote (a resumed fit looks only where it logs).
    """
    roots = [Path(trainer_config.get("default_root_dir") or ".")]
    if default_logger_dir:
        roots.append(Path(DEFAULT_LOGGER["init_args"]["save_dir"]))
    loggers = trainer_config.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
        if save_dir:
            roots.append(Path(save_dir))
    return roots


def resolve_ckpt_path(ckpt_path: str, roots: Sequence[Path]) -> str | None:
    """``last``: the newest ``last*.ckpt`` of any run under ``roots`` (None if there is none); else the path itself.

    Raises:
        UsageError: if the path does not exist.
    """
    if ckpt_path == "last":
        found = [p for root in roots for depth in ("", "*/", "*/*/") for p in root.glob(f"{depth}checkpoints/last*.ckpt")]
        return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None
    if not Path(ckpt_path).is_file():
        raise UsageError(f"checkpoint {ckpt_path!r} does not exist; pass the path of a .ckpt file, or --ckpt_path last.")
    return ckpt_path


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint's contents (memory-mapped, so cheap), or raise UsageError naming the path."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, foreign pickle: all mean "cannot resume from this"
        raise UsageError(f"checkpoint {path!r} cannot be read ({type(err).__name__}: {err}); it may be truncated or not a checkpoint.") from None


def find_checkpoint(given: str) -> str:
    """The checkpoint a shorthand command names: a path, or ``last`` (the newest ``last.ckpt`` under ``./`` and ``runs/``).

    Raises:
        UsageError: if the path does not exist, or there is no last checkpoint.
    """
    path = resolve_ckpt_path(given, [Path("."), Path(DEFAULT_LOGGER["init_args"]["save_dir"])])
    if path is None:
        raise UsageError("--ckpt_path last: no last.ckpt in a checkpoints/ folder under '.' or 'runs'.")
    return path


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors become a :class:`UsageError` (one line, exit 2)."""

    def error(self, message: str):
        raise UsageError(message)


def evaluate_main(argv: Sequence[str]) -> None:
    """``lightrl evaluate``: load a checkpoint of any algorithm and print the mean and std of its return.

    A shorthand for ``lightrl test`` that needs no ``--model`` and prints one line; the checkpoint is
    given as ``--ckpt_path PATH`` (or ``last``: the newest ``last.ckpt`` under ``./`` and ``runs/``), or positionally.
    """
    parser = OneLineParser(prog="lightrl evaluate", description="Evaluate a lightrl checkpoint on fresh envs.")
    parser.add_argument("checkpoint", nargs="?", help="a checkpoint written by `lightrl fit` or Trainer.fit")
    parser.add_argument("--ckpt_path", help="the checkpoint, as for `lightrl fit`: a path, or `last`")
    parser.add_argument("--num_episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the greedy one")
    args = parser.parse_args(argv)
    given = args.ckpt_path or args.checkpoint
    if not given:
        raise UsageError("`lightrl evaluate` needs a checkpoint: pass --ckpt_path PATH (or --ckpt_path last).")
    path = find_checkpoint(given)
    read_checkpoint(path)
    module = load_module(path)
    mean, std = evaluate(module, num_episodes=args.num_episodes, seed=args.seed, deterministic=not args.stochastic)
    print(f"{type(module).__name__} on {module.hparams.env_id}: return {mean:.2f} +/- {std:.2f} over {args.num_episodes} episodes")


def check_output_path(path: Path) -> None:
    """Raise UsageError unless ``path`` can be written: a known suffix, in an existing, writable folder."""
    if path.suffix not in FORMATS:
        raise UsageError(f"--output {str(path)!r} must end in {' or '.join(FORMATS)} (ONNX or torch.export)")
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK) or path.is_dir():
        reason = "is a folder" if path.is_dir() else f"folder {str(folder)!r} does not exist or is not writable"
        raise UsageError(f"--output {str(path)!r} cannot be written: {reason}")


def export_main(argv: Sequence[str]) -> None:
    """``lightrl export CKPT --output policy.onnx``: write a checkpoint's deterministic policy for deployment."""
    parser = OneLineParser(prog="lightrl export", description="Write a lightrl checkpoint's deterministic policy as ONNX or a torch.export archive.")
    parser.add_argument("ckpt_path", help="a checkpoint written by `lightrl fit` or Trainer.fit, or `last`")
    parser.add_argument("--output", required=True, help="policy.onnx (ONNX, for onnxruntime or TensorRT) or policy.pt2 (torch.export)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    check_output_path(output)
    ckpt_path = find_checkpoint(args.ckpt_path)
    if "lightrl" not in read_checkpoint(ckpt_path):
        raise UsageError(f"checkpoint {ckpt_path!r} was not written by a lightrl algorithm (it has no 'lightrl' section); "
                         "pass a checkpoint from `lightrl fit` or Trainer.fit.")  # fmt: skip
    try:
        module = load_module(ckpt_path)
        export(module, output)
    except (ValueError, ImportError) as err:  # an env that cannot be made here, a missing export dependency
        raise UsageError(str(err)) from None
    except OSError as err:
        raise UsageError(f"--output {str(output)!r} cannot be written: {err}") from None
    print(f"{type(module).__name__} policy for {module.hparams.env_id} written to {output} ({FORMATS[output.suffix]})")


def one_line(message: str) -> str:
    """The useful part of an error as one line: jsonargparse wraps a model's error in a Union report."""
    message = re.sub(r"\s+", " ", message).strip()
    wrapped = re.search(r"Errors: - (.*?) - Expected a <class 'NoneType'>", message)
    return wrapped.group(1) if wrapped else message


def run_cli(args: Sequence[str] | None = None) -> LightRLCLI:
    """Run ``lightrl fit|validate|test|predict`` with ``args`` (default: the command line); return the CLI object."""
    return LightRLCLI(
        RLModule,
        subclass_mode_model=True,
        args=args,
        seed_everything_default=False,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "exit_on_error": False,
            "prog": "lightrl",
            "description": "Train and evaluate lightrl algorithms (`lightrl evaluate --help`: a checkpoint's mean return; "
            "`lightrl export --help`: its policy as ONNX or torch.export).",
            **{name: {"exit_on_error": False, "description": text} for name, text in SUBCOMMAND_HELP.items()},
        },
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightrl`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "evaluate":
            evaluate_main(args[1:])
            return
        if args and args[0] == "export":
            export_main(args[1:])
            return
        run_cli(None if argv is None else args)
    except (UsageError, UnsupportedTrainerFlag, argparse.ArgumentError) as err:
        print(f"lightrl: error: {one_line(str(err))} (see `lightrl --help`)", file=sys.stderr)
        sys.exit(2)
    except NonFiniteError as err:
        print(f"lightrl: error: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        # Lightning leaves a DDP process group up after fit; gloo's threads can abort the interpreter's exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
