"""Guards of the shape issue 22 gave lightrl: a small RLModule built by composition, no mixins, no private APIs.

Also that every hyperparameter name of the algorithms still builds them, so checkpoints and YAML configs
written before the renames of one name per concept keep working.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

import lightrl
from lightrl.algos.base import RLModule
from lightrl.algos.off_policy import OffPolicyAlgorithm
from lightrl.algos.on_policy import OnPolicyAlgorithm

ROOT = Path(__file__).resolve().parents[1]
PRIVATE_APIS_TOOL = ROOT.parent / "shared" / "tools" / "private_apis.py"


def own_public_members(cls: type) -> list[str]:
    """The public names a class adds to LightningModule's interface in its own body.

    The rule: every name defined in the class body (attributes, methods, properties, and annotations such
    as ``policy: Policy``) that does not start with ``_`` and that ``LightningModule`` does not already
    have. Overrides of Lightning's hooks and methods (``training_step``, ``configure_optimizers``, ``on_*``,
    ``setup``, ``teardown``, ``*_dataloader``, ``forward``, ``manual_backward``, checkpoint hooks) are
    therefore not counted: they are Lightning's interface, not the class's own.
    """
    names = set(vars(cls)) | set(vars(cls).get("__annotations__", {}))
    return sorted(n for n in names if not n.startswith("_") and not hasattr(L.LightningModule, n))


def test_rlmodule_is_at_most_200_lines():
    lines = len(inspect.getsource(RLModule).splitlines())
    assert lines <= 200, f"RLModule is {lines} lines; move code into lightrl/algos/checks.py, training_log.py, precision.py, ..."


def test_rlmodule_has_at_most_20_public_members_of_its_own():
    members = own_public_members(RLModule)
    assert len(members) <= 20, members
    # The rule counts what it should: class attributes, annotations, properties and methods, but no Lightning hooks.
    assert {"policy", "supports_async_collector", "budget_reached", "log_metrics", "next_batch"} <= set(members)
    assert not {"training_step", "setup", "on_train_start", "val_dataloader", "forward", "on_save_checkpoint"} & set(members)


@pytest.mark.parametrize("algo", ["PPO", "A2C", "DQN", "SAC", "TD3"])
def test_algorithms_inherit_no_lightrl_mixin(algo):
    cls = getattr(lightrl, algo)
    ours = [c for c in cls.__mro__ if c.__module__.split(".")[0] == "lightrl"]
    family = OnPolicyAlgorithm if algo in ("PPO", "A2C") else OffPolicyAlgorithm
    assert ours == [cls, family, RLModule]  # a single chain of RLModules: no mixin beside it
    assert cls.__mro__[len(ours)] is L.LightningModule


@pytest.mark.skipif(not PRIVATE_APIS_TOOL.exists(), reason="the private-API counting tool lives outside the repository")
def test_no_private_torch_or_lightning_names_outside_compat():
    result = subprocess.run([sys.executable, str(PRIVATE_APIS_TOOL), "lightrl"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "private uses outside the compat module: 0", result.stdout


#: Every hyperparameter of each algorithm with its default, as ``hparams`` held them before the renames of
#: one name per concept (a0a83f4). Checkpoints and configs carry these names; none of them may change.
OLD_HPARAMS = {
    "PPO": {"env_id": "CartPole-v1", "seed": 1, "total_timesteps": 100000, "num_envs": 4, "vectorization": "auto", "env_kwargs": None, "timesteps_per_epoch": 20000, "eval_episodes": 10, "test_episodes": 100, "capture_video": False, "check_env": False, "collector": "sync", "compile": False, "env_wrappers": None, "normalize_obs": False, "normalize_reward": False, "clip_obs": 10.0, "clip_reward": 10.0, "gamma": 0.99, "max_grad_norm": 0.5, "num_steps": 128, "gae_lambda": 0.95, "hidden_sizes": [64, 64], "learning_rate": 0.00025, "anneal_lr": True, "num_minibatches": 4, "update_epochs": 4, "norm_adv": True, "clip_coef": 0.2, "clip_vloss": True, "ent_coef": 0.01, "vf_coef": 0.5, "target_kl": None},
    "A2C": {"env_id": "CartPole-v1", "seed": 1, "total_timesteps": 100000, "num_envs": 8, "vectorization": "auto", "env_kwargs": None, "timesteps_per_epoch": 20000, "eval_episodes": 10, "test_episodes": 100, "capture_video": False, "check_env": False, "collector": "sync", "compile": False, "env_wrappers": None, "normalize_obs": False, "normalize_reward": False, "clip_obs": 10.0, "clip_reward": 10.0, "gamma": 0.99, "max_grad_norm": 0.5, "num_steps": 5, "gae_lambda": 1.0, "hidden_sizes": [64, 64], "learning_rate": 0.0007, "anneal_lr": False, "norm_adv": False, "ent_coef": 0.0, "vf_coef": 0.5},
    "DQN": {"env_id": "CartPole-v1", "seed": 1, "total_timesteps": 100000, "num_envs": 1, "vectorization": "auto", "env_kwargs": None, "timesteps_per_epoch": 20000, "eval_episodes": 10, "test_episodes": 100, "capture_video": False, "check_env": False, "collector": "sync", "compile": False, "env_wrappers": None, "normalize_obs": False, "normalize_reward": False, "clip_obs": 10.0, "clip_reward": 10.0, "gamma": 0.99, "max_grad_norm": None, "buffer_size": 10000, "learning_starts": 10000, "batch_size": 128, "tau": 1.0, "train_frequency": 10, "gradient_steps": 1, "n_step": 1, "save_replay_buffer": False, "phases_per_training_step": None, "learning_rate": 0.00025, "target_network_frequency": 500, "start_e": 1.0, "end_e": 0.05, "exploration_fraction": 0.5, "double_q": False, "dueling": False, "loss": "mse", "adam_eps": 1e-08, "hidden_sizes": [120, 84]},
    "SAC": {"env_id": "Pendulum-v1", "seed": 1, "total_timesteps": 100000, "num_envs": 1, "vectorization": "auto", "env_kwargs": None, "timesteps_per_epoch": 20000, "eval_episodes": 10, "test_episodes": 100, "capture_video": False, "check_env": False, "collector": "sync", "compile": False, "env_wrappers": None, "normalize_obs": False, "normalize_reward": False, "clip_obs": 10.0, "clip_reward": 10.0, "gamma": 0.99, "max_grad_norm": None, "buffer_size": 1000000, "learning_starts": 5000, "batch_size": 256, "tau": 0.005, "train_frequency": 1, "gradient_steps": 1, "n_step": 1, "save_replay_buffer": False, "phases_per_training_step": None, "policy_lr": 0.0003, "q_lr": 0.001, "policy_frequency": 2, "target_network_frequency": 1, "alpha": 0.2, "autotune": True, "hidden_sizes": [256, 256]},
    "TD3": {"env_id": "Pendulum-v1", "seed": 1, "total_timesteps": 100000, "num_envs": 1, "vectorization": "auto", "env_kwargs": None, "timesteps_per_epoch": 20000, "eval_episodes": 10, "test_episodes": 100, "capture_video": False, "check_env": False, "collector": "sync", "compile": False, "env_wrappers": None, "normalize_obs": False, "normalize_reward": False, "clip_obs": 10.0, "clip_reward": 10.0, "gamma": 0.99, "max_grad_norm": None, "buffer_size": 1000000, "learning_starts": 25000, "batch_size": 256, "tau": 0.005, "train_frequency": 1, "gradient_steps": 1, "n_step": 1, "save_replay_buffer": False, "phases_per_training_step": None, "learning_rate": 0.0003, "policy_noise": 0.2, "noise_clip": 0.5, "exploration_noise": 0.1, "policy_frequency": 2, "hidden_sizes": [256, 256]},
}  # fmt: skip


@pytest.mark.parametrize("algo", sorted(OLD_HPARAMS))
def test_old_hyperparameters_still_build_each_algorithm(algo):
    old = OLD_HPARAMS[algo]
    model = getattr(lightrl, algo)(**old)  # every old name is still accepted...
    hparams = {k: list(v) if isinstance(v, tuple) else v for k, v in model.hparams.items()}
    assert {k: hparams.get(k, "<missing>") for k in old} == old  # ...kept, with its value; new names may be added
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in getattr(lightrl, algo)().hparams.items()}
    assert {k: defaults.get(k, "<missing>") for k in old} == old  # and no default changed
