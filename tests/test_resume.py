"""Checkpoints that continue a run exactly, and clear errors for checkpoints that cannot."""

from __future__ import annotations


import gymnasium as gym
import lightning as L
import pytest
import torch

import lightrl
from experiments.resume_check import StopAtEpochEnd, max_abs_diff, run_resume_check
from lightrl.cli import main
from lightrl.envs.vector import make_vec_env

PPO_RUN = dict(env_id="CartPole-v1", seed=3, total_timesteps=2048, num_envs=4, num_steps=32, hidden_sizes=[16],
               timesteps_per_epoch=512, eval_episodes=2)  # fmt: skip
DQN_RUN = dict(env_id="CartPole-v1", seed=3, total_timesteps=1200, learning_starts=300, train_frequency=50, gradient_steps=10,
               buffer_size=2000, batch_size=16, target_network_frequency=100, hidden_sizes=[16], timesteps_per_epoch=200,
               eval_episodes=2)  # fmt: skip
# 8 update phases of one env step per training step; 12 training steps (96 env steps) per epoch after the warm-up.
SAC_RUN = dict(env_id="Pendulum-v1", seed=3, total_timesteps=500, learning_starts=100, batch_size=16, hidden_sizes=[16], num_envs=1,
               buffer_size=1000, save_replay_buffer=True, timesteps_per_epoch=100, eval_episodes=1)  # fmt: skip


def fit(model, ckpt_path=None, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize(
    "algo, kwargs, stop_at, stopped_at",
    [
        (lightrl.PPO, PPO_RUN, 640, 640),  # mid-epoch: the 5th of 4 rollouts per epoch
        (lightrl.PPO, PPO_RUN, StopAtEpochEnd(1, None), 1024),  # at the end of the second epoch
        (lightrl.DQN, {**DQN_RUN, "save_replay_buffer": True}, 650, 650),
        (lightrl.DQN, {**DQN_RUN, "save_replay_buffer": True}, StopAtEpochEnd(1, None), 700),  # warm-up + 2 x 200
        (lightrl.SAC, SAC_RUN, 233, 236),  # the training step of 8 phases that passes 233
        (lightrl.SAC, SAC_RUN, StopAtEpochEnd(1, None), 292),  # warm-up + 2 x 96
    ],
    ids=["ppo-mid-epoch", "ppo-epoch-end", "dqn-mid-epoch", "dqn-epoch-end", "sac-mid-epoch", "sac-epoch-end"],
)
def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, algo, kwargs, stop_at, stopped_at):
    # (a) straight to the budget, (b) stopped and checkpointed, (c) resumed from (b): (a) == (c) exactly.
    if isinstance(stop_at, StopAtEpochEnd):
        stop_at.path = tmp_path / "b.ckpt"
    a, b, c = run_resume_check(lambda: algo(**kwargs), stop_at, tmp_path / "b.ckpt")
    assert b.env_steps == stopped_at and a.env_steps == c.env_steps == kwargs["total_timesteps"]
    assert max_abs_diff(a, b) > 0  # (b) really stopped early, so the comparison below is not vacuous
    assert max_abs_diff(a, c) == 0.0


@pytest.mark.parametrize(
    "algo, kwargs, stop_at",
    # PPO's envs also carry env_wrappers, which the checkpoint's pickled sub-envs must bring back.
    [(lightrl.PPO, {**PPO_RUN, "env_id": "Pendulum-v1", "env_wrappers": ["gymnasium.wrappers.ClipAction"]}, 640), (lightrl.SAC, SAC_RUN, 233)],
    ids=["ppo", "sac"],
)
def test_resume_with_normalization_is_exact(tmp_path, algo, kwargs, stop_at):
    kwargs = {**kwargs, "normalize_obs": True, "normalize_reward": True}
    a, b, c = run_resume_check(lambda: algo(**kwargs), stop_at, tmp_path / "b.ckpt")
    statistics = [m.policy.obs_normalizer.statistics() for m in (a, b, c)]
    assert statistics[1].count < statistics[0].count == statistics[2].count  # (b) saw fewer observations
    # The state_dict holds the observation statistics: parameters and statistics alike differ by exactly 0.
    assert max_abs_diff(a, b) > 0 and max_abs_diff(a, c) == 0.0
    assert all(torch.equal(x, y) for x, y in zip(a.policy.obs_normalizer.state_dict().values(), c.policy.obs_normalizer.state_dict().values()))
    # The reward normalizer (per rank, in the collector's state) continued exactly too.
    ends = []
    for name, model in (("a", a), ("c", c)):
        model.trainer.save_checkpoint(tmp_path / f"{name}-end.ckpt")
        ends.append(torch.load(tmp_path / f"{name}-end.ckpt", weights_only=True)["lightrl_ranks"][0]["collector"]["reward_normalizer"])
    assert ends[0]["count"] == ends[1]["count"] == pytest.approx(kwargs["total_timesteps"] + 1e-4)  # every sub-env's return, every step
    assert ends[0]["var"] == ends[1]["var"] and torch.equal(ends[0]["returns"], ends[1]["returns"])


def test_checkpoint_holds_envs_rngs_and_counters_and_loads_weights_only(tmp_path):
    model = lightrl.DQN(**DQN_RUN, save_replay_buffer=True)
    trainer = fit(model)
    trainer.save_checkpoint(tmp_path / "dqn.ckpt")
    checkpoint = torch.load(tmp_path / "dqn.ckpt", weights_only=True)  # no pickled code: safe to load
    meta, (rank,) = checkpoint["lightrl"], checkpoint["lightrl_ranks"]
    assert meta["env_steps"] == 1200 and meta["num_updates"] == model.num_updates > 0
    assert meta["class_path"] == "lightrl.algos.dqn.DQN" and meta["observation_space"].startswith("Box(")
    assert set(rank) >= {"rng", "collector", "sampler", "explorer", "replay_buffer"}
    assert "envs" in rank["collector"]["envs"] and rank["replay_buffer"]["num_adds"] == 1200


def test_resume_without_replay_buffer_refills_it_before_updating(tmp_path):
    model = lightrl.DQN(**{**DQN_RUN, "total_timesteps": 600})
    fit(model).save_checkpoint(tmp_path / "dqn.ckpt")
    resumed = lightrl.DQN(**DQN_RUN)
    with pytest.warns(UserWarning, match="no replay buffer.*refilled for 300 env steps"):
        fit(resumed, ckpt_path=tmp_path / "dqn.ckpt")
    assert resumed.env_steps == 1200 and resumed.updates_resume_at == 900
    # 600 -> 900 refills; updates resume at 950, 1000, ..., 1200: 6 phases of 10 gradient steps.
    assert resumed.num_updates == model.num_updates + 60


def test_resume_with_async_envs_warns_and_starts_fresh_episodes(tmp_path):
    model = lightrl.PPO(**{**PPO_RUN, "vectorization": "async", "num_envs": 2, "total_timesteps": 128})
    fit(model).save_checkpoint(tmp_path / "ppo.ckpt")
    resumed = lightrl.PPO(**{**PPO_RUN, "vectorization": "async", "num_envs": 2, "total_timesteps": 256})
    with pytest.warns(UserWarning, match="envs' state was not restored.*AsyncVectorEnv"):
        fit(resumed, ckpt_path=tmp_path / "ppo.ckpt")
    assert resumed.env_steps == 256


def test_checkpoint_of_another_algorithm_says_which(tmp_path):
    ppo = lightrl.PPO(**{**PPO_RUN, "total_timesteps": 128})
    fit(ppo).save_checkpoint(tmp_path / "ppo.ckpt")
    with pytest.raises(ValueError, match=r"is from lightrl\.algos\.ppo\.PPO, but this run trains lightrl\.algos\.dqn\.DQN"):
        fit(lightrl.DQN(**DQN_RUN), ckpt_path=tmp_path / "ppo.ckpt")
    with pytest.raises(ValueError, match=r"trained on env 'CartPole-v1' with observation_space Box.*'Acrobot-v1' has Box"):
        fit(lightrl.PPO(**{**PPO_RUN, "env_id": "Acrobot-v1"}), ckpt_path=tmp_path / "ppo.ckpt")


@pytest.fixture
def ppo_checkpoint(tmp_path):
    fit(lightrl.PPO(**{**PPO_RUN, "total_timesteps": 128})).save_checkpoint(tmp_path / "ppo.ckpt")
    return tmp_path / "ppo.ckpt"


def cli_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lightrl: error: ")
    return err


FIT = ["fit", "--model", "PPO", "--trainer.logger", "false", "--model.total_timesteps", "256", "--model.num_steps", "32"]


def test_cli_names_a_missing_or_corrupt_checkpoint_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    assert f"checkpoint '{missing}' does not exist" in cli_error([*FIT, "--ckpt_path", str(missing)], capsys)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    assert f"checkpoint '{corrupt}' cannot be read" in cli_error([*FIT, "--ckpt_path", str(corrupt)], capsys)
    assert "cannot be read" in cli_error(["evaluate", str(corrupt)], capsys)


def test_cli_rejects_a_checkpoint_of_another_algorithm_or_env_before_training(ppo_checkpoint, capsys):
    err = cli_error(["fit", "--model", "DQN", "--trainer.logger", "false", "--ckpt_path", str(ppo_checkpoint)], capsys)
    assert "is from lightrl.algos.ppo.PPO, but this run trains lightrl.algos.dqn.DQN" in err
    err = cli_error([*FIT, "--model.env_id", "Acrobot-v1", "--ckpt_path", str(ppo_checkpoint)], capsys)
    assert "with observation_space Box" in err


def test_cli_resumes_the_newest_last_checkpoint(tmp_path, capsys, caplog):
    args = [*FIT, "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", "last"]
    main(args)  # nothing to resume yet: a new run, which ends with checkpoints/last.ckpt
    assert "no last checkpoint of PPO yet; starting a new run" in capsys.readouterr().err
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["lightrl"]["env_steps"] == 256
    main([*args, "--model.total_timesteps", "512"])
    assert f"Restoring states from the checkpoint path at {last}" in caplog.text
    assert torch.load(last, weights_only=True)["lightrl"]["env_steps"] == 512


def test_mujoco_env_state_is_reported_lost_rather_than_restored_fresh():
    # A MuJoCo env pickles as its constructor arguments: "restoring" it would continue a fresh simulation mid-episode.
    envs = make_vec_env("HalfCheetah-v5", 1, seed=0, env_wrappers=[gym.wrappers.ClipAction])
    envs.reset()
    assert envs.get_state() == {"error": "HalfCheetahEnv pickles as its constructor arguments (gymnasium.utils.EzPickle), not its state"}
    envs.close()
