"""Checkpoints from someone else cannot run code: real payloads, placed where a checkpoint could carry them."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import lightning as L
import pytest
import torch

import lightrl
from lightrl.safe_checkpoint import KEY_ENV, checkpoint_key, key_path

RUN = dict(env_id="CartPole-v1", seed=3, num_envs=2, num_steps=32, hidden_sizes=[8], timesteps_per_epoch=64, eval_episodes=1)


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch):
    """This test's user: a config folder of its own, so its signing key is made fresh (and no env var overrides it)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(KEY_ENV, raising=False)


def fit(model, ckpt_path=None) -> L.Trainer:
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


@pytest.fixture
def checkpoint(tmp_path):
    """A PPO checkpoint at env step 128 with its signed env state."""
    fit(lightrl.PPO(**RUN, total_timesteps=128)).save_checkpoint(tmp_path / "ppo.ckpt")
    return tmp_path / "ppo.ckpt"


def tampered(path, out, edit):
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, out)
    return out


def test_the_key_is_made_once_readable_by_its_owner_only(checkpoint):
    path = key_path()
    assert path.stat().st_mode & 0o777 == 0o600 and len(checkpoint_key()) == 64
    env_state = torch.load(checkpoint, weights_only=True)["lightrl_ranks"][0]["collector"]["envs"]
    assert set(env_state) == {"envs", "action_space", "signature"}


def test_load_module_refuses_an_extra_entry_that_runs_code(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    bad = tampered(checkpoint, tmp_path / "bad.ckpt", lambda c: c.update(extra=Payload(marker)))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        lightrl.load_module(bad)
    assert not marker.exists()
    assert isinstance(lightrl.load_module(checkpoint), lightrl.PPO)  # the untampered one loads


def test_load_module_refuses_a_class_that_is_not_an_rlmodule(checkpoint, tmp_path):
    bad = tampered(checkpoint, tmp_path / "bad.ckpt", lambda c: c["lightrl"].update(class_path="subprocess.Popen"))
    with pytest.raises(ValueError, match="names 'subprocess.Popen' as its algorithm, which is not a lightrl RLModule subclass"):
        lightrl.load_module(bad)


def test_load_module_refuses_a_function_named_as_env_wrapper(checkpoint, tmp_path):
    # pydoc.pipepager(env, cmd) starts `cmd` in a shell before it looks at env: a wrapper entry that runs a command.
    marker = tmp_path / "pwned"
    wrapper = {"class_path": "pydoc.pipepager", "init_args": {"cmd": f"touch {marker}"}}
    bad = tampered(checkpoint, tmp_path / "bad.ckpt", lambda c: c["hyper_parameters"].update(env_wrappers=[wrapper]))
    with pytest.raises(ValueError, match=r"env_wrappers\[0\] is 'pydoc.pipepager', not a gymnasium.Wrapper class"):
        lightrl.load_module(bad)
    assert not marker.exists()


def put_payload(marker):
    def edit(ckpt):
        envs = ckpt["lightrl_ranks"][0]["collector"]["envs"]
        envs["envs"] = pickle.dumps(Payload(marker))  # the signature no longer matches these bytes

    return edit


def test_fit_resume_does_not_unpickle_altered_env_state_and_warns_once(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    bad = tampered(checkpoint, tmp_path / "bad.ckpt", put_payload(marker))
    model = lightrl.PPO(**RUN, total_timesteps=256)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, ckpt_path=bad)
    assert not marker.exists()
    assert model.env_steps == 256  # resumed from 128: weights, optimizer and counters restored
    lost = [str(w.message) for w in caught if "state was not restored" in str(w.message)]
    assert len(lost) == 1 and "not signed with this machine's key" in lost[0] and "episodes in progress restart" in lost[0], lost


def test_env_state_signed_with_another_key_is_not_unpickled(checkpoint, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "someone else's key")
    with pytest.warns(UserWarning, match=f"not signed with this machine's key \\(\\${KEY_ENV}\\)"):
        fit(lightrl.PPO(**RUN, total_timesteps=192), ckpt_path=checkpoint)


def test_env_state_restores_with_the_writers_key_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "the cluster's key")
    fit(lightrl.PPO(**RUN, total_timesteps=128)).save_checkpoint(tmp_path / "ppo.ckpt")
    assert not key_path().exists()  # the variable, not a file, signed it
    model = lightrl.PPO(**RUN, total_timesteps=192)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*state was not restored")
        fit(model, ckpt_path=tmp_path / "ppo.ckpt")
    assert model.env_steps == 192


def test_cli_fit_resumes_from_altered_env_state_without_running_it(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    bad = tampered(checkpoint, tmp_path / "bad.ckpt", put_payload(marker))
    args = ["fit", "--model", "PPO", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--model.total_timesteps", "256", "--ckpt_path", str(bad)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.run([sys.executable, "-m", "lightrl.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()
    assert "Traceback" not in proc.stderr and proc.stderr.count("state was not restored") == 1
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["lightrl"]["env_steps"] == 256


def test_cli_fit_refuses_a_function_named_as_env_wrapper_in_one_line(checkpoint, tmp_path, capsys):
    from lightrl.cli import main

    marker = tmp_path / "pwned"
    wrapper = {"class_path": "pydoc.pipepager", "init_args": {"cmd": f"touch {marker}"}}
    bad = tampered(checkpoint, tmp_path / "bad.ckpt", lambda c: c["hyper_parameters"].update(env_wrappers=[wrapper]))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "PPO", "--trainer.logger", "false", "--ckpt_path", str(bad)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and not marker.exists()
    assert "env_wrappers[0] is 'pydoc.pipepager', not a gymnasium.Wrapper class" in err and "--model.env_wrappers" in err


def identity_wrapper(env):
    """A function used as env wrapper: harmless, but a checkpoint naming a function is refused unless trusted."""
    return env


def test_a_function_wrapper_of_your_own_loads_when_trusted(tmp_path, capsys):
    from lightrl.cli import main

    fit(lightrl.PPO(**RUN, total_timesteps=64, env_wrappers=[identity_wrapper])).save_checkpoint(tmp_path / "own.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(tmp_path / "own.ckpt"), "--num_episodes", "1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "identity_wrapper', not a gymnasium.Wrapper class" in err
    assert "--trusted" in err
    main(["evaluate", str(tmp_path / "own.ckpt"), "--num_episodes", "1", "--trusted"])
    assert "PPO on CartPole-v1: return" in capsys.readouterr().out
    assert isinstance(lightrl.load_module(tmp_path / "own.ckpt", trusted=True), lightrl.PPO)
