"""The `lightrl` command: every experiment config runs, usage errors are one line, checkpoints validate, test and predict."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import lightrl
from lightrl.algos.evaluation_steps import EVAL_SEED_OFFSET, TEST_SEED_OFFSET
from lightrl.cli import main, one_line, run_cli
from lightrl.evaluation import episode_returns

# Training configs; sweep_*.yaml are W&B sweep configs (checked in tests/test_docs.py), search_*.yaml search spaces of
# `lightrl tune` (checked in tests/test_tune.py).
EXPERIMENTS = sorted(p for p in (Path(__file__).parents[1] / "experiments").glob("*.yaml") if not p.name.startswith(("sweep_", "search_")))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def needs(config: Path) -> str | None:
    env_id = yaml.safe_load(config.read_text())["model"]["init_args"]["env_id"]
    if env_id.startswith("ALE/") and importlib.util.find_spec("ale_py") is None:
        return "ale-py"
    if any(name in env_id for name in ("HalfCheetah", "Hopper", "Walker", "Ant", "Humanoid")) and importlib.util.find_spec("mujoco") is None:
        return "mujoco"
    return None


@pytest.mark.timeout(300)
@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_config_parses_and_trains_a_step(config, tmp_path, monkeypatch):
    missing = needs(config)
    if missing:
        pytest.skip(f"{config.name} needs {missing}")
    monkeypatch.chdir(tmp_path)
    init_args = yaml.safe_load(config.read_text())["model"]["init_args"]
    # Off-policy recipes warm up for thousands of steps and allocate large buffers: start learning early here.
    small_buffer = ["--model.learning_starts", "256", "--model.buffer_size", "2048"] if "buffer_size" in init_args else []
    main(["fit", "--config", str(config), "--trainer.max_steps", "1", "--trainer.logger", "false",
          "--trainer.enable_checkpointing", "false", *small_buffer, *QUIET])


def test_usage_errors_are_one_line_without_traceback():
    cases = {
        ("--model.env_id", "NoSuchEnv-v0"): "Unknown env id 'NoSuchEnv-v0'",
        ("--model.num_minibatches", "3"): "num_minibatches (3) must divide num_envs * num_steps (4 * 128 = 512)",
        ("--model.gamma", "1.5"): "gamma must be in (0, 1], got 1.5",
        ("--model.gama", "0.9"): "PPO has no option 'gama'; did you mean 'gamma'?",
    }
    for args, expected in cases.items():
        proc = subprocess.run([sys.executable, "-m", "lightrl.cli", "fit", "--model", "PPO", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.startswith("lightrl: error:")]
        assert len(lines) == 1 and expected in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_unsupported_space_error_names_algorithm_and_space(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "PPO", "--model.env_id", "Blackjack-v1"])  # FrozenLake's Discrete observations work
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightrl: error: PPO does not support the observation space Tuple(Discrete(32), Discrete(11), Discrete(2))")
    assert "gymnasium.wrappers.FlattenObservation" in err and len(err.splitlines()) == 1


def test_one_line_unwraps_jsonargparse_union_report():
    report = ("Does not validate against any of the Union subtypes\nSubtypes: [...]\nErrors:\n  - gamma must be in (0, 1], got 2.0\n"
              "  - Expected a <class 'NoneType'>\n    Given value type: ...")
    assert one_line(report) == "gamma must be in (0, 1], got 2.0"


@pytest.mark.timeout(300)
def test_fit_then_validate_test_predict_and_evaluate_the_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--model", "PPO", "--model.total_timesteps", "1024", "--model.test_episodes", "4", "--trainer.logger", "CSVLogger",
          "--trainer.logger.save_dir", "logs", "--trainer.default_root_dir", "logs", *QUIET])  # fmt: skip
    checkpoints = sorted(tmp_path.glob("logs/**/*.ckpt"))
    assert [c.name for c in checkpoints] == ["best-step=1024.ckpt", "last.ckpt"]  # the best evaluation, and last to resume from
    rows = list(csv.DictReader(next(tmp_path.glob("logs/**/metrics.csv")).open()))
    # Training curves every 2,048 env steps (RLModule.log_interval) and at the budget's last step; then the evaluation.
    assert [(row["step"], bool(row["eval/return_mean"])) for row in rows] == [("1024", False), ("1024", True)]
    last = str(checkpoints[1])
    policy = lightrl.load_module(last)
    eval_return = np.mean(episode_returns(policy, 10, seed=policy.hparams.seed + EVAL_SEED_OFFSET))
    test_return = np.mean(episode_returns(policy, 4, seed=policy.hparams.seed + TEST_SEED_OFFSET))
    for subcommand, metric, expected in [("validate", "eval/return_mean", eval_return), ("test", "test/return_mean", test_return)]:
        cli = run_cli([subcommand, "--model", "PPO", "--ckpt_path", "last", "--trainer.logger", "false", *QUIET])
        assert cli.trainer.callback_metrics[metric].item() == pytest.approx(expected)
    capsys.readouterr()
    main(["predict", "--model", "PPO", "--ckpt_path", last, "--trainer.logger", "false", *QUIET])
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "PPO on CartPole-v1: deterministic actions for 10 observations:" and len(json.loads(out[-1])) == 10
    main(["evaluate", "--ckpt_path", "last", "--num_episodes", "3"])
    out = capsys.readouterr().out
    assert out.startswith("PPO on CartPole-v1: return ") and "over 3 episodes" in out
    main(["evaluate", last, "--num_episodes", "3"])  # the checkpoint may also be given positionally
    assert capsys.readouterr().out == out
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "missing.ckpt")])
    assert "checkpoint" in capsys.readouterr().err


def test_help_lists_the_subcommands_and_each_needs_a_checkpoint_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = re.search(r"\{(.*?)\}", capsys.readouterr().out).group(1)
    assert listed.split(",") == ["fit", "validate", "test", "predict"]  # each run in the test above
    for subcommand in ("validate", "test", "predict"):
        with pytest.raises(SystemExit) as exit_info:
            main([subcommand, "--model", "PPO", "--trainer.logger", "false"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err == f"lightrl: error: `lightrl {subcommand}` needs a trained policy: pass --ckpt_path PATH (or --ckpt_path last). (see `lightrl --help`)"


def test_a_trainer_flag_that_cannot_apply_is_one_line_naming_the_setting(capsys):
    for flags, expected in [(["--trainer.gradient_clip_val", "0.5"], "set its max_grad_norm instead"),
                            (["--trainer.accumulate_grad_batches", "4"], "make the batch larger with num_envs * num_steps")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--model", "PPO", "--trainer.logger", "false", *flags])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("lightrl: error: Trainer(") and expected in err


def test_unavailable_accelerator_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "PPO", "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.logger", "false"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("lightrl: error: ")


def test_progress_bar_counts_env_steps_with_sps_and_return():
    import lightning as L

    import lightrl
    from lightning.pytorch.callbacks import TQDMProgressBar

    from lightrl.callbacks.progress import EnvStepProgressBar

    model = lightrl.PPO("CartPole-v1", total_timesteps=1000, seed=1)  # 2 rollouts of 512 env steps
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False, max_epochs=-1,
                        callbacks=[TQDMProgressBar()])  # Lightning's default is Rich when rich is installed
    trainer.fit(model)
    bar = trainer.progress_bar_callback
    assert isinstance(bar, EnvStepProgressBar)
    assert bar.train_progress_bar.total == 1024 and bar.train_progress_bar.n == 1024  # the true count, not the budget
    assert "rate" not in bar.train_progress_bar.bar_format  # SPS is the one rate shown
    final = trainer.callback_metrics  # the bar ends on the final figures
    expected = rf"SPS=\d+, return={float(final['charts/episodic_return']):.1f}, eval={float(final['eval/return_mean']):.1f}"
    assert re.fullmatch(expected, bar.train_progress_bar.postfix), bar.train_progress_bar.postfix
    assert set(bar.get_metrics(trainer, model)) == {"SPS"}  # envs are closed after fit: no recent returns
