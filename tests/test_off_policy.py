"""DQN, SAC and TD3: replay ratio, target-update cadence, exploration, optimizers, errors, determinism, learning."""

from __future__ import annotations

import importlib.util

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import lightrl
from lightrl import DQN, SAC, TD3
from lightrl.data.collector import CollectorSpec
from lightrl.policies.q_learning import linear_schedule

from conftest import COUNTING_ID, experiment_config

requires_ale = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py (lightrl[atari])")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Small networks on a shared CPU: a second intra-op thread mostly waits on the other processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit(model, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(model)
    return trainer


def hparams_of(model) -> dict:
    """Constructor arguments that rebuild ``model``, e.g. to instantiate a test subclass with them."""
    return dict(model.hparams)


def tiny_dqn(**kwargs) -> DQN:
    args = dict(env_id="CartPole-v1", total_timesteps=400, learning_starts=100, buffer_size=1000, batch_size=16,
                train_frequency=10, gradient_steps=2, target_network_frequency=50, hidden_sizes=[16])
    return DQN(**{**args, **kwargs})


def tiny_sac(**kwargs) -> SAC:
    args = dict(total_timesteps=150, learning_starts=50, buffer_size=1000, batch_size=16, hidden_sizes=[16])
    return SAC(**{**args, **kwargs})


def tiny_td3(**kwargs) -> TD3:
    args = dict(total_timesteps=150, learning_starts=50, buffer_size=1000, batch_size=16, hidden_sizes=[16])
    return TD3(**{**args, **kwargs})


class Recorder(Callback):
    """Records the module's env steps and epsilon after each batch, and the logged metric names."""

    def __init__(self):
        self.steps, self.epsilons, self.metric_names = [], [], set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # With `training_step(self, dataloader_iter)` the batch is collected inside the step, so read after it.
        self.steps.append(pl_module.env_steps)
        if isinstance(pl_module, DQN):
            self.epsilons.append(pl_module.epsilon)
        self.metric_names |= set(trainer.callback_metrics)


# ----------------------------------------------------------------------------------------- replay ratio


@pytest.mark.parametrize(
    "before, after, expected",
    [
        (0, 100, 0),  # learning_starts=100 is not passed yet (SB3: num_timesteps > learning_starts)
        (100, 101, 0),  # past learning_starts, but 101 is not a multiple of train_frequency=4
        (100, 104, 3),  # one update phase of gradient_steps=3
        (103, 104, 3),
        (104, 112, 6),  # two phases fall due in one vector step (8 sub-envs x ranks)
        (96, 108, 6),  # only the multiples past learning_starts count: 104 and 108
    ],
)
def test_updates_due_counts_global_env_steps(before, after, expected):
    model = tiny_dqn(learning_starts=100, train_frequency=4, gradient_steps=3)
    assert model.updates_due(before, after) == expected


def test_one_batch_per_update_phase_holds_all_its_gradient_steps():
    shapes, recorder = [], Recorder()

    class Shapes(DQN):
        def train_batch(self, batch):
            shapes.append({k: tuple(v.shape) for k, v in batch.items()})
            return super().train_batch(batch)

    args = dict(num_envs=2, total_timesteps=300, learning_starts=100, train_frequency=20, gradient_steps=3, batch_size=8)
    model = Shapes(**hparams_of(tiny_dqn(**args, phases_per_training_step=1)))
    trainer = fit(model, callbacks=[recorder])
    # Phases at 120, 140, ..., 300: each vector step adds 2 env steps, so every multiple of 20 is hit once.
    assert recorder.steps == list(range(120, 301, 20))
    assert shapes[0] == {
        "observations": (3, 8, 4), "actions": (3, 8), "rewards": (3, 8), "next_observations": (3, 8, 4),
        "terminations": (3, 8), "discounts": (3, 8),
    }  # fmt: skip
    assert model.num_updates == 3 * len(recorder.steps) == 3 * len(shapes)
    assert model.env_steps == 300 and trainer.global_step == model.num_updates  # one optimizer step per gradient step


def test_several_update_phases_per_training_step_change_only_lightnings_cadence():
    args = dict(num_envs=2, total_timesteps=300, learning_starts=100, train_frequency=20, gradient_steps=3, batch_size=8, seed=3)
    runs = {}
    for phases in (1, 3):
        recorder = Recorder()
        model = tiny_dqn(**args, phases_per_training_step=phases)
        trainer = fit(model, callbacks=[recorder])
        runs[phases] = (model, trainer, recorder)
    (one, one_trainer, one_steps), (three, three_trainer, three_steps) = runs[1], runs[3]
    # Phases fall at 120, 140, ..., 300; three per training_step, and the budget ends the fourth after one.
    assert three_steps.steps == [160, 220, 280, 300] and one_steps.steps == list(range(120, 301, 20))
    assert three.num_updates == one.num_updates == 30 and three_trainer.global_step == one_trainer.global_step == 30
    # The same experience and the same updates, in the same order: identical weights.
    for p3, p1 in zip(three.parameters(), one.parameters()):
        assert torch.equal(p3, p1)


def test_phases_per_training_step_defaults_to_at_least_8_gradient_steps():
    assert tiny_sac().phases_per_training_step == 8
    assert tiny_dqn(gradient_steps=3).phases_per_training_step == 3
    assert tiny_dqn(gradient_steps=128, train_frequency=256).phases_per_training_step == 1
    assert tiny_td3(phases_per_training_step=2).phases_per_training_step == 2
    with pytest.raises(ValueError, match="phases_per_training_step must be a positive integer or None"):
        tiny_sac(phases_per_training_step=0)


# ------------------------------------------------------------------------------------- target networks


def test_dqn_target_update_counts_env_steps(monkeypatch):
    """Hard target updates every target_network_frequency global env steps (SB3's semantics), made before the next phase."""
    model = tiny_dqn(num_envs=2, total_timesteps=200, target_network_frequency=30, tau=1.0)
    updates = []
    original = lightrl.algos.dqn.polyak_update

    def recording(target, online, tau):
        updates.append((model.env_steps, tau))
        original(target, online, tau)
        assert all(torch.equal(t, o) for t, o in zip(model.target_network.parameters(), model.q_network.parameters()))

    monkeypatch.setattr(lightrl.algos.dqn, "polyak_update", recording)
    fit(model)
    # The updates due at 30, 60 and 90 are made before the first phase (at 110: learning_starts=100 and
    # train_frequency=10), one per vector step that reached them; later ones before the phase that follows them.
    assert [s for s, _ in updates] == [110, 110, 110, 120, 150, 180]
    assert all(tau == 1.0 for _, tau in updates)
    assert not any(p.requires_grad for p in model.target_network.parameters())


def test_dqn_soft_target_update_compounds_missed_updates():
    model = tiny_dqn(tau=0.5, target_network_frequency=1, num_envs=2)
    target = [p.detach().clone() for p in model.target_network.parameters()]
    with torch.no_grad():
        for p in model.q_network.parameters():
            p.add_(1.0)
    model.source = model.make_source(CollectorSpec("CartPole-v1", num_envs=2, seed=0))
    model.env_steps = 2  # one vector step of two sub-envs: two updates due at once, 1 - (1 - 0.5)^2 = 0.75 of the way
    model.update_target_network()
    model.source.close()
    for t0, t, o in zip(target, model.target_network.parameters(), model.q_network.parameters()):
        torch.testing.assert_close(t, t0 + 0.75 * (o - t0))


def test_dqn_target_is_fixed_within_an_update_phase():
    class Check(DQN):
        def update_target_network(self):  # made first in train_batch, before the phase's gradient steps
            super().update_target_network()
            self.target_before = [p.clone() for p in self.target_network.parameters()]
            self.online_before = [p.clone() for p in self.q_network.parameters()]

        def train_batch(self, batch):
            out = super().train_batch(batch)
            assert all(torch.equal(a, b) for a, b in zip(self.target_before, self.target_network.parameters()))
            assert not all(torch.equal(a, b) for a, b in zip(self.online_before, self.q_network.parameters()))
            return out

    fit(Check(**{**hparams_of(tiny_dqn()), "gradient_steps": 5}))


@pytest.mark.parametrize("algo", ["SAC", "TD3"])
def test_policy_and_target_updates_count_gradient_steps(algo):
    """SAC: actor updated policy_frequency times every policy_frequency gradient steps; TD3: once."""
    counts = {"critic": 0, "actor": 0}
    cls = SAC if algo == "SAC" else TD3

    class Counting(cls):
        def configure_optimizers(self):
            optimizers = super().configure_optimizers()
            for name, opt in zip(["critic", "actor"], optimizers):
                opt.register_step_post_hook(lambda *_, name=name: counts.__setitem__(name, counts[name] + 1))
            return optimizers

    model = Counting(**{**hparams_of(tiny_sac() if algo == "SAC" else tiny_td3()), "policy_frequency": 3})
    fit(model)
    assert counts["critic"] == model.num_updates == 150 - 50
    if algo == "SAC":
        assert counts["actor"] == 3 * (model.num_updates // 3)
        policy_optimizer = model.trainer.optimizers[1]
        assert float(policy_optimizer.state[model.log_alpha]["step"]) == counts["actor"]  # alpha steps with the actor
    else:
        assert counts["actor"] == model.num_updates // 3


@pytest.mark.parametrize("frequency", [1, 1000])
def test_sac_target_critics_follow_by_polyak_every_target_network_frequency_gradient_steps(frequency):
    model = tiny_sac(tau=0.25, target_network_frequency=frequency, total_timesteps=51)  # a single gradient step
    target0 = [p.detach().clone() for p in model.target_critic.parameters()]
    fit(model)
    assert model.num_updates == 1
    for t, t0, c in zip(model.target_critic.parameters(), target0, model.critic.parameters()):
        torch.testing.assert_close(t, t0 + 0.25 * (c - t0) if frequency == 1 else t0)
    assert not all(torch.equal(c, t0) for c, t0 in zip(model.critic.parameters(), target0))


# ------------------------------------------------------------------------------------------ exploration


def test_epsilon_schedule_follows_global_env_steps():
    recorder = Recorder()
    model = tiny_dqn(total_timesteps=1000, start_e=1.0, end_e=0.1, exploration_fraction=0.5, learning_starts=100, train_frequency=50,
                     phases_per_training_step=1)
    fit(model, callbacks=[recorder])
    assert recorder.steps == list(range(150, 1001, 50))
    for step, eps in zip(recorder.steps, recorder.epsilons):
        assert eps == pytest.approx(linear_schedule(1.0, 0.1, 500, step))
    assert recorder.epsilons[0] == pytest.approx(1.0 - 0.9 * 150 / 500)
    assert recorder.epsilons[-1] == pytest.approx(0.1)


def test_epsilon_greedy_takes_random_actions_at_the_rate_epsilon():
    model = tiny_dqn(num_envs=1)
    model.policy.exploration.reseed(0)
    obs = torch.zeros(4000, 4)
    greedy = model.policy.act(obs)
    assert greedy.unique().numel() == 1
    model.policy.exploration.env_steps = model.hparams.total_timesteps  # epsilon = end_e = 0.05
    random_share = (model.policy.explore(obs) != greedy).float().mean().item()
    assert random_share == pytest.approx(0.05 / 2, abs=0.01)  # half of the random actions match the greedy one


def test_random_actions_until_learning_starts_for_sac_and_td3():
    model = tiny_td3(total_timesteps=60, learning_starts=60)
    fit(model)
    actions = model.replay_buffer.actions[:60, 0, 0]
    assert actions.min() < -1.0 and actions.max() > 1.0  # uniform in Pendulum's [-2, 2], not 0.1-noise around the actor
    assert model.num_updates == 0


# ------------------------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("algo", ["SAC", "TD3"])
def test_each_optimizer_changes_only_its_own_parameters(algo):
    violations, steps = [], []
    cls = SAC if algo == "SAC" else TD3

    class Checked(cls):
        def configure_optimizers(self):
            optimizers = super().configure_optimizers()
            for opt in optimizers:
                own = {id(p) for group in opt.param_groups for p in group["params"]}
                snapshot = {}

                def pre(opt, args, kwargs, snapshot=snapshot):
                    snapshot.update({n: p.detach().clone() for n, p in self.named_parameters()})

                def post(opt, args, kwargs, own=own, snapshot=snapshot):
                    changed = {n: p for n, p in self.named_parameters() if not torch.equal(p, snapshot[n])}
                    assert changed, "an optimizer step changed none of its parameters"
                    steps.append(set(changed))
                    violations.extend(n for n, p in changed.items() if id(p) not in own)

                opt.register_step_pre_hook(pre)
                opt.register_step_post_hook(post)
            return optimizers

    model = Checked(**hparams_of(tiny_sac(policy_frequency=1) if algo == "SAC" else tiny_td3(policy_frequency=1)))
    fit(model)
    assert violations == []
    kinds = {frozenset(n.split(".")[0] for n in changed) for changed in steps}
    expected = {frozenset({"critic"}), frozenset({"policy", "log_alpha"} if algo == "SAC" else {"policy"})}  # policy.actor
    assert kinds == expected


def test_gradient_clipping_acts_on_each_parameter_group_before_its_step():
    norms = []

    class Clipped(SAC):
        def on_before_optimizer_step(self, optimizer):
            super().on_before_optimizer_step(optimizer)  # clips; Lightning then steps with these gradients
            for group in optimizer.param_groups:
                grads = [p.grad for p in group["params"] if p.grad is not None]
                norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    model = Clipped(**{**hparams_of(tiny_sac(policy_frequency=1)), "max_grad_norm": 0.01})
    fit(model)
    assert len(norms) == 3 * model.num_updates  # critic, actor and entropy coefficient, each clipped on its own
    assert max(norms) <= 0.01 * (1 + 1e-4)
    assert min(norms[2::3]) > 0.01 * (1 - 1e-4)  # the entropy coefficient's own norm, not shrunk by the actor's


class CountingScaler(torch.amp.GradScaler):
    def __init__(self):
        super().__init__("cpu")
        self.updates = 0

    def update(self, new_scale=None):
        self.updates += 1
        super().update(new_scale)


@pytest.mark.parametrize("algo, expected", [("SAC", 100 + 50), ("TD3", 100)])
def test_grad_scaler_is_updated_once_per_iteration(algo, expected):
    """16-mixed (a CPU GradScaler here): one scaler.update() per gradient step of all optimizers.

    Lightning alone would update after each of SAC's 200 (TD3's 150) optimizer steps. SAC with
    policy_frequency=2 takes 50 extra actor/alpha iterations (CleanRL's make-up updates).
    """
    from lightning.pytorch.plugins.precision import MixedPrecision

    scaler = CountingScaler()
    model = (tiny_sac if algo == "SAC" else tiny_td3)(policy_frequency=2, max_grad_norm=1.0)
    fit(model, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert model.num_updates == 100
    assert scaler.updates == expected
    assert all(not group.get("fused") for opt in model.trainer.optimizers for group in opt.param_groups)


# --------------------------------------------------------------------------------------------- metrics


def test_metrics_have_cleanrl_names():
    dqn, sac, td3 = Recorder(), Recorder(), Recorder()
    fit(tiny_dqn(), callbacks=[dqn], log_every_n_steps=1)
    fit(tiny_sac(), callbacks=[sac], log_every_n_steps=1)
    fit(tiny_td3(policy_frequency=1), callbacks=[td3], log_every_n_steps=1)
    assert {"losses/td_loss", "losses/q_values", "charts/epsilon", "charts/episodic_return", "charts/SPS"} <= dqn.metric_names
    qf = {"losses/qf1_values", "losses/qf2_values", "losses/qf1_loss", "losses/qf2_loss", "losses/qf_loss", "losses/actor_loss"}
    assert qf | {"losses/alpha", "losses/alpha_loss"} <= sac.metric_names
    assert qf <= td3.metric_names


def test_metrics_are_logged_only_on_the_batches_lightning_writes():
    logged = []

    class Counting(SAC):
        def log_metrics(self, metrics):
            logged.append(self.env_steps)
            super().log_metrics(metrics)

    fit(Counting(**hparams_of(tiny_sac(phases_per_training_step=1))), log_every_n_steps=25)
    # 100 training steps (env steps 51..150): written at every 25th batch.
    assert logged == [75, 100, 125, 150]


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "cls, env_id, space, hint",
    [
        (DQN, "Pendulum-v1", "Box", "use SAC or TD3"),
        (SAC, "CartPole-v1", "Discrete", "use DQN"),
        (TD3, "CartPole-v1", "Discrete", "use DQN"),
    ],
)
def test_unsupported_action_space_names_algorithm_space_and_alternative(cls, env_id, space, hint):
    with pytest.raises(ValueError, match=cls.__name__) as err:
        cls(env_id=env_id)
    assert space in str(err.value) and hint in str(err.value)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (DQN, {"buffer_size": 10, "batch_size": 32}, "buffer_size"),
        (SAC, {"buffer_size": 100, "batch_size": 256}, "buffer_size"),
        (DQN, {"learning_starts": 2000, "total_timesteps": 1000}, "learning_starts"),
        (TD3, {"learning_starts": 25_000, "total_timesteps": 20_000}, "learning_starts"),
        (DQN, {"tau": 0.0}, "tau"),
        (SAC, {"tau": 1.5}, "tau"),
        (TD3, {"tau": -0.1}, "tau"),
        (DQN, {"loss": "l1"}, "loss"),
        (DQN, {"exploration_fraction": 1.5}, "exploration_fraction"),
        (SAC, {"policy_frequency": 0}, "policy_frequency"),
    ],
)
def test_bad_hyperparameters_are_rejected_before_any_env_is_made(cls, kwargs, match, monkeypatch):
    def no_env(*args, **kw):
        raise AssertionError("an env was created before the hyperparameters were checked")

    monkeypatch.setattr(lightrl.algos.checks, "make_env", no_env)
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_n_step_needs_enough_warmup_for_complete_windows():
    with pytest.raises(ValueError, match="n_step"):
        fit(tiny_dqn(n_step=3, num_envs=4, learning_starts=4))


def test_sac_rejects_unbounded_actions():
    import gymnasium as gym

    if "LightrlTest/UnboundedPendulum-v0" not in gym.registry:
        gym.register("LightrlTest/UnboundedPendulum-v0", entry_point=_unbounded)
    with pytest.raises(ValueError, match="infinite bounds"):
        SAC("LightrlTest/UnboundedPendulum-v0")


def _unbounded():
    import gymnasium as gym
    import numpy as np

    env = gym.make("Pendulum-v1")
    env.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    return env


# ------------------------------------------------------------------------------- variants and precision


@pytest.mark.parametrize(
    "kwargs",
    [{"double_q": True}, {"dueling": True}, {"n_step": 3}, {"loss": "huber", "max_grad_norm": 10.0}, {"num_envs": 3}],
)
def test_dqn_variants_train(kwargs):
    model = tiny_dqn(**kwargs)
    before = [p.detach().clone() for p in model.q_network.parameters()]
    fit(model)
    assert model.num_updates > 0
    assert not all(torch.equal(a, b) for a, b in zip(before, model.q_network.parameters()))


@pytest.mark.parametrize(
    "make, kwargs",
    [(tiny_sac, {"autotune": False, "alpha": 0.1}), (tiny_sac, {"num_envs": 2, "n_step": 2}), (tiny_td3, {"num_envs": 2}),
     (tiny_td3, {"train_frequency": 4, "gradient_steps": 4})],
)
def test_sac_and_td3_variants_train(make, kwargs):
    model = make(**kwargs)
    before = [p.detach().clone() for p in model.actor.parameters()]
    fit(model)
    assert model.num_updates == model.updates_due(0, model.env_steps) > 0
    assert not all(torch.equal(a, b) for a, b in zip(before, model.actor.parameters()))
    if kwargs.get("autotune") is False:
        assert model.alpha == 0.1 and not model.log_alpha.requires_grad


def test_n_step_batches_use_per_sample_discounts():
    model = tiny_dqn(n_step=3, gamma=0.5, env_id=COUNTING_ID, num_envs=2)
    fit(model)
    batch = model.source.sample(model.policy, 2)
    assert set(batch["discounts"].unique().tolist()) <= {0.5, 0.25, 0.125}
    assert batch["discounts"].min() < 0.2  # full 3-step windows occur


@pytest.mark.parametrize("make", [tiny_sac, tiny_td3, tiny_dqn])
@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_bf16_mixed_precision_runs(make, max_grad_norm):
    model = make(max_grad_norm=max_grad_norm)
    fit(model, precision="bf16-mixed")
    assert model.num_updates > 0


@pytest.mark.slow  # PPO's Nature CNN on Pong stays in the fast suite
@requires_ale
def test_dqn_on_pong_with_the_nature_cnn():
    model = DQN("ALE/Pong-v5", total_timesteps=300, learning_starts=100, buffer_size=500, batch_size=8,
                train_frequency=4, gradient_steps=1, target_network_frequency=100, hidden_sizes=[64])
    fit(model)
    assert model.replay_buffer.observations.dtype == torch.uint8
    assert model.replay_buffer.observations.shape[-3:] == (4, 84, 84)
    assert model.num_updates == (300 - 100) // 4
    assert model.policy.act(model.replay_buffer.observations[:2, 0]).shape == (2,)


# ------------------------------------------------------------------------------------- determinism, I/O


@pytest.mark.parametrize("make", [tiny_dqn, tiny_sac, tiny_td3])
def test_same_seed_gives_identical_parameters(make):
    runs = []
    for seed in (3, 3, 4):
        model = make(seed=seed)
        fit(model)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_checkpoint_round_trip_with_replay_buffer(tmp_path):
    model = tiny_sac(save_replay_buffer=True, seed=5)
    trainer = fit(model)
    path = tmp_path / "sac.ckpt"
    trainer.save_checkpoint(path)
    loaded = SAC.load_from_checkpoint(path)
    assert loaded.hparams == model.hparams
    assert loaded.env_steps == model.env_steps and loaded.num_updates == model.num_updates
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    # The buffer comes back when training resumes, before any new step.
    resumed = SAC.load_from_checkpoint(path, total_timesteps=model.env_steps + 10)
    fit(resumed)
    assert resumed.replay_buffer.num_adds == model.replay_buffer.num_adds + 10
    assert torch.equal(resumed.replay_buffer.observations[:50], model.replay_buffer.observations[:50])


def test_checkpoint_without_replay_buffer_is_small(tmp_path):
    model = tiny_dqn()
    trainer = fit(model)
    trainer.save_checkpoint(tmp_path / "dqn.ckpt")
    checkpoint = torch.load(tmp_path / "dqn.ckpt", weights_only=False)
    assert "replay_buffer" not in checkpoint["lightrl_ranks"][0]
    assert DQN.load_from_checkpoint(tmp_path / "dqn.ckpt").hparams.hidden_sizes == [16]


# ---------------------------------------------------------------------------------------------- learning


def test_dqn_learns_cartpole_on_a_small_budget():
    # One gradient step every 4 env steps: steadier than the RL-zoo recipe on a short budget (random play scores ~22).
    model = DQN(
        "CartPole-v1", seed=1, total_timesteps=20_000, learning_rate=1e-3, batch_size=64, buffer_size=100_000,
        learning_starts=1000, target_network_frequency=500, train_frequency=4, gradient_steps=1,
        exploration_fraction=0.2, end_e=0.02, hidden_sizes=[64, 64], loss="huber", max_grad_norm=10.0,
    )  # fmt: skip
    fit(model)
    mean_return, _ = lightrl.evaluate(model, num_episodes=10)
    assert mean_return >= 100


def test_sac_learns_pendulum_on_a_small_budget():
    # Random play scores about -1200 on Pendulum. At 3000 steps the return still depends on the seed
    # (-310 to -640 for seeds 1-3); at 5000 steps seeds 1, 2 and 3 all reach about -134.
    model = SAC("Pendulum-v1", seed=1, total_timesteps=5000, learning_starts=100, policy_lr=1e-3, q_lr=1e-3,
                policy_frequency=1, batch_size=128, hidden_sizes=[64, 64])  # fmt: skip
    fit(model)
    mean_return, _ = lightrl.evaluate(model, num_episodes=10)
    assert mean_return >= -300


@pytest.mark.slow  # SAC's small-budget test shares the continuous-control path
def test_td3_learns_pendulum_on_a_small_budget():
    model = TD3("Pendulum-v1", seed=1, total_timesteps=6000, learning_starts=500, learning_rate=1e-3, gamma=0.98,
                batch_size=128, hidden_sizes=[64, 64])  # fmt: skip
    fit(model)
    mean_return, _ = lightrl.evaluate(model, num_episodes=10)
    assert mean_return >= -700


def train_recipe(name: str, seed: int) -> float:
    """Train an experiments/ recipe for its whole budget with ``seed``; the final policy's mean return over 10 episodes."""
    config = experiment_config(name)
    cls = getattr(lightrl, config["model"]["class_path"].rsplit(".", 1)[1])
    model = cls(**{**config["model"]["init_args"], "seed": seed})
    trainer = fit(model, **config["trainer"])
    mean_return, std_return = lightrl.evaluate(model, num_episodes=10)
    print(f"{name} seed {seed}: {mean_return:.1f} +- {std_return:.1f} after {model.env_steps} env steps, {model.sps:.0f} SPS")
    assert model.env_steps == config["model"]["init_args"]["total_timesteps"] and not trainer.interrupted
    return mean_return


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name, threshold", [("sac_pendulum.yaml", -200.0), ("td3_pendulum.yaml", -250.0)])
def test_full_budget_recipes_reach_their_returns(name, threshold, seed):
    assert train_recipe(name, seed) >= threshold


@pytest.mark.slow
def test_dqn_cartpole_recipe_reaches_its_documented_returns_on_three_seeds():
    # What experiments/dqn_cartpole.yaml and docs/algorithms/dqn.md claim: DQN's greedy policy on CartPole swings from
    # one update phase to the next, so the final policy of a seed may end below 500 (500.0 / 405.9 / 500.0 measured
    # for seeds 1-3), as with Stable-Baselines3's zoo recipe.
    returns = [train_recipe("dqn_cartpole.yaml", seed) for seed in (1, 2, 3)]
    assert sum(returns) / 3 >= 400.0 and min(returns) >= 300.0, returns
