"""Search PPO's hyperparameters for the CartPole race of ``time_to_solve.py``: the shortest time to solve.

Each trial races one recipe in this process, under the race's rule (10 deterministic episodes every 4,096 env
steps, stop at 475), on seeds apart from the race's own (101-116), so that the race on seeds 1-5 measures a
recipe that was not fitted to them. The objective is the mean ``fit`` seconds over the seeds, where a seed not
solved within ``--cap`` env steps counts twice its time: a recipe that is fast on most seeds but fails some
scores worse than a steady one (a median over few seeds rewarded luck). The search space is a ``lightrl tune``
file (docs/tune.md) over the base recipe's hyperparameters; the study lives in SQLite, so that one process per
core can share it.

    python experiments/race_search.py --timeout 1500 --storage sqlite:///runs/race.db --sampler-seed 1 &  # one per core
    python experiments/race_search.py --timeout 1500 --storage sqlite:///runs/race.db --sampler-seed 2
    python experiments/race_search.py --storage sqlite:///runs/race.db --validate 6 --seeds $(seq 201 216)

``--validate K`` races the K best trials again on other seeds, one after another, and prints each one's mean
and median ``fit`` seconds (as the objective counts them), seeds solved and median env steps: pick from those
figures, not from the search's own.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import time_to_solve as race

EXPERIMENTS = Path(__file__).parent


class CappedRace(race.Race):
    """The race's clock and evaluations, giving up after ``cap`` env steps (training still plans for ``budget``)."""

    def __init__(self, eval_every: int, budget: int, cap: int):
        super().__init__(eval_every, budget)
        self.cap = cap

    def check(self, env_steps, act) -> bool:
        if super().check(env_steps, act):
            return True
        if env_steps < self.cap:
            return False
        self.result = {"solved": False, "env_steps": env_steps, "fit_seconds": time.perf_counter() - self.fit_start}
        return True


def race_recipe(init_args: dict, seeds: list[int], cap: int, report=None) -> list[dict]:
    """Race lightrl's PPO with ``init_args`` on each seed in turn; each run's result (``report(i, results)`` after each)."""
    race.RACE = {**race.RACES["cartpole"], "lightrl": init_args}
    results = []
    for i, seed in enumerate(seeds):
        run = CappedRace(4096, 200_000, cap)
        race.run_lightrl(seed, run)
        results.append(run.result)
        if report:
            report(i, results)
    return results


def objective_seconds(results: list[dict]) -> list[float]:
    """Each run's ``fit`` seconds, doubled where it was not solved."""
    return [r["fit_seconds"] * (1 if r["solved"] else 2) for r in results]


def main() -> None:
    import optuna
    import torch
    import yaml

    from lightrl import PPO
    from lightrl.cli import model_options
    from lightrl.tune import decoded_params, parse_search_space, read_search_space, sample

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(EXPERIMENTS / "ppo_cartpole_fast.yaml"), help="the base recipe")
    parser.add_argument("--search", default=str(EXPERIMENTS / "search_race_cartpole.yaml"), help="the search space")
    parser.add_argument("--storage", required=True, help="an Optuna storage URL, e.g. sqlite:///runs/race.db")
    parser.add_argument("--study-name", default="race_cartpole")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds of search in this process")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(101, 117)))
    parser.add_argument("--cap", type=int, default=45_056, help="env steps after which a seed counts as not solved")
    parser.add_argument("--sampler-seed", type=int, default=None)
    parser.add_argument("--validate", type=int, metavar="K", help="race the K best trials on --seeds instead of searching")
    args = parser.parse_args()

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = yaml.safe_load(Path(args.config).read_text())["model"]["init_args"]
    base = {k: v for k, v in base.items() if k not in ("env_id", "seed", "total_timesteps")}
    dimensions = parse_search_space(read_search_space(args.search), "PPO", model_options(PPO), args.search)
    study = optuna.create_study(study_name=args.study_name, storage=args.storage, load_if_exists=True, direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=args.sampler_seed, n_startup_trials=20),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=4))  # fmt: skip

    def recipe(values: dict) -> dict:
        return {**base, **{path.split(".", 1)[1]: value for path, value in values.items()}}

    if args.validate:
        done = sorted((t for t in study.trials if t.value is not None), key=lambda t: t.value)[: args.validate]
        for trial in done:
            values = decoded_params(trial.params, dimensions)
            results = race_recipe(recipe(values), args.seeds, args.cap)
            seconds = objective_seconds(results)
            print(f"trial {trial.number} (search {trial.value:.2f} s): mean {statistics.mean(seconds):.2f} s, median {statistics.median(seconds):.2f} s, "
                  f"solved {sum(r['solved'] for r in results)}/{len(results)}, median env steps "
                  f"{statistics.median(r['env_steps'] for r in results):.0f}; {values}", flush=True)  # fmt: skip
        return

    def objective(trial) -> float:
        def report(i: int, results: list[dict]) -> None:
            trial.report(statistics.mean(objective_seconds(results)), i)
            if trial.should_prune():
                raise optuna.TrialPruned()

        results = race_recipe(recipe(sample(trial, dimensions)), args.seeds, args.cap, report)
        trial.set_user_attr("env_steps", [r["env_steps"] for r in results])
        return statistics.mean(objective_seconds(results))

    study.optimize(objective, timeout=args.timeout)
    best = study.best_trial
    print(f"best of {len(study.trials)} trials: {best.value:.2f} s, {best.params}")


if __name__ == "__main__":
    main()
