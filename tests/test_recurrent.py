"""Recurrent cores (``recurrent="lstm"`` / ``"gru"``) for PPO and A2C: state resets, sequence replay, memory, bad input."""

from __future__ import annotations

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch

import lightrl
from conftest import COUNTING_ID, recipe
from lightrl.algos.sequences import sequence_minibatches, whole_rollout
from lightrl.data.collector import CollectorSpec
from lightrl.data.recurrent_rollout import RecurrentRolloutSource
from lightrl.envs.partial import HideVelocities
from lightrl.evaluation import episode_returns
from lightrl.nn.recurrent import RecurrentActorCritic, RecurrentCore, reset_state
from lightrl.policies import RecurrentActorCriticPolicy
from memory_envs import CUE_RECALL_ID


def fit(model, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(model)
    return trainer


def counting_source(kind: str = "lstm", num_steps: int = 8, critic_shares_core: bool = True):
    """A recurrent policy and its source on two CountingEnv sub-envs: sub-env 0 terminates every 3 steps, sub-env 1 is truncated every 4."""
    space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
    torch.manual_seed(0)
    agent = RecurrentActorCritic(space, gym.spaces.Discrete(2), (8,), kind, 4, 1, critic_shares_core)
    policy = RecurrentActorCriticPolicy(agent, space, gym.spaces.Discrete(2))
    source = RecurrentRolloutSource(CollectorSpec(COUNTING_ID, 2, seed=0), num_steps, 0.99, 0.95)
    return policy, source


def test_reset_state_zeroes_exactly_the_rows_that_start_an_episode():
    state = torch.arange(12.0).reshape(3, 2, 2) + 1
    out = reset_state(state, torch.tensor([False, True, False]))
    assert torch.equal(out[1], torch.zeros(2, 2)) and torch.equal(out[[0, 2]], state[[0, 2]])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("pattern", ["padded", "between-starts"])
def test_sequence_replay_equals_stepping_with_resets(kind, pattern, monkeypatch):
    torch.manual_seed(0)
    core = RecurrentCore(kind, 3, 5, num_layers=2)
    x, state = torch.randn(7, 4, 3), torch.randn(4, 2, core.state_size)
    starts = torch.zeros(7, 4, dtype=torch.bool)
    if pattern == "padded":  # 7 pieces, the longest of 7 steps: 7 * 7 padded steps for 28
        starts[0, 1] = starts[3, 0] = starts[3, 2] = starts[5, 3] = True
    else:  # sub-env 0 starts an episode at every step beside sub-envs 1-3's 7-step pieces: 7 * 10 padded steps for 28
        starts[:, 0] = True
    calls, between_starts = [], core.between_starts
    monkeypatch.setattr(core, "between_starts", lambda *args: calls.append(args) or between_starts(*args))
    out = core.sequence(x, starts, state)
    assert len(calls) == (pattern == "between-starts")
    expected, carried = [], state
    for t in range(7):
        step, carried = core(x[t : t + 1], reset_state(carried, starts[t]))
        expected.append(step[0])
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-6, atol=1e-6)
    assert core.sequence(x, torch.zeros(7, 4, dtype=torch.bool), state).shape == (7, 4, 5)  # no episode start: one call


def test_rollout_carries_the_state_and_resets_it_exactly_where_episodes_start():
    policy, source = counting_source()
    first = source.next_rollout(policy, 0)
    # Sub-env 0's episodes start at steps 0, 3, 6; sub-env 1's at 0 and 4 (time-major: [t, env]).
    starts = first["episode_starts"].reshape(8, 2)
    assert starts[:, 0].tolist() == [True, False, False, True, False, False, True, False]
    assert starts[:, 1].tolist() == [True, False, False, False, True, False, False, False]
    assert torch.equal(first["initial_state"], torch.zeros(2, 1, 8))  # an LSTM's h and c, both zero at the first reset
    # After 8 steps sub-env 1's episode just ended (truncated at step 4 of its second episode): its carried state is exactly zero.
    assert source.starts.tolist() == [False, True]
    assert torch.equal(source.state[1], torch.zeros(1, 8)) and source.state[0].abs().min() > 0
    # Stepping through the rollout from its initial state, resetting where episodes start, reaches the carried state.
    state = first["initial_state"]
    with torch.no_grad():
        for obs, start in zip(first["obs"].reshape(8, 2, 1), starts):
            state = policy.agent.remember(obs, reset_state(state, start))[1]
    torch.testing.assert_close(reset_state(state, torch.tensor([False, True])), source.state, rtol=1e-6, atol=1e-7)
    carried = source.state.clone()
    assert torch.equal(source.next_rollout(policy, 16)["initial_state"], carried)


@pytest.mark.parametrize("critic_shares_core", [True, False])
def test_replaying_a_rollout_gives_the_log_probs_and_values_it_was_collected_with(critic_shares_core):
    policy, source = counting_source("gru", num_steps=8, critic_shares_core=critic_shares_core)
    source.next_rollout(policy, 0)
    batch = source.next_rollout(policy, 16)  # starts from a carried, non-zero state
    assert batch["initial_state"].abs().sum() > 0
    with torch.no_grad():
        _, logprob, _, value = whole_rollout(policy.agent, batch).get_action_and_value(batch["obs"], batch["actions"])
        torch.testing.assert_close(logprob, batch["logprobs"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(value, batch["values"], rtol=1e-5, atol=1e-6)
        minibatches = list(sequence_minibatches(policy.agent, batch, 2, ("obs", "actions", "logprobs")))
        assert len(minibatches) == 2
        for replay, obs, actions, logprobs in minibatches:
            torch.testing.assert_close(replay.get_action_and_value(obs, actions)[1], logprobs, rtol=1e-5, atol=1e-6)


def test_evaluation_carries_the_state_and_the_memory_env_is_solved_only_with_a_core():
    """The cue shows at the first step and is asked for DELAY (10) steps later: +1 for naming it, -1 otherwise."""
    run = dict(total_timesteps=40_000, num_envs=8, num_steps=33, num_minibatches=2, learning_rate=3e-3, anneal_lr=False,
               hidden_sizes=[32], vectorization="sync", seed=1)  # fmt: skip
    recurrent = lightrl.PPO(CUE_RECALL_ID, recurrent="lstm", recurrent_size=32, **run)
    memoryless = lightrl.PPO(CUE_RECALL_ID, **run)
    fit(recurrent)
    fit(memoryless)
    assert episode_returns(recurrent, 50, seed=123) == [1.0] * 50
    returns = episode_returns(memoryless, 50, seed=123)
    # Without memory the question looks the same whatever the cue: one fixed answer, right for one cue only.
    assert sorted(set(returns)) == [-1.0, 1.0] and abs(np.mean(returns)) <= 0.3


def test_a2c_trains_a_gru_with_its_own_critic_core():
    model = lightrl.A2C("CartPole-v1", recurrent="gru", recurrent_size=8, critic_shares_core=False, total_timesteps=400, vectorization="sync")
    before = [p.detach().clone() for p in model.policy.agent.critic_core.parameters()]
    fit(model)
    assert model.env_steps == 400 and model.policy.agent.state_shape == (1, 16)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.policy.agent.critic_core.parameters()))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: lightrl.DQN("NoSuchEnv-v0", recurrent="lstm"), "recurrent='lstm' is not supported by DQN; use PPO or A2C"),
        (lambda: lightrl.SAC("NoSuchEnv-v0", recurrent="gru"), "recurrent='gru' is not supported by SAC; use PPO or A2C"),
        (lambda: lightrl.TD3("NoSuchEnv-v0", recurrent="lstm"), "recurrent='lstm' is not supported by TD3; use PPO or A2C"),
        (lambda: lightrl.PPO("NoSuchEnv-v0", recurrent="rnn"), "recurrent must be one of ('lstm', 'gru') or None, got 'rnn'."),
        (lambda: lightrl.PPO("NoSuchEnv-v0", recurrent="lstm", num_envs=4, num_minibatches=3),
         "with recurrent='lstm' each minibatch holds whole sequences: num_minibatches (3) must divide their number per rollout, "
         "num_envs * num_steps / sequence_length (4); e.g. num_minibatches=1, or a shorter sequence_length."),
        (lambda: lightrl.PPO("NoSuchEnv-v0", recurrent="gru", num_steps=128, sequence_length=48),
         "sequence_length (48) must divide num_steps (128): each rollout is cut into sequences of that length; or None (whole rollouts)."),
        (lambda: lightrl.A2C("NoSuchEnv-v0", recurrent="gru", recurrent_size=0), "recurrent_size must be a positive integer, got 0."),
        (lambda: lightrl.PPO("NoSuchEnv-v0", recurrent="lstm", compile=True), "compile=True does not support recurrent='lstm' yet; set compile=False."),
    ],
    ids=["dqn", "sac", "td3", "unknown-kind", "minibatches", "sequence-length", "size", "compile"],
)
def test_bad_recurrent_settings_are_refused_before_any_env(make, message):
    with pytest.raises(ValueError) as error:  # "NoSuchEnv-v0" is never made: the check comes first
        make()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_hide_velocities_keeps_cartpoles_positions():
    env = HideVelocities(gym.make("CartPole-v1"))
    full = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=3)
    full_obs, _ = full.reset(seed=3)
    assert env.observation_space.shape == (2,) and obs.tolist() == full_obs[[0, 2]].tolist()
    obs, *_ = env.step(1)
    full_obs, *_ = full.step(1)
    assert obs.tolist() == full_obs[[0, 2]].tolist()
    with pytest.raises(ValueError, match="pass keep="):
        HideVelocities(gym.make(COUNTING_ID))


def test_hide_velocities_from_env_wrappers_gives_the_policy_positions_only():
    model = lightrl.PPO("CartPole-v1", recurrent="lstm", env_wrappers=[{"class_path": "lightrl.envs.partial.HideVelocities"}],
                        total_timesteps=256, num_envs=2, num_steps=64, num_minibatches=2, recurrent_size=8, vectorization="sync")  # fmt: skip
    assert model.observation_space.shape == (2,)
    fit(model)
    assert model.rollout.obs.shape == (64, 2, 2)


def test_sequence_length_cuts_rollouts_into_chunks_that_start_from_the_collected_state():
    policy, source = counting_source("lstm", num_steps=8)
    source.sequence_length = 4
    batch = source.next_rollout(policy, 0)
    # 2 chunks x 2 sub-envs: sequence k * 2 + i is chunk k of sub-env i, each 4 steps, flat time-major.
    assert batch["initial_state"].shape == (4, 1, 8)
    starts = batch["episode_starts"].reshape(4, 4)
    assert starts[:, 0].tolist() == [True, False, False, True]  # sub-env 0, steps 0-3
    assert starts[:, 2].tolist() == [False, False, True, False]  # sub-env 0, steps 4-7 (an episode starts at 6)
    assert starts[:, 3].tolist() == [True, False, False, False]  # sub-env 1, steps 4-7
    assert torch.equal(batch["obs"].reshape(4, 4)[:, 2], torch.tensor([1.0, 2.0, 0.0, 1.0]))  # sub-env 0 counts 1, 2, then resets
    with torch.no_grad():
        _, logprob, _, value = whole_rollout(policy.agent, batch).get_action_and_value(batch["obs"], batch["actions"])
    torch.testing.assert_close(logprob, batch["logprobs"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(value, batch["values"], rtol=1e-5, atol=1e-6)


def test_ppo_minibatches_of_chunks_train_to_the_budget():
    # 2 sub-envs x 64 steps in chunks of 16: 8 sequences, 4 minibatches of 2.
    model = lightrl.PPO("CartPole-v1", recurrent="lstm", recurrent_size=8, num_envs=2, num_steps=64, sequence_length=16, num_minibatches=4,
                        total_timesteps=512, vectorization="sync")  # fmt: skip
    assert model.num_sequences == 8
    fit(model)
    assert model.env_steps == 512 and model.trainer.global_step == 4 * 4 * 4  # rollouts x epochs x minibatches


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_recipe_solves_cartpole_without_velocities_on_seeds_1_to_3():
    """experiments/ppo_lstm_cartpole_novel.yaml, 100k steps: the issue's target, >= 475 on 3 of 3 seeds (docs/memory.md
    has seeds 1-8)."""
    config = recipe("ppo_lstm_cartpole_novel.yaml")
    means = []
    for seed in (1, 2, 3):
        model = lightrl.PPO(**{**config, "seed": seed})
        fit(model)
        means.append(lightrl.evaluate(model, num_episodes=20, seed=1000)[0])
    assert all(mean >= 475 for mean in means), means
