"""lightrl.compat's private fast paths against their public fallbacks, and the public replacements of private interfaces."""

from __future__ import annotations

from collections import namedtuple

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

import lightrl
from experiments.resume_check import StopAt
from lightrl import compat
from lightrl.algos import training_log
from lightrl.compile import clone_tensors


def fit(model, ckpt_path=None, **kwargs) -> L.Trainer:
    defaults = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(**{**defaults, **kwargs})
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


@pytest.fixture
def public_adam(monkeypatch):
    """The fallback: a torch version outside the range FusedAdam was checked on."""
    monkeypatch.setattr(compat, "FUSED_ADAM_TORCH_VERSIONS", ("0.1", "0.2"))


def tiny_dqn() -> lightrl.DQN:
    return lightrl.DQN(
        "CartPole-v1", seed=2, total_timesteps=400, learning_starts=100, train_frequency=50, gradient_steps=8,
        batch_size=16, buffer_size=1000, target_network_frequency=100, hidden_sizes=[32], max_grad_norm=0.5,
    )  # fmt: skip


def test_fused_adam_fast_path_is_taken_on_the_torch_ci_installs():
    # CI pins the torch of constraints-cpu.txt: if this fails after a torch upgrade, check FusedAdam there (see compat's docstring).
    assert compat.fused_adam_fast_path()
    assert type(compat.fused_adam(nn.Linear(2, 2).parameters(), lr=1e-3)) is compat.FusedAdam


def test_fused_adam_falls_back_to_torch_adam_outside_the_checked_versions(public_adam):
    assert not compat.fused_adam_fast_path()
    optimizer = compat.fused_adam(nn.Linear(2, 2).parameters(), lr=1e-3, eps=1e-5)
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["fused"] and optimizer.defaults["eps"] == 1e-5


def test_dqn_trains_to_the_same_weights_with_the_fast_path_and_the_public_fallback(monkeypatch):
    fast = tiny_dqn()
    fit(fast)
    assert type(fast.optimizers().optimizer) is compat.FusedAdam
    monkeypatch.setattr(compat, "FUSED_ADAM_TORCH_VERSIONS", ("0.1", "0.2"))
    public = tiny_dqn()
    fit(public)
    assert type(public.optimizers().optimizer) is torch.optim.Adam
    assert fast.env_steps == public.env_steps == 400
    for (name, p), q in zip(fast.state_dict().items(), public.state_dict().values()):
        assert torch.equal(p, q), name


def test_local_checkpoint_is_what_save_checkpoint_writes_and_none_outside_the_checked_versions(tmp_path, monkeypatch):
    class Dump(Callback):
        def on_train_end(self, trainer, pl_module):
            trainer.save_checkpoint(tmp_path / "public.ckpt")
            self.local = compat.local_checkpoint(trainer)
            monkeypatch.setattr(compat, "LOCAL_CHECKPOINT_LIGHTNING_VERSIONS", ("0.1", "0.2"))
            self.fallback = compat.local_checkpoint(trainer)

    dump = Dump()
    fit(tiny_dqn(), callbacks=[dump])
    public = torch.load(tmp_path / "public.ckpt", weights_only=True)
    assert dump.fallback is None
    assert public.keys() == dump.local.keys()
    for name, value in public["state_dict"].items():
        assert torch.equal(dump.local["state_dict"][name], value), name
    assert public["lightrl"] == dump.local["lightrl"]


def test_should_log_is_lightnings_decision_on_every_batch_also_after_a_resume(tmp_path):
    decisions = []  # (env steps, ours, Lightning's) per training batch: one per rollout of 128 env steps

    class Recorder(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            # The logger connector is private: the test compares lightrl's public rule with it.
            decisions.append((pl_module.env_steps, training_log.should_log(pl_module), trainer._logger_connector.should_update_logs))

    def ppo():
        return lightrl.PPO("CartPole-v1", seed=1, total_timesteps=2048, num_envs=4, num_steps=32, hidden_sizes=[16])

    fit(ppo(), callbacks=[Recorder(), StopAt(1024, tmp_path / "half.ckpt")], log_every_n_steps=3)
    fit(ppo(), ckpt_path=tmp_path / "half.ckpt", callbacks=[Recorder()], log_every_n_steps=3)
    fit(ppo(), callbacks=[Recorder()], log_every_n_steps=0)
    assert len(decisions) == 8 + 8 + 16 and any(ours for _, ours, _ in decisions) and not all(ours for _, ours, _ in decisions)
    assert [ours for _, ours, _ in decisions] == [lightning for _, _, lightning in decisions]


def test_clone_tensors_copies_every_tensor_and_keeps_the_structure():
    Pair = namedtuple("Pair", "a b")
    t = torch.ones(2)
    out = clone_tensors({"x": (t, [t, 3]), "p": Pair(t, "s")})
    assert type(out["p"]) is Pair and out["p"].b == "s" and out["x"][1][1] == 3
    for copy in (out["x"][0], out["x"][1][0], out["p"].a):
        assert torch.equal(copy, t) and copy.data_ptr() != t.data_ptr()


def test_compiler_errors_are_told_apart_from_errors_of_the_function():
    import torch._dynamo

    assert compat.compiler_unavailable_reason() is None
    assert compat.is_compiler_error(torch._dynamo.exc.Unsupported("simulated"))
    assert not compat.is_compiler_error(ValueError("a bug in the function"))


def test_checkpoint_keeps_the_wandb_run_id_without_starting_a_run(tmp_path, monkeypatch):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from lightrl.algos.resume import wandb_run_id

    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = WandbLogger(save_dir=str(tmp_path), id="abc123")
    trainer = L.Trainer(logger=logger, enable_checkpointing=False, enable_progress_bar=False)
    assert wandb_run_id(trainer) == "abc123"
    assert wandb.run is None  # asking did not start one
    assert wandb_run_id(L.Trainer(logger=False)) is None


def test_lightning_cli_reads_ckpt_path_through_the_call_ckpt_path_hook_replaces():
    """LightningCLI.__init__ calls _parse_ckpt_path() between parsing and instantiating: lightrl's CLI relies on it."""
    import inspect

    from lightning.pytorch.cli import LightningCLI

    from lightrl.cli import LightRLCLI
    from lightrl.compat import CLI_CKPT_PATH_LIGHTNING_VERSIONS, _in

    source = inspect.getsource(LightningCLI.__init__)
    assert "self._parse_ckpt_path()" in source
    assert source.index("self.parse_arguments(") < source.index("self._parse_ckpt_path()") < source.index("self.instantiate_classes()")
    assert _in(L.__version__, CLI_CKPT_PATH_LIGHTNING_VERSIONS)
    calls = []
    cli = LightRLCLI.__new__(LightRLCLI)
    cli.parse_ckpt_path = lambda: calls.append("lightrl")
    cli._parse_ckpt_path()
    assert calls == ["lightrl"]
