"""Exact-value tests of the replay buffer: timeouts, n-step returns, wrap-around, save/load, memory."""

from __future__ import annotations

import io
import random

import pytest
import torch

from lightrl.data.replay import ReplayBuffer

# Sub-env e at step t observes [t, e]; the true last observation of an episode ending at t is [-(t + 1), e].
# Every observation is unique, so a sample can be traced back to its transition by its observation.


def make_buffer(capacity: int = 100, num_envs: int = 1, **kwargs) -> ReplayBuffer:
    return ReplayBuffer(capacity, num_envs, (2,), torch.float32, (), torch.int64, **kwargs)


def obs_row(t: int, num_envs: int) -> torch.Tensor:
    return torch.tensor([[float(t), float(e)] for e in range(num_envs)])


def final_row(t: int, num_envs: int) -> torch.Tensor:
    return torch.tensor([[-float(t + 1), float(e)] for e in range(num_envs)])


def add_step(rb: ReplayBuffer, t: int, terminated=None, truncated=None, reward=None) -> None:
    """Add step ``t`` of the stream; ``terminated``/``truncated`` list the sub-envs whose episode ends."""
    n = rb.num_envs
    term = torch.zeros(n, dtype=torch.bool)
    trunc = torch.zeros(n, dtype=torch.bool)
    term[list(terminated or [])] = True
    trunc[list(truncated or [])] = True
    rewards = torch.full((n,), float(t + 1)) if reward is None else torch.as_tensor(reward, dtype=torch.float32)
    finals = final_row(t, n)
    final_obs = {e: finals[e] for e in range(n) if term[e] or trunc[e]}
    actions = torch.tensor([10 * t + e for e in range(n)])
    rb.add(obs_row(t, n), actions, rewards, term, trunc, obs_row(t + 1, n), final_obs)


def sampled_by_start(rb: ReplayBuffer, n_step: int = 1, gamma: float = 0.5, batch: int = 4000, seed: int = 0):
    """Sample a large batch and group it by start (t, e); every start must always give the same values."""
    data = {k: v.tolist() for k, v in rb.sample(batch, n_step, gamma, torch.Generator().manual_seed(seed)).items()}
    out = {}
    for i in range(batch):
        key = (int(data["observations"][i][0]), int(data["observations"][i][1]))
        value = (
            data["actions"][i],
            data["rewards"][i],
            tuple(data["next_observations"][i]),
            data["terminations"][i],
            data["discounts"][i],
        )
        assert out.setdefault(key, value) == value
    return out


def test_one_step_samples_follow_each_column_including_the_newest_step():
    rb = make_buffer(capacity=20, num_envs=2)
    for t in range(4):
        add_step(rb, t)
    assert len(rb) == 8
    got = sampled_by_start(rb, gamma=0.9)
    assert set(got) == {(t, e) for t in range(4) for e in range(2)}
    for (t, e), (action, reward, next_obs, term, discount) in got.items():
        assert action == 10 * t + e
        assert reward == t + 1
        assert next_obs == (t + 1, e)  # t = 3: the pending next_obs row
        assert term == 0.0
        assert discount == pytest.approx(0.9)


def test_timeout_bootstraps_from_final_obs_and_terminal_does_not():
    rb = make_buffer(num_envs=2)
    add_step(rb, 0)
    add_step(rb, 1, terminated=[0], truncated=[1])
    add_step(rb, 2)
    got = sampled_by_start(rb)
    assert got[(1, 1)][2:4] == ((-2.0, 1.0), 0.0)  # truncated: final obs, bootstrapped
    assert got[(1, 0)][2:4] == ((0.0, 0.0), 1.0)  # terminated: next obs masked, not bootstrapped
    assert got[(0, 1)][2] == (1.0, 1.0)
    assert got[(2, 0)][2] == (3.0, 0.0)


def test_terminated_and_truncated_together_counts_as_terminated():
    rb = make_buffer()
    add_step(rb, 0, terminated=[0], truncated=[0])
    assert sampled_by_start(rb)[(0, 0)][2:4] == ((0.0, 0.0), 1.0)
    assert not rb.final_used.any()


def test_n_step_returns_with_termination_and_truncation_in_the_window():
    # Rewards r_t = t + 1; terminated at t = 3, truncated at t = 5; gamma = 0.5, n = 3.
    rb = make_buffer()
    for t in range(10):
        add_step(rb, t, terminated=[0] if t == 3 else None, truncated=[0] if t == 5 else None)
    got = sampled_by_start(rb, n_step=3, gamma=0.5)
    expected = {  # start: (rewards, next_observations, terminations, discounts)
        0: (1 + 0.5 * 2 + 0.25 * 3, (3.0, 0.0), 0.0, 0.125),
        1: (2 + 0.5 * 3 + 0.25 * 4, (0.0, 0.0), 1.0, 0.125),
        2: (3 + 0.5 * 4, (0.0, 0.0), 1.0, 0.25),
        3: (4, (0.0, 0.0), 1.0, 0.5),
        4: (5 + 0.5 * 6, (-6.0, 0.0), 0.0, 0.25),
        5: (6, (-6.0, 0.0), 0.0, 0.5),
        6: (7 + 0.5 * 8 + 0.25 * 9, (9.0, 0.0), 0.0, 0.125),
        7: (8 + 0.5 * 9 + 0.25 * 10, (10.0, 0.0), 0.0, 0.125),  # ends on the newest step: next obs is pending
    }
    assert set(got) == {(t, 0) for t in expected}  # 8 and 9 have no full window yet
    for t, (reward, next_obs, term, discount) in expected.items():
        assert got[(t, 0)][1:] == (pytest.approx(reward), next_obs, term, pytest.approx(discount))


def test_n_step_samples_newest_steps_only_when_the_episode_ended_before_the_window_runs_out():
    rb = make_buffer(num_envs=2)
    for t in range(5):
        add_step(rb, t, terminated=[0] if t == 3 else None)
    got = sampled_by_start(rb, n_step=3, gamma=0.5)
    assert set(got) == {(t, 0) for t in range(4)} | {(t, 1) for t in range(3)}
    assert got[(3, 0)][1:] == (4.0, (0.0, 0.0), 1.0, 0.5)

    short = make_buffer()
    add_step(short, 0)
    with pytest.raises(ValueError, match="complete 3-step window"):
        short.sample(4, n_step=3)
    add_step(short, 1, truncated=[0])  # the episode ended: both steps have their window now
    assert sampled_by_start(short, n_step=3) == {
        (0, 0): (0, 1 + 0.5 * 2, (-2.0, 0.0), 0.0, 0.25),
        (1, 0): (10, 2.0, (-2.0, 0.0), 0.0, 0.5),
    }


def test_n_step_matches_a_reference_on_a_random_stream_with_wrap_around():
    num_envs, capacity, n_step, gamma, steps = 3, 24, 4, 0.9, 40
    rng = random.Random(0)
    rb = make_buffer(capacity=capacity, num_envs=num_envs)
    log = []  # (reward, terminated, truncated) per step and sub-env
    for t in range(steps):
        ends = [rng.random() < 0.15 for _ in range(num_envs)]
        term = [e for e in range(num_envs) if ends[e] and rng.random() < 0.5]
        trunc = [e for e in range(num_envs) if ends[e] and e not in term]
        rewards = [rng.uniform(-1, 1) for _ in range(num_envs)]
        add_step(rb, t, terminated=term, truncated=trunc, reward=rewards)
        log.append([(rewards[e], e in term, e in trunc) for e in range(num_envs)])

    expected = {}
    for t in range(steps - rb.num_rows, steps):
        for e in range(num_envs):
            ret, k, term, end = 0.0, 0, 0.0, None
            for j in range(n_step):
                if t + j >= steps:
                    break
                reward, terminated, truncated = log[t + j][e]
                ret += gamma**j * reward
                k += 1
                if terminated or truncated:
                    term, end = float(terminated), t + j
                    break
            if end is None and k < n_step:
                continue  # window not written yet
            if end is None:
                next_obs = (float(t + n_step), float(e))
            else:
                next_obs = (0.0, 0.0) if term else (-float(end + 1), float(e))
            expected[(t, e)] = (10 * t + e, ret, next_obs, term, gamma**k)
    got = sampled_by_start(rb, n_step=n_step, gamma=gamma, batch=6000)
    assert set(got) == set(expected)
    for key, (action, ret, next_obs, term, discount) in expected.items():
        assert got[key] == (action, pytest.approx(ret, abs=1e-5), next_obs, term, pytest.approx(discount))


@pytest.mark.parametrize("num_envs", [1, 3])
def test_numpy_views_store_and_sample_exactly_what_the_tensor_path_does(num_envs):
    # On the CPU add() and one-step sampling go through numpy views; on other devices through the tensors.
    host, tensors = make_buffer(capacity=30, num_envs=num_envs), make_buffer(capacity=30, num_envs=num_envs)
    tensors._index_views(host=False)
    rng = random.Random(1)
    drawn_terminal = drawn_final_obs = False
    for t in range(50):  # wraps around the 30-transition ring
        term = [e for e in range(num_envs) if rng.random() < 0.1]
        trunc = [e for e in range(num_envs) if e not in term and rng.random() < 0.15]
        for rb in (host, tensors):
            add_step(rb, t, terminated=term, truncated=trunc)
        if t % 7 == 6:
            a, b = (rb.sample(64, 1, 0.9, torch.Generator().manual_seed(t)) for rb in (host, tensors))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            drawn_terminal |= bool(a["terminations"].any())
            drawn_final_obs |= bool(a["next_observations"][:, 0].lt(0).any())
    assert drawn_terminal and drawn_final_obs  # both kinds of episode end were compared
    assert all(torch.equal(x, y) for x, y in zip(host.state_dict().values(), tensors.state_dict().values()) if torch.is_tensor(x))


def test_wrap_around_overwrites_the_oldest_row_and_evicts_its_final_obs():
    rb = make_buffer(capacity=5, num_envs=2)  # rounded up to 3 rows of 2
    assert rb.num_rows == 3
    for t in range(4):
        add_step(rb, t, truncated=[1] if t == 1 else None)
    assert len(rb) == 6 and rb.full and rb.pos == 1
    assert int(rb.final_used.sum()) == 1
    got = sampled_by_start(rb)
    assert set(got) == {(t, e) for t in (1, 2, 3) for e in range(2)}
    assert got[(1, 1)][2] == (-2.0, 1.0)

    add_step(rb, 4)  # overwrites step 1
    assert len(rb) == 6 and rb.pos == 2
    assert int(rb.final_used.sum()) == 0
    assert (rb.final_slot == -1).all()
    got = sampled_by_start(rb)
    assert set(got) == {(t, e) for t in (2, 3, 4) for e in range(2)}
    assert got[(4, 0)][2] == (5.0, 0.0)


def test_side_store_grows_and_reuses_freed_slots():
    rb = make_buffer(capacity=6, num_envs=2)
    for t in range(3):
        add_step(rb, t, truncated=[0, 1])
    assert rb.final_obs.shape[0] == 8 and int(rb.final_used.sum()) == 6
    for t in range(3, 9):
        add_step(rb, t, truncated=[0, 1])
    assert rb.final_obs.shape[0] == 8 and int(rb.final_used.sum()) == 6
    got = sampled_by_start(rb)
    assert all(got[(t, e)][2] == (-float(t + 1), float(e)) for t in (6, 7, 8) for e in range(2))


def test_cut_stream_is_stored_as_a_truncation():
    rb = make_buffer(num_envs=2)
    add_step(rb, 0)
    # Sub-env 1 was reset by hand: the new obs is not the previous next_obs [1, 1].
    obs = torch.tensor([[1.0, 0.0], [50.0, 1.0]])
    rb.add(obs, torch.tensor([10, 11]), torch.ones(2), torch.zeros(2), torch.zeros(2), obs + torch.tensor([1.0, 0.0]), {})
    got = sampled_by_start(rb)
    assert got[(0, 1)][2:4] == ((1.0, 1.0), 0.0)
    assert got[(0, 0)][2:4] == ((1.0, 0.0), 0.0)
    assert got[(50, 1)][2] == (51.0, 1.0)
    assert rb.truncations[0].tolist() == [False, True]


def test_the_next_obs_tensor_passed_back_continues_the_stream_from_the_buffers_copy():
    """A vector env may reuse its observation buffer (copy=False): the tensor the collector passes back as obs
    then already holds the next step's values. The buffer took its copy at the previous add, so it continues."""
    rb = make_buffer(num_envs=2)
    shared = obs_row(1, 2)
    rb.add(obs_row(0, 2), torch.tensor([0, 1]), torch.ones(2), torch.zeros(2), torch.zeros(2), shared, {})
    shared.copy_(obs_row(2, 2))  # the env wrote step 2 into the same buffer
    rb.add(shared, torch.tensor([10, 11]), torch.ones(2), torch.zeros(2), torch.zeros(2), shared, {})
    assert not rb.truncations[0].any()  # not taken for an env reset by hand
    got = sampled_by_start(rb)
    assert got[(0, 1)][2] == (1.0, 1.0) and got[(1, 1)][0] == 11  # step 1 starts from the copy [1, e]


def test_sample_keeps_dtypes_and_shapes():
    rb = ReplayBuffer(8, 2, (4, 3, 3), torch.uint8, (6,), torch.float32)
    obs = torch.randint(0, 255, (2, 4, 3, 3), dtype=torch.uint8)
    rb.add(obs, torch.randn(2, 6), [1.0, 2.0], [False, True], [False, False], obs, {1: obs[1]})
    data = rb.sample(5, generator=torch.Generator().manual_seed(0))
    assert data["observations"].dtype == torch.uint8 and data["observations"].shape == (5, 4, 3, 3)
    assert data["next_observations"].dtype == torch.uint8 and data["next_observations"].shape == (5, 4, 3, 3)
    assert data["actions"].dtype == torch.float32 and data["actions"].shape == (5, 6)
    for key in ("rewards", "terminations", "discounts"):
        assert data[key].dtype == torch.float32 and data[key].shape == (5,)


def test_state_dict_round_trip_continues_identically():
    rb = make_buffer(capacity=12, num_envs=3)
    for t in range(7):
        add_step(rb, t, terminated=[0] if t % 3 == 0 else None, truncated=[1, 2] if t % 2 else None)
    buffer = io.BytesIO()
    torch.save(rb.state_dict(), buffer)
    buffer.seek(0)
    restored = make_buffer(capacity=12, num_envs=3)
    restored.load_state_dict(torch.load(buffer))

    for (name, a), b in zip(rb.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b)), name
    for t in range(7, 12):
        for buf in (rb, restored):
            add_step(buf, t, truncated=[2] if t == 9 else None)
    for n_step in (1, 3):
        a = rb.sample(64, n_step=n_step, generator=torch.Generator().manual_seed(3))
        b = restored.sample(64, n_step=n_step, generator=torch.Generator().manual_seed(3))
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_load_state_dict_rejects_a_different_buffer():
    rb = make_buffer(capacity=12, num_envs=3)
    with pytest.raises(ValueError, match="same capacity"):
        make_buffer(capacity=24, num_envs=3).load_state_dict(rb.state_dict())
    with pytest.raises(ValueError, match="missing"):
        rb.load_state_dict({"observations": rb.observations})


def test_observations_are_stored_once():
    rb = ReplayBuffer(10_000, 4, (17,), torch.float32, (6,), torch.float32)
    obs_bytes, action_bytes = 17 * 4, 6 * 4
    # obs ring (one extra row) + actions + reward + 2 flags + final-obs slot index + initial side store.
    expected = 2501 * 4 * obs_bytes + 10_000 * (action_bytes + 4 + 1 + 1 + 4) + 4 * (obs_bytes + 1)
    assert rb.nbytes == expected
    assert rb.bytes_per_transition == expected / 10_000
    assert rb.bytes_per_transition < obs_bytes + action_bytes + 16  # storing obs twice would need > 2 * 68


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 3, "num_envs": 4}, "at least num_envs"),
        ({"capacity": 3, "num_envs": 0}, "num_envs"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_buffer(**kwargs)


def test_add_and_sample_errors():
    rb = make_buffer(num_envs=2)
    with pytest.raises(ValueError, match="empty"):
        rb.sample(4)
    with pytest.raises(ValueError, match=r"obs must have shape \(2, 2\)"):
        rb.add(torch.zeros(3, 2), [0, 0], [0, 0], [0, 0], [0, 0], torch.zeros(2, 2), {})
    with pytest.raises(ValueError, match="no entry in final_obs"):
        rb.add(torch.zeros(2, 2), [0, 0], [0, 0], [0, 0], [0, 1], torch.zeros(2, 2), {})
    with pytest.raises(ValueError, match=r"final_obs\[1\] must have shape"):
        rb.add(torch.zeros(2, 2), [0, 0], [0, 0], [0, 0], [0, 1], torch.zeros(2, 2), {1: torch.zeros(3)})
    assert rb.num_adds == 0  # a rejected add leaves the buffer untouched
    add_step(rb, 0)
    for kwargs, match in [({"batch_size": 0}, "batch_size"), ({"n_step": 0}, "n_step"), ({"gamma": 1.5}, "gamma")]:
        with pytest.raises(ValueError, match=match):
            rb.sample(**{"batch_size": 4, **kwargs})
