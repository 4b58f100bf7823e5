"""The ``lightrl`` command: LightningCLI's fit, validate, test and predict, plus ``lightrl evaluate`` and ``lightrl export``.

Examples::

    lightrl fit --config experiments/ppo_cartpole.yaml
    lightrl fit --config experiments/ppo_cartpole.yaml --model.num_envs 16 --trainer.precision bf16-mixed
    lightrl fit --model PPO --model.env_id Acrobot-v1 --trainer.logger CSVLogger
    lightrl fit --model ppo --model.env_id my_envs:MyEnv-v0                 # my_envs.py in the current folder registers it
    lightrl fit --config experiments/ppo_cartpole.yaml --ckpt_path last    # continue the newest PPO run on CartPole
    lightrl validate --model PPO --ckpt_path last                           # eval_episodes episodes: eval/return_mean
    lightrl test --model PPO --ckpt_path runs/lightrl/<run>/checkpoints/last.ckpt   # test_episodes episodes
    lightrl predict --model PPO --ckpt_path last                            # actions for the first observations
    lightrl evaluate --ckpt_path last --num_episodes 10                     # shorthand: prints mean +/- std
    lightrl export runs/lightrl/<run>/checkpoints/last.ckpt --output policy.onnx   # or policy.pt2
    lightrl tune --config experiments/ppo_cartpole.yaml --search experiments/search_ppo_cartpole.yaml --n_trials 8
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import netrc
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Sequence

import jsonargparse
import torch
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightrl.algos.base import RLModule
from lightrl.algos.resume import check_class, check_resume
from lightrl.algos.trainer_flags import UnsupportedTrainerFlag
from lightrl.callbacks.interrupt import TrainingInterrupted
from lightrl.checkpoint_io import CheckpointWriteError, previous_version
from lightrl.compat import CkptPathHook
from lightrl.deploy import FORMATS, export
from lightrl.errors import EnvError, EnvWorkerDied, NonFiniteError
from lightrl.evaluation import evaluate
from lightrl.safe_checkpoint import check_wrappers, load_checkpoint
from lightrl.tune import INSTALL_HINT, PRUNERS, PruneOnValidation, TuneError, best_summary, decoded_params, default_storage
from lightrl.tune import as_flags, make_pruner, parse_search_space, read_search_space, run_study
from lightrl.utils import load_module

#: What each subcommand does, for ``lightrl --help``.
SUBCOMMAND_HELP = {
    "fit": "Train a model until total_timesteps (--ckpt_path continues a run).",
    "validate": "Play eval_episodes deterministic episodes with a checkpoint's policy; log eval/return_mean.",
    "test": "Play test_episodes deterministic episodes on envs of their own seeds; log test/return_mean.",
    "predict": "Print the deterministic actions for the first observations of eval_episodes fresh episodes.",
}
#: ``--trusted`` of ``lightrl evaluate`` and ``lightrl export`` (see lightrl.safe_checkpoint).
TRUSTED_HELP = "a checkpoint you wrote: allow env_wrappers that are functions, not only gymnasium.Wrapper classes"
#: The algorithms ``--model NAME`` takes by name, in any case; any other model is given by its import path.
ALGORITHMS = ("PPO", "A2C", "DQN", "SAC", "TD3")
#: Where runs are written: the default W&B logger's save_dir, and the folders of runs without a logger.
RUNS = "runs"
DEFAULT_LOGGER = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"project": "lightrl", "save_dir": RUNS}}


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


def run_dir(trainer) -> Path:
    """The folder of a run: where its ``checkpoints/`` folder is (Lightning's ``ModelCheckpoint`` default)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    logger.experiment  # starts the run if it has not started: the W&B logger has no version (the run id) before
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version)


class SaveRunConfig(SaveConfigCallback):
    """Saves the configuration of ``lightrl fit`` as ``config.yaml`` in the run's folder, beside ``checkpoints/``.

    Lightning's callback writes it to ``trainer.log_dir``, which the W&B logger shares between all runs
    (``runs/config.yaml``) and which is the current folder without a logger, for every subcommand.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Save at the start of ``fit`` only: validate, test and predict write nothing."""
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        """Write ``config.yaml`` to :func:`run_dir` (rank 0 only)."""
        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(folder / self.config_filename), overwrite=True, multifile=self.multifile, **keep_none())


def keep_none() -> dict[str, bool]:
    """The keyword of jsonargparse's ``save`` and ``dump`` that keeps None values (4.49 renamed ``skip_none`` to ``skip_unset``)."""
    renamed = tuple(int(n) for n in re.findall(r"\d+", jsonargparse.__version__)[:2]) >= (4, 49)
    return {"skip_unset" if renamed else "skip_none": False}


class LightRLCLI(CkptPathHook, LightningCLI):
    """LightningCLI over every :class:`~lightrl.algos.base.RLModule`, with lightrl's Trainer defaults.

    Defaults: W&B logging (offline without an account) and ``max_epochs=-1`` (the env-step budget ends
    the run). ``log_every_n_steps`` is left to the module's cadence, as from Python (``RLModule.log_interval``).
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.max_epochs": -1, "trainer.logger": DEFAULT_LOGGER})

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
        model_class = config.model.class_path
        roots = checkpoint_roots(config.trainer, default_logger_dir=subcommand != "fit" or not config.trainer.get("logger"))
        if config.ckpt_path == "last":
            explicit_env = any(re.match(r"--config\b|--model\.(init_args\.)?env_id\b", arg) for arg in self.argv)
            path = newest_run_of(class_path_of(model_class), config.model.init_args.get("env_id") if explicit_env else None, roots, subcommand)
        else:
            path = resolve_ckpt_path(config.ckpt_path, roots)
        config.ckpt_path = path
        if path is None:
            return
        checkpoint = self.resume_checkpoint = read_checkpoint(path)
        try:
            check_class(checkpoint.get("lightrl", {}).get("class_path"), class_path_of(model_class), source=f"checkpoint {path!r}")
        except ValueError as err:
            raise UsageError(str(err)) from None
        # The run keeps the checkpoint's hyperparameters, except those set by --model.* flags.
        explicit = {m.group(1) for arg in self.argv if (m := re.match(r"--model\.(?:init_args\.)?(\w+)", arg))}
        hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k not in explicit and not k.startswith("_")}
        given = config.model.get("init_args", {}).get("env_wrappers")
        if hparams.get("env_wrappers") and hparams["env_wrappers"] != given:  # the config's own wrappers are the user's to trust
            try:
                check_wrappers(hparams, f"checkpoint {path!r}", trust_hint="if you trust it, pass the same env_wrappers with --config or --model.env_wrappers")
            except ValueError as err:
                raise UsageError(str(err)) from None
        self.config = self.parser.parse_object({subcommand: {"model": {"class_path": model_class, "init_args": hparams}}}, self.config)
        run_id = checkpoint.get("lightrl", {}).get("wandb_run_id")
        logger = self.config[subcommand].trainer.get("logger")
        if subcommand == "fit" and run_id and str(getattr(logger, "class_path", "")).endswith("WandbLogger") and not logger.init_args.get("id"):
            logger.init_args.id = run_id  # continue the same W&B run, in the same run folder
            logger.dict_kwargs = {**(logger.get("dict_kwargs") or {}), "resume": "allow"}

    def before_instantiate_classes(self) -> None:
        if "WANDB_MODE" not in os.environ and wandb_mode() == "offline":
            os.environ["WANDB_MODE"] = "offline"
        config = self.config[self.config.subcommand]
        trainer_config = config.trainer
        if self.config.subcommand == "fit" and not trainer_config.get("logger") and not trainer_config.get("default_root_dir"):
            # Without a logger, Lightning writes checkpoints to ./checkpoints/: give each run a folder of its own,
            # and a resumed run the folder of its checkpoint.
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and Path(ckpt_path).parent.name == "checkpoints":
                trainer_config.default_root_dir = str(Path(ckpt_path).parent.parent)
            else:
                trainer_config.default_root_dir = new_run_dir(config.model)
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
    cls = import_class(import_path)
    return f"{cls.__module__}.{cls.__qualname__}"


def checkpoint_roots(trainer_config, default_logger_dir: bool = False) -> list[Path]:
    """Folders under which a run's checkpoints are written: the loggers' save dirs and ``default_root_dir``.

    With ``default_logger_dir``, also ``runs/``, so that ``lightrl validate --trainer.logger false`` finds
    what a plain ``lightrl fit`` wrote, and a fit without a logger the runs without one (a resumed fit with a
    logger looks only where it logs).
    """
    roots = [Path(trainer_config.get("default_root_dir") or ".")]
    if default_logger_dir:
        roots.append(Path(RUNS))
    loggers = trainer_config.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
        if save_dir:
            roots.append(Path(save_dir))
    return roots


def run_name(model_config) -> str:
    """The folder name of a run without a logger: the algorithm and the env id, e.g. ``PPO-CartPole-v1``."""
    algorithm = str(model_config.class_path).rpartition(".")[2]
    env_id = str(model_config.init_args.get("env_id"))
    return re.sub(r"[^\w.-]+", "-", f"{algorithm}-{env_id}")


def new_run_dir(model_config) -> str:
    """The folder of a new run without a logger, ``runs/<Algorithm>-<env id>/version_<N>``.

    The DDP processes that Lightning starts (``LOCAL_RANK`` > 0) take the folder rank 0 chose, from the
    environment it started them with.
    """
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get("LIGHTRL_RUN_DIR"):
        return os.environ["LIGHTRL_RUN_DIR"]
    folder = os.environ["LIGHTRL_RUN_DIR"] = str(next_version_dir(Path(RUNS) / run_name(model_config)))
    return folder


def next_version_dir(folder: Path) -> Path:
    """``folder/version_N`` with the first N not taken, as Lightning's CSV and TensorBoard loggers number runs."""
    taken = {int(m.group(1)) for p in folder.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))}
    return folder / f"version_{max(taken, default=-1) + 1}"


def last_checkpoints(roots: Sequence[Path]) -> list[Path]:
    """Every ``last*.ckpt`` in a ``checkpoints/`` folder up to three levels under ``roots``, newest first."""
    found: dict[Path, Path] = {}  # each file once, named as found under its root
    for root in roots:
        for depth in ("", "*/", "*/*/", "*/*/*/"):
            for path in root.glob(f"{depth}checkpoints/last*.ckpt"):
                found.setdefault(path.resolve(), path)
    return sorted(found.values(), key=lambda p: p.stat().st_mtime, reverse=True)


def run_of(path: Path) -> tuple[str | None, str | None]:
    """The class path and env id of the run that wrote a checkpoint ((None, None) if it cannot be read)."""
    try:
        checkpoint = load_checkpoint(path, mmap=True)
    except Exception:  # a truncated or foreign file is no candidate
        return None, None
    return checkpoint.get("lightrl", {}).get("class_path"), checkpoint.get("hyper_parameters", {}).get("env_id")


def newest_run_of(class_path: str, env_id: str | None, roots: Sequence[Path], subcommand: str) -> str | None:
    """``--ckpt_path last``: the newest last checkpoint of this algorithm (and env, if given) under ``roots``.

    Without one, ``fit`` starts a new run (None, after a notice); the other subcommands raise a UsageError
    listing the last checkpoints of other runs.
    """
    candidates = [(path, *run_of(path)) for path in last_checkpoints(roots)]
    for path, cls, _ in candidates:
        if cls is None:
            read_checkpoint(str(path))  # a damaged last.ckpt stops here, naming it (and its .prev), rather than a new run
    for path, cls, env in candidates:
        if cls == class_path and env_id in (None, env):
            return str(path)
    algorithm = class_path.rpartition(".")[2] + (f" on {env_id}" if env_id else "")
    others = "; ".join(f"{path} ({str(cls).rpartition('.')[2]} on {env})" for path, cls, env in candidates[:5] if cls)
    listed = f" Other runs' checkpoints: {others}; pass one with --ckpt_path PATH." if others else ""
    if subcommand == "fit":
        print(f"lightrl: --ckpt_path last: no last checkpoint of {algorithm} yet; starting a new run.{listed}", file=sys.stderr)
        return None
    folders = ", ".join(sorted({repr(str(root)) for root in roots}))
    raise UsageError(f"--ckpt_path last: no last.ckpt of {algorithm} in a checkpoints/ folder under {folders}.{listed}")


def resolve_ckpt_path(ckpt_path: str, roots: Sequence[Path]) -> str | None:
    """``last``: the newest ``last*.ckpt`` of any run under ``roots`` (None if there is none); else the path itself.

    Raises:
        UsageError: if the path does not exist.
    """
    if ckpt_path == "last":
        found = last_checkpoints(roots)
        return str(found[0]) if found else None
    if not Path(ckpt_path).is_file():
        raise UsageError(f"checkpoint {ckpt_path!r} does not exist; pass the path of a .ckpt file, or --ckpt_path last.")
    return ckpt_path


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint's contents (memory-mapped, so cheap), or raise UsageError naming the path."""
    try:
        return load_checkpoint(path, mmap=True)
    except Exception as err:  # truncated zip, wrong format, foreign pickle: all mean "cannot resume from this"
        prev = previous_version(path)
        fallback = f" The version before it is kept: resume with --ckpt_path {str(prev)!r}." if prev else ""
        raise UsageError(f"checkpoint {path!r} cannot be read ({type(err).__name__}: {err}); it may be truncated or not a checkpoint.{fallback}") from None


def find_checkpoint(given: str) -> str:
    """The checkpoint a shorthand command names: a path, or ``last`` (the newest ``last.ckpt`` under ``./`` and ``runs/``).

    Raises:
        UsageError: if the path does not exist, or there is no last checkpoint.
    """
    path = resolve_ckpt_path(given, [Path("."), Path(RUNS)])
    if path is None:
        raise UsageError("--ckpt_path last: no last.ckpt in a checkpoints/ folder under '.' or 'runs'.")
    return path


def load_checkpoint_module(path: str, trusted: bool = False) -> RLModule:
    """The module of a lightrl checkpoint, or a UsageError in one line (not lightrl's, a module or env that cannot be made,
    a function named as env wrapper unless ``trusted``: see :func:`lightrl.safe_checkpoint.load_module`)."""
    if "lightrl" not in read_checkpoint(path):
        raise UsageError(f"checkpoint {path!r} was not written by a lightrl algorithm (it has no 'lightrl' section); "
                         "pass a checkpoint from `lightrl fit` or Trainer.fit.")  # fmt: skip
    try:
        return load_module(path, trusted=trusted)
    except (ValueError, ImportError, AttributeError) as err:  # the algorithm's or the env's module, an env that cannot be made here
        message = one_line(str(err))
        if message.startswith("cannot import") and " named " in message and "env_id" not in message:
            message = f"checkpoint {path!r}: {message}"
        raise UsageError(message) from None


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
    parser.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    args = parser.parse_args(argv)
    given = args.ckpt_path or args.checkpoint
    if not given:
        raise UsageError("`lightrl evaluate` needs a checkpoint: pass --ckpt_path PATH (or --ckpt_path last).")
    path = find_checkpoint(given)
    module = load_checkpoint_module(path, trusted=args.trusted)
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
    parser.add_argument("--trusted", action="store_true", help=TRUSTED_HELP)
    args = parser.parse_args(argv)
    output = Path(args.output)
    check_output_path(output)
    module = load_checkpoint_module(find_checkpoint(args.ckpt_path), trusted=args.trusted)
    try:
        export(module, output)
    except (ValueError, ImportError) as err:  # a space export cannot take, a missing export dependency
        raise UsageError(str(err)) from None
    except OSError as err:
        raise UsageError(f"--output {str(output)!r} cannot be written: {err}") from None
    print(f"{type(module).__name__} policy for {module.hparams.env_id} written to {output} ({FORMATS[output.suffix]})")


# ------------------------------------------------------------------------------------ lightrl tune


class ConfigOnly(LightRLCLI):
    """Parses a ``lightrl fit`` command line into its configuration, making no model, Trainer or env (``run=False``)."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def fit_config(args: Sequence[str]) -> ConfigOnly:
    """The parsed configuration of ``lightrl fit ARGS`` (as ``.config``, dumped by ``.parser``), or a UsageError."""
    try:
        return run_trial_cli(list(args), cli_class=ConfigOnly, run=False)
    except argparse.ArgumentError as err:
        raise UsageError(one_line(str(err))) from None


def run_trial_cli(args: Sequence[str], **kwargs) -> LightRLCLI:
    """:func:`run_cli` for ``lightrl tune``, whose ``args`` differ from ``sys.argv`` on purpose (LightningCLI warns of that)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended", UserWarning)
        return run_cli(args, **kwargs)


def check_values(fit_args: Sequence[str], dimensions, source: str) -> None:
    """Raise UsageError naming the entry if the CLI refuses a value of the search space (``low``, ``high``, each choice)."""
    for dimension in dimensions:
        for value in dimension.extremes():
            try:
                fit_config([*fit_args, *as_flags({dimension.path: value})])
            except UsageError as err:
                reason = re.sub(r"^Problem with given class_path '[\w.]+': ", "", str(err))
                raise UsageError(f"{source}, entry {dimension.path!r}: the model does not take {value!r} ({reason})") from None


class TrialCLI(LightRLCLI):
    """The ``lightrl fit`` of one trial of ``lightrl tune``: a run folder and logger run of its own, on one device.

    Args:
        trial: The ``optuna.Trial``; its ``run_dir`` user attribute is set to the run's folder before training.
        study_dir: Where trials without a logger write their run (``<study_dir>/trial_<N>``).
    """

    def __init__(self, *args, trial, study_dir: Path, **kwargs) -> None:
        self.trial, self.study_dir = trial, study_dir
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        trainer_config = self.config.fit.trainer
        if trainer_config.get("devices") == "auto":  # "auto" takes every GPU, and DDP would start `lightrl tune` again per rank
            trainer_config.devices = 1
        label_trial_run(trainer_config, self.trial.study.study_name, self.trial.number, self.study_dir)
        super().before_instantiate_classes()

    def before_fit(self) -> None:
        super().before_fit()
        self.trial.set_user_attr("run_dir", str(run_dir(self.trainer)))  # pruned and failed trials too


def label_trial_run(trainer_config, study_name: str, number: int, study_dir: Path) -> None:
    """Give trial ``number``'s run a folder and a name of its own: the W&B run ``<study_name>-trial_<N>`` in the group
    ``study_name``, the CSV or TensorBoard version ``<study_name>-trial_<N>``, or without a logger the folder
    ``study_dir/trial_<N>`` (under ``default_root_dir`` if given). What the user set is kept."""
    label = f"{study_name}-trial_{number}"
    loggers = trainer_config.get("logger")
    if not loggers:
        trainer_config.default_root_dir = str(Path(trainer_config.get("default_root_dir") or study_dir) / f"trial_{number}")
        return
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = getattr(logger, "init_args", None)
        if init_args is None:  # `--trainer.logger true`: Lightning's TensorBoard logger numbers its runs
            continue
        if str(logger.class_path).endswith("WandbLogger"):
            logger.dict_kwargs = {"group": study_name, **(logger.get("dict_kwargs") or {})}
            init_args.name = init_args.get("name") or label
        elif "version" in init_args and init_args.version is None:
            init_args.version = label


def finish_wandb_run() -> None:
    """End the active W&B run, if any, so that the next trial's logger starts a run of its own."""
    wandb = sys.modules.get("wandb")  # not imported: no run
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def check_one_device(trainer_config) -> None:
    """Raise UsageError if the trials would run on several devices (DDP would start ``lightrl tune`` again in each rank)."""
    devices = trainer_config.get("devices")
    several = len(devices) > 1 if isinstance(devices, (list, tuple)) else str(devices) not in ("auto", "1", "None")
    if several or str(trainer_config.get("strategy") or "").startswith("ddp"):
        raise UsageError(f"lightrl tune trains each trial in its own process on one device, got --trainer.devices {devices}: pass "
                         "--trainer.devices 1, and start one `lightrl tune` per device on a shared --storage to use more.")  # fmt: skip


def tune_main(argv: Sequence[str]) -> None:
    """``lightrl tune``: an Optuna search over a search space, each trial a ``lightrl fit`` of the other arguments.

    Checks the search space against the model before anything runs, resumes the study found in its storage,
    prints the best trial and writes it as ``best.yaml``, a config that ``lightrl fit --config`` trains.
    """
    parser = OneLineParser(prog="lightrl tune", allow_abbrev=False, description="Search hyperparameters with Optuna; "
                           "each trial is a `lightrl fit` of the other arguments (--config, --model.*, --trainer.*), scored "
                           "by eval/return_mean at its last validation. Rerun the same command to continue the study.")  # fmt: skip
    parser.add_argument("--search", required=True, help="the search space, a YAML file (experiments/search_ppo_cartpole.yaml)")
    parser.add_argument("--n_trials", type=int, help="trials to run in this invocation")
    parser.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    parser.add_argument("--study_name", help="default: <Algorithm>-<env id>-<search file name>")
    parser.add_argument("--storage", help=f"an Optuna storage URL (default: sqlite:///{RUNS}/tune/<study_name>/study.db)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median", help="stop trials below the median at a validation, or never")
    parser.add_argument("--n_startup_trials", type=int, default=5, help="trials that finish before the pruner prunes any")
    parser.add_argument("--sampler_seed", type=int, help="seed of Optuna's TPE sampler")
    args, fit_args = parser.parse_known_args(argv)
    if args.n_trials is None and args.timeout is None:
        raise UsageError("`lightrl tune` needs a budget: pass --n_trials N, --timeout SECONDS, or both.")
    try:
        import optuna
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    fit_args = canonical_model_args(fit_args)
    base = fit_config(fit_args)
    model_config = base.config.model
    model_class = import_class(model_config.class_path)
    dimensions = parse_search_space(read_search_space(args.search), model_class.__name__, model_options(model_class), f"--search {args.search!r}")
    check_values(fit_args, dimensions, f"--search {args.search!r}")
    check_one_device(base.config.trainer)
    study_name = args.study_name or f"{run_name(model_config)}-{Path(args.search).stem}"
    study_dir = Path(RUNS, "tune", re.sub(r"[^\w.-]+", "-", study_name))
    study = optuna.create_study(
        study_name=study_name,
        storage=args.storage or default_storage(study_dir),
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.sampler_seed),
        pruner=make_pruner(args.pruner, args.n_startup_trials),
    )
    print(f"lightrl tune: study {study_name!r} ({len(study.trials)} trials so far)")

    def fit(trial, flags: list[str]) -> float | None:
        prune = PruneOnValidation(trial)
        try:
            run_trial_cli(["fit", *fit_args, *flags], cli_class=TrialCLI, trial=trial, study_dir=study_dir,
                          trainer_defaults={"callbacks": [prune]})  # fmt: skip
        except (UsageError, UnsupportedTrainerFlag, argparse.ArgumentError) as err:
            raise UsageError(f"trial {trial.number} ({' '.join(flags)}): {one_line(str(err))}") from None
        finally:
            finish_wandb_run()
        return prune.last_value

    try:
        run_study(study, dimensions, fit, args.n_trials, args.timeout)
    except (KeyboardInterrupt, TrainingInterrupted) as err:  # the trial in progress is told FAIL
        print(f"lightrl tune: interrupted; rerun the same command to continue study {study_name!r}.", file=sys.stderr)
        sys.exit(err.code if isinstance(err, SystemExit) else 130)
    write_best(study, dimensions, fit_args, study_dir)


def write_best(study, dimensions, fit_args: Sequence[str], study_dir: Path) -> None:
    """Print the best trial and write it to ``study_dir/best.yaml`` as a full ``lightrl fit`` config."""
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        print(f"lightrl tune: no trial of study {study.study_name!r} has completed yet; nothing written.")
        return
    best = study.best_trial
    print(f"lightrl tune: {best_summary(study, dimensions)}")
    config = fit_config([*fit_args, *as_flags(decoded_params(best.params, dimensions))])
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / "best.yaml"
    run = best.user_attrs.get("run_dir")
    header = (f"# Best trial {best.number} of Optuna study {study.study_name!r}: eval/return_mean = {best.value:.2f}"
              + (f", run {run}" if run else "") + f".\n# Train it: lightrl fit --config {path}\n")  # fmt: skip
    path.write_text(header + config.parser.dump(config.config, **keep_none()))
    print(f"lightrl tune: best config written to {path}; train it with `lightrl fit --config {path}`")


def one_line(message: str) -> str:
    """The useful part of an error as one line: jsonargparse wraps a model's error in a Union report.

    Some of jsonargparse's and Python's messages are put in lightrl's words: an unknown option gets the
    closest option's name, a missing ``--model`` an example, a module that cannot be imported the fix.
    """
    message = re.sub(r"\s+", " ", message).strip()
    wrapped = re.search(r"Errors: - (.*?) - Expected a <class 'NoneType'>", message)
    message = wrapped.group(1) if wrapped else message
    if option := re.search(r"Problem with given class_path '([\w.]+)': Option '(\w+)' is not accepted", message):
        return unknown_option(*option.groups())
    if missing := re.search(r"the following arguments are required: (\w+)\.model\b", message):
        return (f"`lightrl {missing.group(1)}` needs an algorithm: pass --model with one of {', '.join(ALGORITHMS)} (or the import "
                f"path of your own, my_package.MyAlgo), or --config; for example `lightrl {missing.group(1)} --model PPO "
                "--model.env_id CartPole-v1` or `lightrl fit --config experiments/ppo_cartpole.yaml`.")
    if (module := re.search(r"No module named '([\w.]+)'", message)) and "Run lightrl from the folder" not in message:
        return unimportable(module.group(1), message)
    return message


def unknown_option(class_path: str, option: str) -> str:
    """The error for ``--model.<option>`` that the model does not take, naming the closest of its options."""
    name = class_path.rpartition(".")[2]
    try:
        options = model_options(import_class(class_path))
    except (ImportError, AttributeError):
        options = []
    close = difflib.get_close_matches(option, options, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"{name} has no option {option!r}{hint} (`lightrl fit --model.help {name}` lists its options)"


def unimportable(module: str, message: str) -> str:
    """The error for a module that cannot be imported: what needed it, and how to make it importable."""
    top = module.partition(".")[0]
    if "Environment registration" in message:
        what = f"module {module!r}, which registers the env (env_id '{module}:...')"
    elif class_path := re.search(r"class_path '([\w.]+)'", message):
        what = f"the module of --model {class_path.group(1)}" if not class_path.group(1).startswith("lightrl.") else repr(module)
    else:
        what = repr(module)
    return (f"cannot import {what}: No module named {module!r}. Run lightrl from the folder that holds {top}.py (or the "
            f"{top}/ package), add that folder to PYTHONPATH, or pip install the package.")


def import_class(import_path: str) -> type:
    """The class at ``module.QualName``."""
    module, _, name = import_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def model_options(cls: type) -> list[str]:
    """The ``__init__`` parameters of ``cls`` and of the bases its ``**kwargs`` reach: what ``--model.*`` takes."""
    options: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        options += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return options


def canonical_model_args(args: Sequence[str]) -> list[str]:
    """``args`` with ``--model ppo`` spelled as lightrl's class (``PPO``); a name that is none of them is a UsageError.

    Names with a dot (an import path, a YAML file) are left to LightningCLI.
    """
    args = list(args)
    by_lower = {name.lower(): name for name in ALGORITHMS}
    for i, arg in enumerate(args):
        if arg == "--model" and i + 1 < len(args):
            index, value = i + 1, args[i + 1]
        elif arg.startswith("--model="):
            index, value = i, arg.partition("=")[2]
        else:
            continue
        if "." in value or value.lstrip().startswith(("{", "[")) or value in ALGORITHMS:
            continue
        if value.lower() not in by_lower:
            close = difflib.get_close_matches(value.upper(), ALGORITHMS, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise UsageError(f"--model {value!r} is not a lightrl algorithm: pass one of {', '.join(ALGORITHMS)}, or the import path "
                             f"of your own RLModule subclass (my_package.MyAlgo).{hint}")  # fmt: skip
        args[index] = by_lower[value.lower()] if index == i + 1 else f"--model={by_lower[value.lower()]}"
    return args


def run_cli(args: Sequence[str] | None = None, cli_class: type[LightRLCLI] = LightRLCLI, **kwargs) -> LightRLCLI:
    """Run ``lightrl fit|validate|test|predict`` with ``args`` (default: the command line); return the CLI object.

    ``cli_class`` and ``kwargs`` (more of LightningCLI's arguments) are for ``lightrl tune``'s trials.
    """
    return cli_class(
        RLModule,
        subclass_mode_model=True,
        args=args,
        seed_everything_default=False,
        auto_configure_optimizers=False,
        save_config_callback=SaveRunConfig,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        parser_kwargs={
            "exit_on_error": False,
            "prog": "lightrl",
            "description": "Train and evaluate lightrl algorithms (`lightrl evaluate --help`: a checkpoint's mean return; "
            "`lightrl export --help`: its policy as ONNX or torch.export; `lightrl tune --help`: a hyperparameter search).",
            **{name: {"exit_on_error": False, "description": text} for name, text in SUBCOMMAND_HELP.items()},
        },
        **kwargs,
    )


def add_working_directory_to_path() -> None:
    """Make modules in the current folder importable (``--model.env_id goal:GoalEnv-v0``, ``--model my_algo.MyAlgo``).

    ``python script.py`` puts the script's folder on ``sys.path``; an installed command does not. The folder
    goes last, so that a file there never shadows an installed or standard module (a ``wandb.py`` or
    ``copy.py`` lying in the folder); a module of the folder named like an installed one is not found.
    """
    cwd = os.getcwd()
    if not any(os.path.abspath(entry) == cwd for entry in sys.path):
        sys.path.append(cwd)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightrl`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    add_working_directory_to_path()
    try:
        if args and args[0] == "evaluate":
            evaluate_main(args[1:])
            return
        if args and args[0] == "export":
            export_main(args[1:])
            return
        if args and args[0] == "tune":
            tune_main(args[1:])
            return
        if argv is None:  # LightningCLI reads sys.argv itself (and DDP processes start with it)
            sys.argv[1:] = canonical_model_args(args)
            run_cli()
        else:
            run_cli(canonical_model_args(args))
    except (UsageError, UnsupportedTrainerFlag, argparse.ArgumentError, TuneError) as err:
        print(f"lightrl: error: {one_line(str(err))} (see `lightrl --help`)", file=sys.stderr)
        sys.exit(2)
    except (NonFiniteError, EnvError, CheckpointWriteError, EnvWorkerDied) as err:
        print(f"lightrl: error: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        # Lightning leaves a DDP process group up after fit; gloo's threads can abort the interpreter's exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
