"""collector="async": an actor process collects while the learner trains (small budgets; each fit spawns an actor)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import lightrl
from lightrl import DQN, PPO
from lightrl.algos.base import RLModule


def fit(model, ckpt_path: str | None = None, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, log_every_n_steps=1)
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


class KeepProcess(Callback):
    """Keeps a handle on the actor process and counts logged episode returns."""

    def __init__(self):
        self.process = None
        self.returns_logged = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.process = pl_module.source.actor.process
        if "charts/episodic_return" in trainer.callback_metrics:
            self.returns_logged += 1


def test_async_ppo_runs_to_budget_and_logs_returns():
    keep = KeepProcess()
    model = PPO("CartPole-v1", total_timesteps=2048, num_envs=2, num_steps=128, collector="async")
    trainer = fit(model, callbacks=[keep])
    assert model.env_steps == 2048
    assert trainer.global_step == 8 * 4 * 4  # 8 rollouts, 4 epochs of 4 minibatches
    assert keep.returns_logged > 0
    assert not keep.process.is_alive() and keep.process.exitcode is not None
    assert model.source.closed


def test_async_dqn_stores_every_transition_and_matches_sync_warmup():
    """During the uniform warm-up the actor's actions come from the sync path's seeded generator: same buffer."""
    kwargs = dict(env_id="CartPole-v1", num_envs=2, total_timesteps=600, learning_starts=600, buffer_size=1000,
                  batch_size=16, train_frequency=10, hidden_sizes=[16])
    sync, async_ = DQN(**kwargs), DQN(**kwargs, collector="async")
    fit(sync)
    fit(async_)
    assert async_.env_steps == sync.env_steps == 600
    for key, value in sync.replay_buffer.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(async_.replay_buffer.state_dict()[key], value, msg=key)
    assert len(async_.replay_buffer) == len(sync.replay_buffer) == 600


def test_async_dqn_trains_at_sync_env_steps_and_logs_returns():
    seen = []

    class Steps(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(pl_module.env_steps)

    keep = KeepProcess()
    model = DQN("CartPole-v1", total_timesteps=1500, learning_starts=500, buffer_size=2000, batch_size=16,
                train_frequency=100, gradient_steps=2, hidden_sizes=[16], collector="async", phases_per_training_step=1)
    trainer = fit(model, callbacks=[keep, Steps()])
    assert model.env_steps == 1500
    assert seen == list(range(600, 1501, 100))  # the sync path's update phases
    assert trainer.global_step == 2 * len(seen)
    assert len(model.replay_buffer) == 1500  # one transition per env step received
    assert keep.returns_logged > 0
    assert not keep.process.is_alive()


class Boom(Callback):
    def __init__(self):
        self.process = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.process = pl_module.source.actor.process
        raise RuntimeError("boom")


def test_actor_process_is_stopped_after_an_exception_in_training():
    boom = Boom()
    model = PPO("CartPole-v1", total_timesteps=4096, num_envs=2, num_steps=64, collector="async")
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, callbacks=[boom])
    assert boom.process is not None and not boom.process.is_alive()


def test_unknown_collector_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"collector must be one of \('sync', 'async'\), got 'thread'"):
        PPO(collector="thread")


def test_custom_module_without_opt_in_is_refused_before_any_env(monkeypatch):
    made = []
    monkeypatch.setattr(lightrl.algos.checks, "make_env", lambda *a, **k: made.append(a))

    class Custom(RLModule):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.probe_spaces()

    with pytest.raises(ValueError, match="collector='async' is not supported by Custom"):
        Custom(collector="async")
    assert made == []


def test_async_collector_with_async_vectorization_is_refused():
    with pytest.raises(ValueError, match="vectorization='sync'"):
        DQN(collector="async", vectorization="async")


def test_checkpoint_saves_and_resume_restarts_envs_with_a_warning(tmp_path):
    model = PPO("CartPole-v1", total_timesteps=512, num_envs=2, num_steps=64, collector="async")
    trainer = fit(model)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    resumed = PPO("CartPole-v1", total_timesteps=1024, num_envs=2, num_steps=64, collector="async")
    with pytest.warns(UserWarning, match="keeps its envs in the actor process"):
        fit(resumed, ckpt_path=str(path))
    assert resumed.env_steps == 1024


def test_async_ppo_learns_cartpole():  # about 10 s here
    model = PPO("CartPole-v1", total_timesteps=40_000, num_envs=4, num_steps=128, collector="async", seed=1)
    fit(model)
    mean_return, _ = lightrl.evaluate(model, num_episodes=10)
    assert mean_return > 150


@pytest.mark.parametrize("cls", [lightrl.SAC, lightrl.TD3])
def test_async_sac_and_td3_store_every_transition(cls):
    model = cls("Pendulum-v1", total_timesteps=300, learning_starts=100, buffer_size=1000, batch_size=16,
                hidden_sizes=[16], train_frequency=50, gradient_steps=5, collector="async")
    trainer = fit(model)
    assert model.env_steps == 300 and len(model.replay_buffer) == 300
    assert trainer.global_step > 0


def test_async_ppo_repeats_exactly_for_a_seed():
    """Rollout k is always collected with the weights of update k - 1, whatever the timing."""
    runs = []
    for _ in range(2):
        model = PPO("CartPole-v1", total_timesteps=1536, num_envs=2, num_steps=128, collector="async", seed=3)
        fit(model)
        runs.append(torch.cat([p.detach().flatten() for p in model.policy.agent.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_resumed_async_actor_acts_with_the_restored_weights(tmp_path):
    model = DQN("CartPole-v1", total_timesteps=400, learning_starts=100, buffer_size=1000, batch_size=16,
                train_frequency=50, hidden_sizes=[16], collector="async")
    trainer = fit(model)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = DQN("CartPole-v1", total_timesteps=600, learning_starts=100, buffer_size=1000, batch_size=16,
                  train_frequency=50, hidden_sizes=[16], collector="async")
    shared = []

    class Peek(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            # Callbacks run before the module's hook, which publishes this batch's update.
            if not shared:
                shared.append({k: v.clone() for k, v in pl_module.source.actor.shared_policies[0].q_network.state_dict().items()})

    with pytest.warns(UserWarning, match="keeps its envs in the actor process"):
        fit(resumed, ckpt_path=str(tmp_path / "last.ckpt"), callbacks=[Peek()])
    for key, value in model.q_network.state_dict().items():
        torch.testing.assert_close(shared[0][key], value)  # the trained weights, not the fresh initialisation


def test_the_actor_process_gets_a_policy_copy_and_the_experience_never_the_module():
    import lightning.pytorch as pl

    from lightrl.data.async_actor import AsyncActor
    from lightrl.data.collector import CollectorSpec
    from lightrl.data.replay_source import ReplaySource
    from lightrl.policies import Policy

    model = DQN("CartPole-v1", learning_starts=100, hidden_sizes=[16])
    model.policy.exploration.reseed(11)
    spec = CollectorSpec("CartPole-v1", num_envs=1, seed=1, total_timesteps=1000)
    source = ReplaySource(spec, buffer_size=100, batch_size=8, gamma=0.99, n_step=1, train_frequency=10, collector="async")
    collector = source.actor
    assert isinstance(collector, AsyncActor) and source.collector is None  # no envs in this process
    started = []

    class NoProcess:  # records what the actor would be started with
        def __init__(self, target, args, **kwargs):
            started.append(args)

        def start(self):
            pass

    collector._ctx = type("Ctx", (), {"Process": NoProcess})()
    collector.start(model.policy, env_steps=0)
    collector._finalizer.detach()  # no process to shut down
    (args,) = started
    assert not any(isinstance(arg, pl.LightningModule) for arg in args)
    (shared,) = [arg for arg in args if isinstance(arg, list)]
    assert all(isinstance(p, Policy) and p is not model.policy for p in shared)
    assert torch.equal(shared[0].q_network.head.weight, model.q_network.head.weight)
    assert shared[0].exploration.seed == 11  # the exploration state travels with the policy
