"""A recurrent policy's state through the acting paths: checkpoints and resume, the async actor, predict, the CLI and export."""

from __future__ import annotations

import importlib.util
import json

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import lightrl
from experiments.resume_check import max_abs_diff, run_resume_check
from lightrl.cli import main
from lightrl.data.collector import Collector
from lightrl.envs.vector import make_vec_env
from lightrl.nn.recurrent import reset_state

RUN = dict(env_id="CartPole-v1", seed=3, total_timesteps=1024, num_envs=4, num_steps=32, num_minibatches=2, hidden_sizes=[16],
           recurrent="lstm", recurrent_size=8, timesteps_per_epoch=256, eval_episodes=2, vectorization="sync")  # fmt: skip
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
requires_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None, reason="needs lightrl[export]"
)


def fit(model, ckpt_path=None, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("kwargs", [RUN, {**RUN, "recurrent": "gru", "critic_shares_core": False}], ids=["lstm", "gru-own-critic-core"])
def test_resumed_recurrent_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, kwargs):
    # (a) straight to the budget, (b) stopped mid-epoch with episodes (and their states) in progress, (c) resumed from (b).
    a, b, c = run_resume_check(lambda: lightrl.PPO(**kwargs), 384, tmp_path / "b.ckpt")
    assert b.env_steps == 384 and a.env_steps == c.env_steps == 1024
    assert max_abs_diff(a, b) > 0 and max_abs_diff(a, c) == 0.0
    saved = torch.load(tmp_path / "b.ckpt", weights_only=True)["lightrl_ranks"][0]["recurrent"]
    assert saved["state"].shape == (4, *b.policy.agent.state_shape) and saved["state"].abs().sum() > 0


def test_async_recurrent_ppo_repeats_exactly_for_a_seed_with_the_state_in_the_actor():
    runs = []
    for _ in range(2):
        model = lightrl.PPO(**{**RUN, "collector": "async", "total_timesteps": 512})
        fit(model)
        assert model.source.state is None  # the state lives where the acting happens: in the actor process
        runs.append(torch.cat([p.detach().flatten() for p in model.policy.agent.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_predict_acts_from_the_zero_state_of_an_episodes_first_step():
    model = lightrl.PPO(**{**RUN, "total_timesteps": 256})
    fit(model)
    obs = torch.randn(5, 4)
    (actions,) = L.Trainer(logger=False, enable_progress_bar=False).predict(model, DataLoader([obs], batch_size=None))
    expected, _ = model.policy.act_with_state(obs, torch.zeros(5, *model.policy.agent.state_shape))
    assert torch.equal(actions, expected)


def test_cli_trains_evaluates_and_refuses_recurrent_dqn(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--model", "PPO", "--model.recurrent", "gru", "--model.recurrent_size", "8", "--model.total_timesteps", "512",
          "--model.num_minibatches", "2", "--trainer.logger", "false", "--trainer.default_root_dir", "logs", *QUIET])  # fmt: skip
    capsys.readouterr()
    main(["evaluate", "--ckpt_path", "last", "--num_episodes", "2"])
    assert capsys.readouterr().out.startswith("PPO on CartPole-v1: return ")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "DQN", "--model.recurrent", "lstm", "--trainer.logger", "false", *QUIET])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("lightrl: error: recurrent='lstm' is not supported by DQN; use PPO or A2C (a recurrent core is on-policy only for now), or recurrent=None.")


@requires_onnx
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_onnx_steps_a_whole_episode_as_the_policy_does(tmp_path, kind):
    import onnxruntime as ort

    model = lightrl.PPO(**{**RUN, "recurrent": kind, "total_timesteps": 256, "critic_shares_core": kind == "lstm"})
    fit(model)
    path = lightrl.export(model, tmp_path / "policy.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["obs", "state"] and [o.name for o in session.get_outputs()] == ["actions", "next_state"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["lightrl"])
    assert meta["state_shape"] == list(model.policy.agent.state_shape) and meta["recurrent"] == kind
    # Two envs stepped until both have ended an episode: the exported graph and the policy act alike at every step.
    envs = make_vec_env("CartPole-v1", 2, seed=7, vectorization="sync")
    collector = Collector(envs)
    obs, state = collector.reset(), np.zeros((2, *meta["state_shape"]), np.float32)
    policy_state, ended, steps = torch.zeros(2, *model.policy.agent.state_shape), np.zeros(2, bool), 0
    with torch.no_grad():
        while not ended.all():
            actions, state = session.run(["actions", "next_state"], {"obs": obs.numpy(), "state": state})
            expected, policy_state = model.policy.act_with_state(obs, policy_state)
            np.testing.assert_array_equal(actions, expected.numpy())
            np.testing.assert_allclose(state, policy_state.numpy(), atol=1e-5)
            step = collector.step(torch.from_numpy(actions))
            done = (step.terminated | step.truncated).numpy()
            state[done], policy_state = 0.0, reset_state(policy_state, step.terminated | step.truncated)
            obs, ended, steps = step.next_obs, ended | done, steps + 1
    envs.close()
    assert steps > 5


def test_pt2_takes_the_state_and_returns_the_next(tmp_path):
    model = lightrl.PPO(**{**RUN, "total_timesteps": 128})
    fit(model)
    program = torch.export.load(lightrl.export(model, tmp_path / "policy.pt2"))
    obs, state = torch.randn(3, 4), torch.randn(3, *model.policy.agent.state_shape)
    actions, next_state = program.module()(obs, state)
    expected_actions, expected_state = model.policy.act_with_state(obs, state)
    assert torch.equal(actions, expected_actions) and torch.allclose(next_state, expected_state, atol=1e-6)


@pytest.mark.timeout(600)
def test_ddp_resume_hands_each_rank_its_own_states(tmp_path):
    from test_ddp import assert_data_parallel, run_ddp

    run = dict(env_id="CartPole-v1", num_envs=2, num_steps=32, num_minibatches=2, total_timesteps=1024, recurrent="gru",
               recurrent_size=8, hidden_sizes=[16], vectorization="sync", seed=2)  # fmt: skip
    straight = run_ddp(tmp_path / "a", "PPO", **run)
    assert_data_parallel(straight, 1024)
    run_ddp(tmp_path / "b", "PPO", stop_at=512, **run)
    resumed = run_ddp(tmp_path / "c", "PPO", resume=str(tmp_path / "b" / "stop.ckpt"), **run)
    ranks = torch.load(tmp_path / "b" / "stop.ckpt", weights_only=True)["lightrl_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["recurrent"]["state"], ranks[1]["recurrent"]["state"])
    assert [r["params_sha"] for r in resumed] == [r["params_sha"] for r in straight]


@pytest.mark.parametrize("env_id", ["lightrl-test/ImageAndVector-v0", "lightrl-test/GoalDict-v0", "lightrl-test/TinyLake-v0"],
                         ids=["dict-with-image", "dict", "discrete-obs"])  # fmt: skip
def test_the_core_follows_every_encoder_and_exports(tmp_path, env_id):
    import space_envs  # noqa: F401  (registers the envs)

    from lightrl.deploy import input_dtype
    from lightrl.nn.cnn import NatureCNN
    from lightrl.nn.encoders import MultiInputEncoder, OneHot

    model = lightrl.PPO(env_id, recurrent="gru", recurrent_size=8, num_envs=2, num_steps=16, num_minibatches=2, hidden_sizes=[8],
                        total_timesteps=64, vectorization="sync")  # fmt: skip
    encoder = model.policy.agent.obs_encoder
    expected = {"lightrl-test/ImageAndVector-v0": MultiInputEncoder, "lightrl-test/GoalDict-v0": MultiInputEncoder, "lightrl-test/TinyLake-v0": OneHot}
    assert isinstance(encoder, expected[env_id]) and model.policy.agent.core.rnn.input_size == encoder.out_features
    if env_id == "lightrl-test/ImageAndVector-v0":
        assert any(isinstance(part, NatureCNN) for part in encoder.parts)
    fit(model)
    program = torch.export.load(lightrl.export(model, tmp_path / "policy.pt2")).module()
    obs, space = model.source.collector.obs, model.policy.observation_space  # the exported inputs' dtypes (images as float pixels)
    obs = {key: value.to(input_dtype(space[key])) for key, value in obs.items()} if isinstance(obs, dict) else obs.to(input_dtype(space))
    state = model.source.state
    actions, next_state = program(obs, state)
    expected_actions, expected_state = model.policy.act_with_state(obs, state)
    assert torch.equal(actions, expected_actions.to(actions.dtype)) and torch.allclose(next_state, expected_state, atol=1e-6)


def test_validation_plays_its_episodes_with_the_state_carried():
    from lightrl.algos.evaluation_steps import EVAL_SEED_OFFSET
    from lightrl.evaluation import episode_returns

    model = lightrl.PPO(**{**RUN, "total_timesteps": 256, "eval_episodes": 3})
    fit(model)
    metrics = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(model, verbose=False)[0]
    expected = episode_returns(model, 3, seed=RUN["seed"] + EVAL_SEED_OFFSET)
    assert metrics["eval/return_mean"] == pytest.approx(np.mean(expected)) and metrics["eval/episodes"] == 3
