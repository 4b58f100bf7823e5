"""A new user's first hour with the `lightrl` command: their own env and algorithm from the folder they stand in,
and errors that say what to do. Each test runs the command as a user would, in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from quiet_screen import NOISY, NOISY_PY, SPURIOUS

ROOT = Path(__file__).parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# What the installed `lightrl` script does: no current folder on sys.path (`python -m` and `-c` would add it).
LAUNCH = "import sys; del sys.path[0]; sys.argv[0] = 'lightrl'; from lightrl.cli import main; main()"

EXAMPLES = ROOT / "docs" / "examples"
WRONG_SHAPE_PY = '''
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class WrongShape(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, False, False, {}


gym.register("WrongShape-v0", entry_point=WrongShape, max_episode_steps=20)
'''


def lightrl_command(*args: str, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    """``lightrl ARGS`` run in ``cwd`` as the installed command runs, with this checkout's lightrl."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    script = Path(sys.executable).with_name("lightrl")  # the installed command itself, where there is one (DDP re-runs it)
    command = [str(script)] if script.is_file() else [sys.executable, "-c", LAUNCH]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``lightrl: error:`` line of a failed command, asserting that there is nothing else on stderr."""
    assert proc.returncode in (1, 2), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightrl: error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.mark.slow  # seven CLI processes
@pytest.mark.timeout(400)
def test_own_env_by_module_and_id_from_the_current_folder_and_one_line_when_not_importable(tmp_path):
    shutil.copy(EXAMPLES / "goal_on_a_line.py", tmp_path)  # own-env.md's example
    fit = lightrl_command("fit", "--model", "PPO", "--model.env_id", "goal_on_a_line:GoalOnALine-v0", "--model.total_timesteps", "512",
                  "--model.eval_episodes", "2", "--model.test_episodes", "2", "--trainer.logger", "false", *QUIET, cwd=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    [checkpoint] = tmp_path.glob("runs/**/last.ckpt")
    evaluate = lightrl_command("evaluate", str(checkpoint), "--num_episodes", "2", cwd=tmp_path)
    assert evaluate.stdout.startswith("PPO on goal_on_a_line:GoalOnALine-v0: return "), evaluate.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"  # goal_on_a_line.py is not importable from here
    elsewhere.mkdir()
    ckpt = str(checkpoint)
    for args in (["evaluate", ckpt], ["export", ckpt, "--output", "policy.onnx"],
                 *([sub, "--model", "PPO", "--ckpt_path", ckpt, "--trainer.logger", "false"] for sub in ("validate", "test", "predict"))):  # fmt: skip
        line = one_error_line(lightrl_command(*args, cwd=elsewhere))
        assert "cannot import module 'goal_on_a_line', which registers the env" in line, (args, line)
        assert "folder that holds goal_on_a_line.py" in line, (args, line)
    assert not list(elsewhere.iterdir())  # nothing written: no config.yaml, no checkpoints/


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_own_algorithm_from_the_current_folder_and_one_line_when_not_importable(tmp_path):
    shutil.copy(EXAMPLES / "vanilla_pg.py", tmp_path)
    fit = lightrl_command("fit", "--model", "vanilla_pg.VanillaPG", "--model.total_timesteps", "512", "--trainer.logger", "false", *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    [checkpoint] = tmp_path.glob("runs/**/last.ckpt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (["evaluate", str(checkpoint)], ["export", str(checkpoint), "--output", "policy.pt2"],
                 ["validate", "--model", "vanilla_pg.VanillaPG", "--ckpt_path", str(checkpoint), "--trainer.logger", "false"]):  # fmt: skip
        line = one_error_line(lightrl_command(*args, cwd=elsewhere))
        assert "No module named 'vanilla_pg'" in line and "folder that holds vanilla_pg.py" in line, (args, line)


def test_model_names_in_any_case_and_a_list_for_unknown_ones(tmp_path):
    # `ppo` is PPO: the run gets as far as PPO's own check of gamma.
    assert one_error_line(lightrl_command("fit", "--model", "ppo", "--model.gamma", "1.5", cwd=tmp_path)).startswith(
        "lightrl: error: gamma must be in (0, 1], got 1.5")
    line = one_error_line(lightrl_command("fit", "--model=ppp", cwd=tmp_path))
    assert "--model 'ppp' is not a lightrl algorithm: pass one of PPO, A2C, DQN, SAC, TD3" in line and "Did you mean PPO?" in line


def test_misspelled_option_bare_fit_and_wrong_observation_shape(tmp_path):
    line = one_error_line(lightrl_command("fit", "--model", "PPO", "--model.gama", "0.9", cwd=tmp_path))
    assert line.startswith("lightrl: error: PPO has no option 'gama'; did you mean 'gamma'?")
    line = one_error_line(lightrl_command("fit", cwd=tmp_path))
    assert "`lightrl fit` needs an algorithm: pass --model with one of PPO, A2C, DQN, SAC, TD3" in line
    assert "lightrl fit --model PPO --model.env_id CartPole-v1" in line
    (tmp_path / "wrong_shape.py").write_text(WRONG_SHAPE_PY)
    proc = lightrl_command("fit", "--model", "PPO", "--model.env_id", "wrong_shape:WrongShape-v0", "--trainer.logger", "false", *QUIET, cwd=tmp_path)
    # Exit 2, at the model's build: its Discrete actions make the probe env reset, looking for action masks.
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert ("lightrl: error: env 'wrong_shape:WrongShape-v0' returned an observation of shape (4,) from reset(), but its "
            "observation_space is Box(-1.0, 1.0, (3,), float32).") in proc.stderr  # fmt: skip


# ---------------------------------------------------------------------------------------------- a quiet screen

def assert_quiet(proc: subprocess.CompletedProcess) -> None:
    """The command succeeded, none of :data:`SPURIOUS` showed, and the user's own warning still did."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    screen = proc.stdout + proc.stderr
    assert "noisy.Noisy: a warning of the user's own" in screen, screen[-3000:]
    for message in SPURIOUS:
        assert message not in screen, (message, screen[-3000:])


@pytest.mark.timeout(400)
def test_validate_and_export_show_no_dependency_noise(tmp_path, monkeypatch):
    import lightning as L

    import lightrl

    (tmp_path / "noisy.py").write_text(NOISY_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = lightrl.PPO("CartPole-v1", total_timesteps=512, eval_episodes=2, env_wrappers=[{"class_path": "noisy.Noisy"}])
    L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path / "run").fit(model)
    checkpoint = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert_quiet(lightrl_cli := lightrl_command("validate", "--model", "PPO", "--ckpt_path", checkpoint, "--trainer.logger", "false", cwd=tmp_path))
    assert "eval/return_mean" in lightrl_cli.stdout
    for output in ("policy.onnx", "policy.pt2"):
        assert_quiet(lightrl_command("export", checkpoint, "--output", output, cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisy.py", "policy.onnx", "policy.pt2", "run"]  # no config.yaml, no checkpoints/


@pytest.mark.timeout(400)
def test_ddp_fit_shows_no_dependency_noise(tmp_path):
    (tmp_path / "noisy.py").write_text(NOISY_PY)
    proc = lightrl_command("fit", "--model", "PPO", "--model.total_timesteps", "1024", "--model.eval_episodes", "2", *NOISY,
                           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
                           "--trainer.logger", "false", *QUIET, cwd=tmp_path, timeout=380)  # fmt: skip
    assert_quiet(proc)
    assert len(list(tmp_path.glob("runs/PPO-CartPole-v1/version_0/checkpoints/last.ckpt"))) == 1


def test_a_trainer_used_for_a_second_fit_adds_no_callback_twice(tmp_path, caplog):
    import lightning as L

    import lightrl

    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(lightrl.PPO("CartPole-v1", total_timesteps=512, eval_episodes=1))
    count = len(trainer.callbacks)
    caplog.set_level("INFO")
    trainer.fit(lightrl.PPO("CartPole-v1", total_timesteps=512, eval_episodes=1))
    assert len(trainer.callbacks) == count and "will override existing callbacks" not in caplog.text


# ---------------------------------------------------------------------------------------------- runs stay apart


@pytest.mark.timeout(400)
def test_runs_without_a_logger_stay_apart_and_last_means_this_algorithm(tmp_path, monkeypatch, capsys, caplog):
    from lightrl.cli import main

    monkeypatch.chdir(tmp_path)
    short = ["--model.total_timesteps", "512", "--model.eval_episodes", "1", "--trainer.logger", "false", *QUIET]
    main(["fit", "--model", "PPO", *short])
    main(["fit", "--model", "PPO", *short])  # a second run does not write over the first one
    main(["fit", "--model", "DQN", "--model.learning_starts", "256", "--model.buffer_size", "1024", *short])
    runs = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("runs/*/*"))
    assert runs == ["runs/DQN-CartPole-v1/version_0", "runs/PPO-CartPole-v1/version_0", "runs/PPO-CartPole-v1/version_1"]
    for run in runs:
        assert sorted(p.name for p in (tmp_path / run).iterdir()) == ["checkpoints", "config.yaml"]

    # The DQN run is the newest; `last` for PPO is the newest PPO run, which continues in its folder.
    caplog.set_level("INFO")
    main(["fit", "--model", "PPO", "--ckpt_path", "last", "--model.total_timesteps", "1024", *short[2:]])
    assert "Restored all states from the checkpoint at runs/PPO-CartPole-v1/version_1/checkpoints/last.ckpt" in caplog.text
    resumed = torch.load(tmp_path / "runs/PPO-CartPole-v1/version_1/checkpoints/last.ckpt", weights_only=True)
    assert resumed["lightrl"]["env_steps"] == 1024 and not (tmp_path / "runs/PPO-CartPole-v1/version_2").exists()

    # No run of A2C: validate lists what there is, in one line.
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["validate", "--model", "a2c", "--ckpt_path", "last", "--trainer.logger", "false"])
    line = one_line_of(capsys.readouterr().err)
    assert line.startswith("lightrl: error: --ckpt_path last: no last.ckpt of A2C in a checkpoints/ folder under")
    assert "runs/DQN-CartPole-v1/version_0/checkpoints/last.ckpt (DQN on CartPole-v1)" in line
    # validate and test write nothing in the current folder (no config.yaml, no checkpoints/).
    main(["validate", "--model", "DQN", "--ckpt_path", "last", "--trainer.logger", "false", *QUIET])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def one_line_of(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]
