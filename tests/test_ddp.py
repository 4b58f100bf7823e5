"""Real 2-process DDP on CPU (gloo): distinct data per rank, identical weights, a global budget, no hangs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_script.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ddp(tmp_path: Path, algo: str, strategy: str = "ddp", **kwargs) -> list[dict]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    args = [f"strategy={strategy}"] + [f"{key}={json.dumps(value)}" for key, value in kwargs.items()]
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), algo, *args], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def assert_data_parallel(ranks: list[dict], total_timesteps: int) -> None:
    a, b = ranks
    assert a["world_size"] == b["world_size"] == 2
    assert a["first_obs"] != b["first_obs"]  # each rank steps its own envs with its own seeds
    assert a["params_sha"] == b["params_sha"]  # DDP averaged the gradients
    assert a["env_steps"] == b["env_steps"] == total_timesteps  # the budget is global
    assert a["train_batches"] == b["train_batches"] and a["global_step"] == b["global_step"]


@pytest.mark.timeout(300)
def test_ppo_ddp_two_processes(tmp_path):
    # 2 ranks x 4 envs x 64 steps = 512 env steps per iteration; 4 iterations.
    ranks = run_ddp(tmp_path, "PPO", env_id="CartPole-v1", num_envs=4, num_steps=64, total_timesteps=2048, seed=1)
    assert_data_parallel(ranks, 2048)
    assert ranks[0]["train_batches"] == 4 and ranks[0]["global_step"] == 4 * 4 * 4


@pytest.mark.timeout(300)
def test_ddp_epochs_end_together_and_validation_splits_episodes_with_one_result(tmp_path):
    # An epoch of 512 env steps is 2 rollouts of 2 ranks x 2 envs x 64 steps; 4 epochs, each ending with a validation.
    ranks = run_ddp(tmp_path, "PPO", env_id="CartPole-v1", num_envs=2, num_steps=64, total_timesteps=2048,
                    timesteps_per_epoch=512, eval_episodes=5, seed=1)  # fmt: skip
    assert_data_parallel(ranks, 2048)
    a, b = ranks
    assert a["epochs"] == b["epochs"] == 4 and len(a["validations"]) == 4
    # 5 episodes, 3 on rank 0 and 2 on rank 1, gathered: both ranks report the same mean over all 5.
    assert a["validations"] == b["validations"] and all(episodes == 5 for _, episodes in a["validations"])


@pytest.mark.timeout(300)
def test_uneven_episode_ends_across_ranks_do_not_hang(tmp_path):
    # A2C's 5-step rollouts end mid-episode; with their own seeds the ranks finish different numbers of
    # episodes, at different steps. Batches are counted in global env steps, so both ranks still agree.
    ranks = run_ddp(tmp_path, "A2C", env_id="CartPole-v1", num_envs=2, num_steps=5, total_timesteps=2000, seed=3)
    assert_data_parallel(ranks, 2000)
    assert ranks[0]["episodes"] != ranks[1]["episodes"]
    assert ranks[0]["train_batches"] == 100  # 2000 / (2 ranks * 2 envs * 5 steps)


@pytest.mark.timeout(600)
def test_ddp_resume_continues_each_rank_exactly(tmp_path):
    # Each rank's envs, RNGs and replay buffer are gathered into the checkpoint and handed back to the same rank.
    run = dict(env_id="CartPole-v1", num_envs=2, total_timesteps=1600, learning_starts=200, train_frequency=100,
               gradient_steps=8, batch_size=16, buffer_size=1000, hidden_sizes=[16], save_replay_buffer=True, seed=2)  # fmt: skip
    straight = run_ddp(tmp_path / "a", "DQN", **run)
    run_ddp(tmp_path / "b", "DQN", stop_at=800, **run)
    resumed = run_ddp(tmp_path / "c", "DQN", resume=str(tmp_path / "b" / "stop.ckpt"), **run)
    import torch

    ranks = torch.load(tmp_path / "b" / "stop.ckpt", weights_only=True)["lightrl_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["collector"]["obs"], ranks[1]["collector"]["obs"])
    assert [r["params_sha"] for r in resumed] == [r["params_sha"] for r in straight]
    assert resumed[0]["env_steps"] == 1600


@pytest.mark.timeout(300)
def test_dqn_ddp_two_processes(tmp_path):
    # Updates start at learning_starts (global env steps) on both ranks at once: 4 gradient steps every 64 env steps.
    # 12 update phases, 5 per training_step: the budget ends the third step after 2 phases, on both ranks.
    ranks = run_ddp(tmp_path, "DQN", env_id="CartPole-v1", num_envs=2, total_timesteps=1024, learning_starts=256,
                    buffer_size=2048, batch_size=32, train_frequency=64, gradient_steps=4, phases_per_training_step=5, seed=1)
    assert_data_parallel(ranks, 1024)
    assert ranks[0]["train_batches"] == 3 and ranks[0]["global_step"] == 4 * (1024 - 256) // 64


@pytest.mark.timeout(300)
def test_sac_ddp_two_processes(tmp_path):
    # Each of SAC's backward passes reaches one optimizer's parameters only, hence find_unused_parameters.
    ranks = run_ddp(tmp_path, "SAC", strategy="ddp_find_unused_parameters_true", env_id="Pendulum-v1", num_envs=1,
                    total_timesteps=600, learning_starts=200, batch_size=32, hidden_sizes=[32, 32], seed=1)
    assert_data_parallel(ranks, 600)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo", ["PPO", "SAC"])
def test_ddp_ranks_share_the_observation_statistics(tmp_path, algo):
    if algo == "PPO":
        kwargs = dict(num_envs=2, num_steps=64, total_timesteps=1024)
    else:
        kwargs = dict(strategy="ddp_find_unused_parameters_true", num_envs=1, total_timesteps=400, learning_starts=100, batch_size=16,
                      hidden_sizes=[16], buffer_size=1000)  # fmt: skip
    ranks = run_ddp(tmp_path, algo, env_id="Pendulum-v1", seed=1, normalize_obs=True, normalize_reward=True, **kwargs)
    assert_data_parallel(ranks, kwargs["total_timesteps"])
    a, b = (rank["obs_statistics"] for rank in ranks)
    assert a == b  # every rank normalizes with the same statistics, bit for bit
    # ... which count the observations of both ranks (each rank acted on half of them).
    assert a["stats.0.count"] == pytest.approx(kwargs["total_timesteps"] + 1e-4, rel=1e-12)


@pytest.mark.timeout(300)
def test_ppo_ddp_target_kl_early_stop_is_agreed(tmp_path):
    # A tiny target_kl makes the epochs stop early; ranks see different data, so only an agreed
    # decision keeps their optimizer steps (and weights) equal.
    ranks = run_ddp(tmp_path, "PPO", env_id="CartPole-v1", num_envs=2, num_steps=64, total_timesteps=1024,
                    learning_rate=0.01, target_kl=1e-6, seed=2)
    assert_data_parallel(ranks, 1024)
    assert ranks[0]["global_step"] < 4 * 4 * 4  # some epochs were cut short


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_nodes_on_loopback_with_torchrun(tmp_path):
    # Two "nodes" of one process each, rendezvousing on 127.0.0.1, as on a real cluster.
    torchrun = Path(sys.executable).with_name("torchrun")
    port = str(free_port())
    args = [str(SCRIPT), str(tmp_path), "PPO", "nodes=2", 'env_id="CartPole-v1"', "num_envs=2", "num_steps=64",
            "total_timesteps=1024", "seed=5"]
    nodes = [
        subprocess.Popen([str(torchrun), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                          "--master_addr", "127.0.0.1", "--master_port", port, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert_data_parallel(ranks, 1024)  # env_steps counted once across nodes


@pytest.mark.timeout(300)
def test_a_failing_rank_takes_the_job_down(tmp_path):
    # Rank 1 raises in its first training step; rank 0 must not wait for it forever.
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "LIGHTRL_TEST_FAIL_RANK": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "PPO", 'env_id="CartPole-v1"', "num_envs=2",
                           "num_steps=32", "total_timesteps=4096"], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ppo_ddp_learns_cartpole_like_a_single_process(tmp_path):
    # The RL-zoo recipe with its 8 envs split 4 + 4 over two ranks and the same 100k global budget.
    ranks = run_ddp(tmp_path, "PPO", env_id="CartPole-v1", num_envs=4, num_steps=32, total_timesteps=100_000,
                    update_epochs=20, num_minibatches=1, gamma=0.98, gae_lambda=0.8, learning_rate=1e-3, ent_coef=0.0,
                    clip_vloss=False, seed=1, evaluate=True)
    assert_data_parallel(ranks, 100_096)
    assert ranks[0]["eval_return"] >= 475
