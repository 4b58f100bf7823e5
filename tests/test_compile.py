"""compile=True: checked hparam, a single warning and an eager run where torch.compile is unavailable."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch

import lightrl
import lightrl.compile as lc
from lightrl.algos.ppo import ppo_minibatch_loss


def fit(model: lightrl.RLModule) -> None:
    L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              max_epochs=-1, accelerator="cpu").fit(model)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_compile_must_be_a_bool(value):
    with pytest.raises(ValueError, match=r"compile must be True or False"):
        lightrl.PPO("CartPole-v1", compile=value)


def test_unavailable_compile_warns_once_and_runs_eagerly(monkeypatch):
    monkeypatch.setattr(lc, "_warned", False)
    monkeypatch.setattr(lc, "compile_unavailable_reason", lambda device: "simulated: no dynamo here")

    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile must not be called when it is unavailable")

    monkeypatch.setattr(torch, "compile", no_compile)
    ppo = lightrl.PPO("CartPole-v1", seed=1, num_envs=2, num_steps=32, total_timesteps=256, compile=True)
    dqn = lightrl.DQN("CartPole-v1", seed=1, total_timesteps=300, learning_starts=100, train_frequency=50, compile=True)
    before = {name: p.detach().clone() for name, p in ppo.named_parameters()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(ppo)  # two functions to compile (acting, loss)...
        fit(dqn)  # ...and two more: still one warning
    ours = [w for w in caught if "compile=True" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert issubclass(ours[0].category, RuntimeWarning) and "simulated: no dynamo here" in str(ours[0].message)
    assert ppo.env_steps == 256 and dqn.env_steps == 300
    assert ppo._compiled_loss is ppo_minibatch_loss and ppo.policy.compiled["explore_with_value"] == ppo.policy.agent.sample  # the eager functions
    assert any(not torch.equal(p, before[name]) for name, p in ppo.named_parameters())  # it trained


def test_compiler_failure_falls_back_to_eager(monkeypatch):
    monkeypatch.setattr(lc, "_warned", False)

    def failing_compile(fn, **kwargs):
        def compiled(*args, **kw):
            raise torch._dynamo.exc.Unsupported("simulated compiler failure")

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    fn = lc.maybe_compile(lambda x: x * 2, True, "cpu")
    with pytest.warns(RuntimeWarning, match="simulated compiler failure"):
        assert torch.equal(fn(torch.ones(2)), torch.full((2,), 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, and no second compile attempt
        assert torch.equal(fn(torch.ones(3)), torch.full((3,), 2.0))


def test_errors_of_the_function_itself_are_not_swallowed(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    fn = lc.maybe_compile(lambda x: x.view(5), True, "cpu")
    with pytest.raises(RuntimeError):
        fn(torch.ones(2))


def test_compile_off_keeps_the_eager_functions():
    model = lightrl.SAC("Pendulum-v1", total_timesteps=200, learning_starts=100, batch_size=16, hidden_sizes=[16])
    fit(model)
    assert model._compiled == {}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compile_on_cpu_trains_compiled(recwarn):
    model = lightrl.PPO("CartPole-v1", seed=1, num_envs=4, num_steps=64, total_timesteps=1024, compile=True)
    fit(model)
    assert model.env_steps == 1024
    assert isinstance(model._compiled_loss, lc.CompiledFunction) and model._compiled_loss.compiled is not None
    assert not [w for w in recwarn if "compile=True" in str(w.message)]
