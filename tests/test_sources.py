"""Experience sources: the declared interface, what the async actor's copy holds, and a state round trip."""

from __future__ import annotations

import pickle

import torch

from lightrl import DQN
from lightrl.data.collector import CollectorSpec
from lightrl.data.replay_source import ReplaySource, updates_due
from lightrl.data.rollout_source import RolloutSource
from lightrl.data.source import ExperienceSource

SPEC = CollectorSpec("CartPole-v1", num_envs=2, seed=3, total_timesteps=1000)


def replay_source(**kwargs) -> ReplaySource:
    return ReplaySource(SPEC, buffer_size=64, batch_size=4, gamma=0.9, n_step=1, train_frequency=8, save_replay_buffer=True, **kwargs)


def test_both_families_offer_the_declared_interface_and_their_actor_copy_holds_no_envs_or_storage():
    rollouts = RolloutSource(SPEC, num_steps=4, gamma=0.9, gae_lambda=0.8)
    replay = replay_source()
    try:
        for source in (rollouts, replay):
            assert isinstance(source, ExperienceSource)
            copy = pickle.loads(pickle.dumps(source))  # what the async actor process gets
            assert set(vars(copy)) == {"spec", *type(source).actor_fields}
        assert pickle.loads(pickle.dumps(rollouts)).num_steps == 4 and pickle.loads(pickle.dumps(replay)).train_frequency == 8
    finally:
        rollouts.close()
        replay.close()
    assert rollouts.closed and replay.closed


def test_replay_source_state_round_trip_continues_the_same_samples():
    model = DQN("CartPole-v1", num_envs=2, learning_starts=0, hidden_sizes=[8])
    first = replay_source()
    first.allocate(model.observation_space, model.action_space, torch.device("cpu"), seed=5)
    for step in range(6):
        first.collect_step(model.policy, env_steps=2 * step)
    state = first.state_dict()
    assert set(state) == {"collector", "sampler", "replay_buffer"}
    second = replay_source()
    second.allocate(model.observation_space, model.action_space, torch.device("cpu"), seed=6)
    second.load_state_dict(state)
    assert not second.resumed_without_replay_buffer
    a, b = first.sample(model.policy, 3), second.sample(model.policy, 3)
    assert a["observations"].shape == (3, 4, 4)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    third = replay_source()
    third.allocate(model.observation_space, model.action_space, torch.device("cpu"), seed=6)
    third.load_state_dict({key: value for key, value in state.items() if key != "replay_buffer"})
    assert third.resumed_without_replay_buffer and len(third.replay_buffer) == 0
    for source in (first, second, third):
        source.close()


def test_updates_due_counts_phases_past_learning_starts():
    # train_frequency 10, 3 gradient steps a phase, learning starts after env step 100
    assert updates_due(90, 100, 100, 10, 3) == 0
    assert updates_due(100, 110, 100, 10, 3) == 3
    assert updates_due(95, 125, 100, 10, 3) == 6  # the phases at 110 and 120
