"""Hyperparameter search on Optuna, offline: what ``lightrl tune`` runs (``pip install lightrl[tune]``).

A search space is a YAML file that maps each searched hyperparameter, as a dotted path, to a distribution::

    model.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    model.num_steps: {type: int, low: 16, high: 128, step: 16}
    model.hidden_sizes: {type: categorical, choices: [[64, 64], [128, 128]]}

:func:`parse_search_space` checks it against the model's hyperparameters before any env or trial exists.
Each trial is an ordinary ``lightrl fit`` with the sampled values as ``--model.*`` flags; its objective is
``eval/return_mean`` at its last validation, and :class:`PruneOnValidation` stops it early at a validation
when the pruner says so. :func:`run_study` is the ask-and-tell loop over the trials; ``lightrl.cli`` gives it
the fit. Optuna is imported only here, inside the functions that need it: it is an optional dependency.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from lightning.pytorch.callbacks import Callback

from lightrl.errors import NonFiniteError

#: The metric a trial maximises: the mean return of the validation episodes.
MONITOR = "eval/return_mean"
#: The keys each distribution type takes; the first two (or ``choices``) are required.
DISTRIBUTION_KEYS = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"), "categorical": ("choices",)}
PRUNERS = ("median", "none")
EXAMPLE = "model.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}"
INSTALL_HINT = "lightrl tune needs Optuna: pip install lightrl[tune]"


class SearchSpaceLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` as a float as YAML 1.2 does (YAML 1.1 needs ``1.0e-4``)."""


SearchSpaceLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


class TuneError(ValueError):
    """A search space that cannot be searched, or a trial without an objective; the message names the fix."""


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: its dotted path (``model.learning_rate``) and its distribution."""

    path: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` samples for this hyperparameter (an ``optuna.Trial``)."""
        if self.kind == "float":
            return trial.suggest_float(self.path, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.path, self.low, self.high, log=self.log, step=self.step or 1)
        return self.decode(trial.suggest_categorical(self.path, [encode(c) for c in self.choices]))

    def extremes(self) -> tuple[Any, ...]:
        """The values that show whether the model takes this dimension's type: ``low`` and ``high``, or every choice."""
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    def decode(self, stored: Any) -> Any:
        """The hyperparameter's value from the value Optuna stores (lists and mappings are stored as JSON text)."""
        if self.kind == "categorical" and isinstance(stored, str) and stored not in self.choices:
            return json.loads(stored)
        return stored


def encode(choice: Any) -> Any:
    """A categorical choice as Optuna stores it: scalars as they are, lists and mappings as JSON text."""
    return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice)


def read_search_space(path: str | Path) -> Any:
    """The YAML content of a search-space file; a missing file or bad YAML is a :class:`TuneError`."""
    try:
        return yaml.load(Path(path).read_text(), Loader=SearchSpaceLoader)
    except OSError as err:
        raise TuneError(f"--search {str(path)!r} cannot be read ({err.strerror}); pass a YAML file such as "
                               "experiments/search_ppo_cartpole.yaml.") from None  # fmt: skip
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TuneError(f"--search {str(path)!r} is not valid YAML{where} ({getattr(err, 'problem', None) or err}); "
                               f"write one entry per line, e.g. `{EXAMPLE}`.") from None  # fmt: skip


def parse_search_space(content: Any, model_name: str, options: Sequence[str], source: str = "search space") -> list[Dimension]:
    """Check a search space (the YAML content) and return its dimensions, in the file's order.

    Args:
        content: The parsed YAML: a mapping from ``model.<hyperparameter>`` to a distribution.
        model_name: The algorithm's name, for the messages (``PPO``).
        options: The hyperparameters the model takes (its ``__init__`` parameters).
        source: The file, for the messages.

    Raises:
        TuneError: naming the entry and the fix, for the first entry that cannot be searched.
    """
    if not isinstance(content, dict) or not content:
        raise TuneError(f"{source} must map hyperparameters to distributions, one per line, e.g. `{EXAMPLE}`.")
    return [parse_entry(str(path), spec, model_name, options, source) for path, spec in content.items()]


def parse_entry(path: str, spec: Any, model_name: str, options: Sequence[str], source: str) -> Dimension:
    """One entry of a search space as a :class:`Dimension` (see :func:`parse_search_space`)."""
    where = f"{source}, entry {path!r}"
    section, _, name = path.partition(".")
    if section != "model" or not re.fullmatch(r"\w+", name):
        raise TuneError(f"{where}: name a hyperparameter of the model as model.<name>, e.g. `{EXAMPLE}`.")
    if name not in options:
        close = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean 'model.{close[0]}'?" if close else f"`lightrl fit --model.help {model_name}` lists them."
        raise TuneError(f"{where}: {model_name} has no hyperparameter {name!r}; {hint}")
    if not isinstance(spec, dict) or spec.get("type") not in DISTRIBUTION_KEYS:
        got = spec.get("type") if isinstance(spec, dict) else spec
        raise TuneError(f"{where}: give a mapping with type float, int or categorical (got {got!r}), e.g. `{EXAMPLE}`.")
    kind, allowed = spec["type"], DISTRIBUTION_KEYS[spec["type"]]
    unknown = sorted(set(spec) - {"type", *allowed})
    if unknown:
        raise TuneError(f"{where}: a {kind} distribution takes {', '.join(allowed)}, not {', '.join(unknown)}.")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise TuneError(f"{where}: give a non-empty list of choices, e.g. `{path}: {{type: categorical, choices: [5, 10, 20]}}`.")
        return Dimension(path, kind, choices=tuple(choices))
    return Dimension(path, kind, **numeric_bounds(spec, kind, where))


def numeric_bounds(spec: dict, kind: str, where: str) -> dict[str, Any]:
    """``low``, ``high``, ``log`` and ``step`` of a float or int entry, checked as Optuna needs them."""
    missing = [key for key in ("low", "high") if key not in spec]
    if missing:
        raise TuneError(f"{where}: a {kind} distribution needs low and high (missing {' and '.join(missing)}).")
    number = int if kind == "int" else (int, float)
    for key in ("low", "high", "step"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, number)):
            what = "an integer" if kind == "int" else "a number"
            raise TuneError(f"{where}: {key} must be {what}, got {value!r}.")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if low >= high:
        raise TuneError(f"{where}: low ({low}) must be less than high ({high}).")
    if not isinstance(log, bool):
        raise TuneError(f"{where}: log must be true or false, got {log!r}.")
    if log and low <= 0:
        raise TuneError(f"{where}: a log distribution needs low > 0, got {low}.")
    if step is not None and step <= 0:
        raise TuneError(f"{where}: step must be positive, got {step}.")
    if log and step not in (None, 1):
        raise TuneError(f"{where}: log and step cannot be combined; drop one of them.")
    return {"low": low, "high": high, "log": log, "step": step}


def as_flags(values: dict[str, Any]) -> list[str]:
    """Sampled values as ``lightrl fit`` flags: ``{"model.gamma": 0.98}`` -> ``["--model.gamma=0.98"]``.

    Strings are given as they are (``--model.vectorization=sync``), other values as JSON (lists, ``null``),
    which the CLI reads as YAML.
    """
    return [f"--{path}={value if isinstance(value, str) else json.dumps(value)}" for path, value in values.items()]


def sample(trial: Any, dimensions: Sequence[Dimension]) -> dict[str, Any]:
    """The values ``trial`` samples, by dotted path."""
    return {d.path: d.suggest(trial) for d in dimensions}


def decoded_params(params: dict[str, Any], dimensions: Sequence[Dimension]) -> dict[str, Any]:
    """A finished trial's ``params`` as hyperparameter values (categorical lists decoded from their JSON text)."""
    by_path = {d.path: d for d in dimensions}
    return {path: by_path[path].decode(value) if path in by_path else value for path, value in params.items()}


class PruneOnValidation(Callback):
    """Reports ``eval/return_mean`` to an Optuna trial at each validation end, and prunes the trial when told.

    The intermediate values are keyed by the env steps trained so far, so that the pruner compares trials
    at the same point of their budget. The sanity-check validation, before training, is not reported.

    Args:
        trial: The ``optuna.Trial`` of this fit.
        monitor: The validation metric to report.

    Example::

        trainer = L.Trainer(callbacks=[PruneOnValidation(trial)], max_epochs=-1)
        trainer.fit(PPO(timesteps_per_epoch=4096))  # raises optuna.TrialPruned at a validation the pruner rejects
    """

    def __init__(self, trial: Any, monitor: str = MONITOR) -> None:
        self.trial = trial
        self.monitor = monitor
        #: The metric at the last validation (None before the first): the trial's objective.
        self.last_value: float | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        """Report the validation's metric, then raise ``optuna.TrialPruned`` if the pruner stops the trial here."""
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        import optuna

        self.last_value = float(trainer.callback_metrics[self.monitor])
        step = int(getattr(pl_module, "env_steps", trainer.global_step))
        self.trial.report(self.last_value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor} = {self.last_value:.2f} after {step} steps is below the pruner's threshold.")


def make_pruner(name: str, n_startup_trials: int) -> Any:
    """Optuna's pruner for ``--pruner``: ``median`` (``MedianPruner``) or ``none`` (``NopPruner``).

    ``n_startup_trials``: trials that must finish before any is pruned.
    """
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials)


def default_storage(study_dir: Path) -> str:
    """The SQLite URL of a study's default storage, ``<study_dir>/study.db`` (the folder is created)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{study_dir / 'study.db'}"


def count_states(study: Any) -> dict[str, int]:
    """How many trials of ``study`` are in each state: ``{"COMPLETE": 6, "PRUNED": 2}``."""
    counts: dict[str, int] = {}
    for trial in study.trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


#: ``fit(trial, flags)``: train one trial with these ``--model.*`` flags; return its objective (None if never validated).
FitTrial = Callable[[Any, list], "float | None"]


def run_study(study: Any, dimensions: Sequence[Dimension], fit: FitTrial, n_trials: int | None, timeout: float | None) -> int:
    """Run trials one after another until ``n_trials`` are done here or ``timeout`` seconds have passed.

    Each trial is asked from ``study``, trained by ``fit`` and told back as COMPLETE (with its objective),
    PRUNED (by :class:`PruneOnValidation`, or when training diverged) or FAIL (on any other error, which
    then ends the study). ``timeout`` is checked between trials, as Optuna's ``study.optimize`` does.

    Returns:
        The number of trials run.
    """
    import optuna

    start, done = time.monotonic(), 0
    while (n_trials is None or done < n_trials) and (timeout is None or time.monotonic() - start < timeout):
        trial = study.ask()
        done += 1
        values = sample(trial, dimensions)
        try:
            value = fit(trial, as_flags(values))
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"lightrl tune: trial {trial.number} pruned: {pruned}")
            continue
        except NonFiniteError as err:  # a diverging learning rate: a bad region, not a reason to stop the search
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"lightrl tune: trial {trial.number} pruned: training diverged ({err})")
            continue
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise TuneError(f"trial {trial.number} never validated, so it has no {MONITOR}: keep validation on "
                             "(no --trainer.limit_val_batches 0) and give it a budget of at least one epoch (timesteps_per_epoch).")  # fmt: skip
        study.tell(trial, value)
        print(f"lightrl tune: trial {trial.number} finished: {MONITOR} = {value:.2f} with {described(values)}")
    return done


def described(values: dict[str, Any]) -> str:
    """Hyperparameter values in words: ``model.gamma=0.98, model.hidden_sizes=[64, 64]``."""
    return ", ".join(f"{path}={value!r}" for path, value in values.items())


def best_summary(study: Any, dimensions: Sequence[Dimension]) -> str:
    """The best trial in words: its number, objective and hyperparameters, and the study's trial counts."""
    best = study.best_trial
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(count_states(study).items()))
    return f"best trial {best.number}: {MONITOR} = {best.value:.2f} with {described(decoded_params(best.params, dimensions))} ({counts})"
