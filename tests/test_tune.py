"""`lightrl tune`: a study on CartPole completes, prunes a bad region, continues on its storage, and writes a best.yaml that trains."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jsonargparse import Namespace

from lightrl.cli import check_values, fit_config, label_trial_run, main, run_cli
from lightrl.errors import NonFiniteError
from lightrl.tune import Dimension, TuneError, as_flags, parse_search_space, read_search_space, run_study

optuna = pytest.importorskip("optuna", reason="lightrl tune needs the tune extra: pip install lightrl[tune]")

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "experiments" / "search_ppo_cartpole.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
MODEL = ["--config", str(ROOT / "experiments" / "ppo_cartpole.yaml"), "--model.seed", "3", "--model.eval_episodes", "5", *QUIET]
BASE = [*MODEL, "--trainer.logger", "false"]
STUDY = ["--study_name", "cartpole", "--sampler_seed", "0", "--n_startup_trials", "1"]
# Two trials of 2048 steps, each validated once, at 2048: their returns are 40.4 and 115.0 (seed 3's first policy plays 9.0).
GOOD = "model.learning_rate: {type: float, low: 5.0e-4, high: 2.0e-3, log: true}\n"
# A learning rate too small to move the weights: the trial still plays 9.0 at 2048 steps, far below the median.
BAD = "model.learning_rate: {type: float, low: 1.0e-9, high: 2.0e-9, log: true}\n"
BUDGET = ["--model.total_timesteps", "2048", "--model.timesteps_per_epoch", "2048"]


def load(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="cartpole", storage=f"sqlite:///{folder / 'runs/tune/cartpole/study.db'}")


def states(study: optuna.Study) -> list[str]:
    return [trial.state.name for trial in study.trials]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two trials of a small study, run in a folder of their own; yields the folder and what the command printed."""
    folder = tmp_path_factory.mktemp("tune")
    (folder / "good.yaml").write_text(GOOD)
    out = io.StringIO()  # capsys is per test
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.chdir(folder)
        main(["tune", "--search", "good.yaml", "--n_trials", "2", *STUDY, *BASE, *BUDGET])
    return folder, out.getvalue()


@pytest.mark.timeout(300)
def test_a_small_study_completes_its_trials_each_in_its_own_run(study):
    folder, out = study
    result = load(folder)
    assert states(result) == ["COMPLETE", "COMPLETE"]
    assert [list(t.intermediate_values) for t in result.trials] == [[2048], [2048]]  # the validation's env step
    assert [t.user_attrs["run_dir"] for t in result.trials] == ["runs/tune/cartpole/trial_0", "runs/tune/cartpole/trial_1"]
    assert all((folder / t.user_attrs["run_dir"] / "checkpoints" / "last.ckpt").is_file() for t in result.trials)
    best = result.best_trial
    lr = best.params["model.learning_rate"]
    assert f"best trial {best.number}: eval/return_mean = {best.value:.2f} with model.learning_rate={lr!r} (2 complete)" in out


@pytest.mark.timeout(300)
def test_best_yaml_trains_with_lightrl_fit(study, tmp_path, monkeypatch):
    folder, _ = study
    best_yaml = folder / "runs/tune/cartpole/best.yaml"
    best = load(folder).best_trial
    assert best_yaml.read_text().startswith(f"# Best trial {best.number} of Optuna study 'cartpole': eval/return_mean = {best.value:.2f}")
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", str(best_yaml), "--model.total_timesteps", "256"])
    assert cli.model.hparams.learning_rate == best.params["model.learning_rate"]
    assert (cli.model.hparams.seed, cli.model.hparams.eval_episodes, cli.trainer.global_step) == (3, 5, 20)  # the base config's, trained


@pytest.mark.timeout(300)
def test_rerun_continues_the_study_and_prunes_a_bad_region(study, tmp_path, monkeypatch, capsys):
    folder, _ = study
    shutil.copytree(folder / "runs", tmp_path / "runs")
    (tmp_path / "bad.yaml").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    # A budget of two validations: the pruner stops the trial at the first one.
    main(["tune", "--search", "bad.yaml", "--n_trials", "1", *STUDY, *BASE, "--model.total_timesteps", "4096", "--model.timesteps_per_epoch", "2048"])
    result = load(tmp_path)
    assert states(result) == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = result.trials[2]
    assert pruned.intermediate_values == {2048: 9.0} and pruned.params["model.learning_rate"] < 2e-9
    assert pruned.user_attrs["run_dir"] == "runs/tune/cartpole/trial_2"
    out = capsys.readouterr().out
    assert "lightrl tune: study 'cartpole' (2 trials so far)" in out
    assert "trial 2 pruned: eval/return_mean = 9.00 after 2048 steps" in out


BAD_SPACES = {
    "model.lerning_rate: {type: float, low: 1.0e-4, high: 1.0e-3}": "entry 'model.lerning_rate': PPO has no hyperparameter 'lerning_rate'; did you mean 'model.learning_rate'?",
    "model.learning_rate: {type: uniform, low: 1.0e-4, high: 1.0e-3}": "entry 'model.learning_rate': give a mapping with type float, int or categorical (got 'uniform')",
    "model.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-4}": "entry 'model.learning_rate': low (0.001) must be less than high (0.0001).",
    "model.learning_rate: {type: float, high: 1.0e-3}": "entry 'model.learning_rate': a float distribution needs low and high (missing low).",
    "model.learning_rate: {type: float, low: 0, high: 1.0e-3, log: true}": "entry 'model.learning_rate': a log distribution needs low > 0, got 0.",
    "model.num_steps: {type: int, low: 16, high: 128.5}": "entry 'model.num_steps': high must be an integer, got 128.5.",
    "model.num_steps: {type: int, low: 16, high: 128, stp: 16}": "entry 'model.num_steps': a int distribution takes low, high, log, step, not stp.",
    "model.gamma: {type: categorical, choices: []}": "entry 'model.gamma': give a non-empty list of choices",
    "model.learning_rate: {type: categorical, choices: [0.001, fast]}": "entry 'model.learning_rate': the model does not take 'fast'",
    "trainer.max_steps: {type: int, low: 1, high: 9}": "entry 'trainer.max_steps': name a hyperparameter of the model as model.<name>",
    "model.learning_rate: [0.001, 0.01": "is not valid YAML at line 2, column 1",
    "- model.learning_rate": "must map hyperparameters to distributions",
}


@pytest.mark.parametrize("space", BAD_SPACES, ids=range(len(BAD_SPACES)))
def test_a_bad_search_space_is_one_line_naming_the_entry_before_anything_runs(space, tmp_path, monkeypatch, capsys):
    (tmp_path / "space.yaml").write_text(space + "\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--model", "PPO", "--search", "space.yaml", "--n_trials", "1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("lightrl: error: --search 'space.yaml'") and BAD_SPACES[space] in err
    assert not (tmp_path / "runs").exists()  # no storage, no run


def test_a_bad_search_space_from_the_command_line_prints_one_line_without_traceback(tmp_path):
    (tmp_path / "space.yaml").write_text("model.gama: {type: float, low: 0.9, high: 0.99}\n")
    proc = subprocess.run([sys.executable, "-m", "lightrl.cli", "tune", "--model", "PPO", "--search", "space.yaml", "--n_trials", "2"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["lightrl: error: --search 'space.yaml', entry 'model.gama': PPO has no hyperparameter 'gama'; "
                                        "did you mean 'model.gamma'? (see `lightrl --help`)"]  # fmt: skip


def test_usage_errors_of_the_command_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = {
        ("--search", str(EXAMPLE)): "`lightrl tune` needs a budget: pass --n_trials N, --timeout SECONDS, or both.",
        ("--n_trials", "2"): "the following arguments are required: --search",
        ("--search", "missing.yaml", "--n_trials", "2"): "--search 'missing.yaml' cannot be read (No such file or directory)",
        ("--search", str(EXAMPLE), "--n_trials", "2", "--trainer.devices", "2"): "lightrl tune trains each trial in its own process on one device",
    }
    for args, expected in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(["tune", "--model", "PPO", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and expected in err, err


def test_without_optuna_the_command_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--model", "PPO", "--search", str(EXAMPLE), "--n_trials", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "lightrl: error: lightrl tune needs Optuna: pip install lightrl[tune] (see `lightrl --help`)\n"


def test_the_example_search_space_parses_and_lightrl_fit_takes_every_value():
    dimensions = parse_search_space(read_search_space(EXAMPLE), "PPO", ["learning_rate", "update_epochs", "gae_lambda", "gamma", "clip_coef", "ent_coef"])
    assert dimensions[0] == Dimension("model.learning_rate", "float", low=1e-4, high=3e-3, log=True)
    assert dimensions[1] == Dimension("model.update_epochs", "categorical", choices=(5, 10, 20))
    check_values(["--config", str(ROOT / "experiments" / "ppo_cartpole.yaml")], dimensions, "example")  # raises on a refused value


def test_dimensions_sample_values_that_become_fit_flags():
    space = {
        "model.num_steps": {"type": "int", "low": 16, "high": 64, "step": 16},
        "model.hidden_sizes": {"type": "categorical", "choices": [[64, 64], [32]]},
        "model.vectorization": {"type": "categorical", "choices": ["sync"]},
        "model.max_grad_norm": {"type": "categorical", "choices": [None]},
    }
    dimensions = parse_search_space(space, "PPO", ["num_steps", "hidden_sizes", "vectorization", "max_grad_norm"])
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = {d.path: d.suggest(trial) for d in dimensions}
    assert values["model.num_steps"] in (16, 32, 48, 64) and values["model.hidden_sizes"] in ([64, 64], [32])
    assert trial.params["model.hidden_sizes"] == str(values["model.hidden_sizes"])  # lists are stored as JSON text
    flags = as_flags({**values, "model.hidden_sizes": [64, 64]})
    assert flags[1:] == ["--model.hidden_sizes=[64, 64]", "--model.vectorization=sync", "--model.max_grad_norm=null"]
    config = fit_config(["--model", "PPO", *flags]).config.model.init_args
    assert (config.hidden_sizes, config.vectorization, config.max_grad_norm) == ([64, 64], "sync", None)


def test_run_study_tells_each_outcome():
    study = optuna.create_study(direction="maximize")
    dimensions = [Dimension("model.gamma", "float", low=0.9, high=0.99)]
    outcomes = iter([1.0, NonFiniteError("loss is NaN"), 3.0])

    def fit(trial, flags):
        assert flags == [f"--model.gamma={trial.params['model.gamma']}"]
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert run_study(study, dimensions, fit, n_trials=3, timeout=None) == 3
    assert states(study) == ["COMPLETE", "PRUNED", "COMPLETE"]  # a diverged trial is pruned, and the search goes on
    with pytest.raises(RuntimeError, match="broken"):
        run_study(study, dimensions, lambda trial, flags: (_ for _ in ()).throw(RuntimeError("broken")), n_trials=1, timeout=None)
    with pytest.raises(TuneError, match="trial 4 never validated"):
        run_study(study, dimensions, lambda trial, flags: None, n_trials=1, timeout=None)
    assert states(study)[3:] == ["FAIL", "FAIL"]
    assert run_study(study, dimensions, fit, n_trials=None, timeout=0) == 0


def test_each_trial_logs_a_run_of_its_own():
    wandb = fit_config(["--model", "PPO", "--trainer.logger", "WandbLogger"]).config.trainer
    label_trial_run(wandb, "study", 3, Path("runs/tune/study"))
    assert (wandb.logger.dict_kwargs["group"], wandb.logger.init_args.name) == ("study", "study-trial_3")
    csv = fit_config(["--model", "PPO", "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "logs"]).config.trainer
    label_trial_run(csv, "study", 3, Path("runs/tune/study"))
    assert csv.logger.init_args.version == "study-trial_3"
    none = Namespace(logger=False, default_root_dir=None)
    label_trial_run(none, "study", 3, Path("runs/tune/study"))
    assert none.default_root_dir == str(Path("runs/tune/study/trial_3"))


@pytest.mark.timeout(300)
def test_trials_logged_to_wandb_are_runs_of_their_own_grouped_by_study(tmp_path, monkeypatch):
    import wandb
    from wandb_records import read_records

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no W&B account
    (tmp_path / "good.yaml").write_text(GOOD)
    try:
        main(["tune", "--search", "good.yaml", "--n_trials", "2", *STUDY, *MODEL, "--model.total_timesteps", "256"])
    finally:
        wandb.finish()
        wandb.teardown()  # the W&B service of this test's HOME and folder stops here, not in a later test's run
    runs = {}
    for path in sorted(tmp_path.glob("runs/wandb/offline-run-*/run-*.wandb")):
        run = next(r.run for r in read_records(path) if r.WhichOneof("record_type") == "run")
        runs[run.display_name] = (run.run_group, run.run_id)
    assert sorted(runs) == ["cartpole-trial_0", "cartpole-trial_1"]
    assert {group for group, _ in runs.values()} == {"cartpole"} and len({run_id for _, run_id in runs.values()}) == 2
    assert [t.user_attrs["run_dir"] for t in load(tmp_path).trials] == [f"runs/lightrl/{runs[f'cartpole-trial_{n}'][1]}" for n in (0, 1)]
