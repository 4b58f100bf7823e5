"""GAE and the policy-gradient loss terms, against hand-computed values and a plain python reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lightrl.losses import (
    clipped_surrogate_loss,
    explained_variance,
    gae,
    normalize,
    policy_gradient_loss,
    value_loss,
)


def gae_reference(rewards, values, next_values, terminated, truncated, gamma, gae_lambda):
    """GAE written out element by element, straight from the definition."""
    T, N = len(rewards), len(rewards[0])
    advantages = [[0.0] * N for _ in range(T)]
    for i in range(N):
        running = 0.0
        for t in reversed(range(T)):
            bootstrap = 0.0 if terminated[t][i] else gamma * next_values[t][i]
            delta = rewards[t][i] + bootstrap - values[t][i]
            done = terminated[t][i] or truncated[t][i]
            running = delta + (0.0 if done else gamma * gae_lambda * running)
            advantages[t][i] = running
    returns = [[advantages[t][i] + values[t][i] for i in range(N)] for t in range(T)]
    return advantages, returns


def test_gae_hand_computed_terminated_vs_truncated():
    # T=3 steps, N=2 envs, gamma=0.5, lambda=0.5 (so gamma * lambda = 0.25).
    # Env 0 terminates at t=1; env 1 is truncated at t=1, where V(final_obs) = 4.
    rewards = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    values = torch.tensor([[0.5, 1.0], [1.0, 2.0], [2.0, 1.0]])
    next_values = torch.tensor([
        [1.0, 2.0],   # V(s_1) of each env
        [10.0, 4.0],  # env 0: value after termination, must be ignored; env 1: V(final_obs) = 4
        [4.0, 2.0],   # values of the observations after the rollout
    ])
    terminated = torch.tensor([[0, 0], [1, 0], [0, 0]])
    truncated = torch.tensor([[0, 0], [0, 1], [0, 0]])
    # Env 0: deltas  t0 = 1 + 0.5*1 - 0.5 = 1.0
    #                t1 = 2 + 0 (terminated: no bootstrap) - 1 = 1.0
    #                t2 = 3 + 0.5*4 - 2 = 3.0
    #        advantages t2 = 3.0; t1 = 1.0 (the recursion stops at the end of the episode);
    #                   t0 = 1.0 + 0.25*1.0 = 1.25
    #        returns = advantages + values = 1.75, 2.0, 5.0
    # Env 1: deltas  t0 = 1 + 0.5*2 - 1 = 1.0
    #                t1 = 2 + 0.5*4 (truncated: bootstrap from V(final_obs)) - 2 = 2.0
    #                t2 = 3 + 0.5*2 - 1 = 3.0
    #        advantages t2 = 3.0; t1 = 2.0 (the recursion stops here too); t0 = 1.0 + 0.25*2.0 = 1.5
    #        returns = 2.5, 4.0, 4.0
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, gamma=0.5, gae_lambda=0.5)
    assert torch.equal(advantages, torch.tensor([[1.25, 1.5], [1.0, 2.0], [3.0, 3.0]]))
    assert torch.equal(returns, torch.tensor([[1.75, 2.5], [2.0, 4.0], [5.0, 4.0]]))


def test_gae_without_episode_ends_is_discounted_sum_of_deltas():
    # One env, no episode end: delta_t = r + gamma*V' - V = 1 + 0.5*1 - 1 = 0.5 at every step;
    # A_2 = 0.5, A_1 = 0.5 + 0.25*0.5 = 0.625, A_0 = 0.5 + 0.25*0.625 = 0.65625.
    ones = torch.ones(3, 1)
    zeros = torch.zeros(3, 1)
    advantages, returns = gae(ones, ones, ones, zeros, zeros, gamma=0.5, gae_lambda=0.5)
    assert torch.equal(advantages, torch.tensor([[0.65625], [0.625], [0.5]]))
    assert torch.equal(returns, advantages + 1.0)


@pytest.mark.parametrize("gamma, gae_lambda", [(0.99, 0.95), (0.9, 1.0), (0.98, 0.0)])
def test_gae_matches_python_reference_on_random_data(gamma, gae_lambda):
    generator = torch.Generator().manual_seed(0)
    T, N = 17, 5
    rewards = torch.randn(T, N, generator=generator)
    values = torch.randn(T, N, generator=generator)
    next_values = torch.randn(T, N, generator=generator)
    terminated = torch.rand(T, N, generator=generator) < 0.2
    truncated = torch.rand(T, N, generator=generator) < 0.2
    terminated[3, 1] = truncated[3, 1] = True  # gymnasium allows both at once (a terminal state at the time limit)
    assert (terminated & truncated).any() and (terminated & ~truncated).any() and (truncated & ~terminated).any()

    advantages, returns = gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda)
    expected_adv, expected_ret = gae_reference(
        rewards.tolist(), values.tolist(), next_values.tolist(), terminated.tolist(), truncated.tolist(), gamma, gae_lambda
    )
    assert_close(advantages, torch.tensor(expected_adv))
    assert_close(returns, torch.tensor(expected_ret))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gae_numpy_path_equals_the_torch_path(dtype):
    """CPU float tensors take a numpy recursion; tensors that need gradients take the torch one: same bits."""
    generator = torch.Generator().manual_seed(1)
    T, N = 33, 6
    rewards, values, next_values = (torch.randn(T, N, generator=generator, dtype=dtype) for _ in range(3))
    terminated = torch.rand(T, N, generator=generator) < 0.1
    truncated = torch.rand(T, N, generator=generator) < 0.1
    numpy_adv, numpy_ret = gae(rewards, values, next_values, terminated, truncated, 0.99, 0.95)
    torch_adv, torch_ret = gae(rewards, values.clone().requires_grad_(), next_values, terminated, truncated, 0.99, 0.95)
    assert torch_adv.requires_grad  # the torch path ran
    assert torch.equal(numpy_adv, torch_adv.detach()) and torch.equal(numpy_ret, torch_ret.detach())
    assert numpy_adv.dtype == dtype


def test_gae_lambda_one_gives_discounted_returns():
    # lambda = 1 with no episode end: returns are the discounted reward sums bootstrapped at the end.
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.3], [-0.2], [0.7]])
    next_values = torch.tensor([[-0.2], [0.7], [5.0]])
    zeros = torch.zeros(3, 1)
    _, returns = gae(rewards, values, next_values, zeros, zeros, gamma=0.5, gae_lambda=1.0)
    # R_2 = 3 + 0.5*5 = 5.5, R_1 = 2 + 0.5*5.5 = 4.75, R_0 = 1 + 0.5*4.75 = 3.375
    assert_close(returns, torch.tensor([[3.375], [4.75], [5.5]]))


@pytest.mark.parametrize(
    "shapes",
    [
        [(3, 2), (3, 2), (3, 2), (3, 2), (3, 3)],
        [(3, 2), (2, 2), (3, 2), (3, 2), (3, 2)],
        [(3,), (3,), (3,), (3,), (3,)],  # one shape, but not [T, N]
    ],
)
def test_gae_shape_mismatch_raises(shapes):
    tensors = [torch.zeros(shape) for shape in shapes]
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        gae(*tensors, gamma=0.99, gae_lambda=0.95)


# ----------------------------------------------------------------------------- policy-gradient losses


def test_clipped_surrogate_loss_exact():
    ratios = [0.5, 0.5, 1.0, 1.5, 1.5, 1.1]
    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0, 2.0])
    old_logprob = torch.full((6,), -1.0)
    new_logprob = (old_logprob + torch.tensor(ratios).log()).requires_grad_()
    # clip_coef 0.2: clamp(ratio) = [0.8, 0.8, 1.0, 1.2, 1.2, 1.1]; the loss is max(-A*r, -A*clamp(r)):
    #   r=0.5, A= 1: max(-0.5, -0.8) = -0.5  (no gain from the clip when the objective already fell)
    #   r=0.5, A=-1: max( 0.5,  0.8) =  0.8  (pessimistic: the clipped term)
    #   r=1.0, A=-1: max( 1.0,  1.0) =  1.0
    #   r=1.5, A= 1: max(-1.5, -1.2) = -1.2
    #   r=1.5, A=-1: max( 1.5,  1.2) =  1.5
    #   r=1.1, A= 2: max(-2.2, -2.2) = -2.2
    #   mean = (-0.5 + 0.8 + 1.0 - 1.2 + 1.5 - 2.2) / 6 = -0.6 / 6 = -0.1
    pg_loss, stats = clipped_surrogate_loss(new_logprob, old_logprob, advantages, clip_coef=0.2)
    assert_close(pg_loss, torch.tensor(-0.1))
    # |r - 1| > 0.2 for r = 0.5, 0.5, 1.5, 1.5: 4 of 6
    assert_close(stats["clipfrac"], torch.tensor(4 / 6))
    assert_close(stats["old_approx_kl"], torch.tensor(sum(-math.log(r) for r in ratios) / 6))
    assert_close(stats["approx_kl"], torch.tensor(sum((r - 1) - math.log(r) for r in ratios) / 6))
    assert all(not value.requires_grad for value in stats.values())

    # Gradient flows only through the unclipped terms that were selected: d(-A*r)/d(logp) = -A*r / 6.
    pg_loss.backward()
    expected_grad = torch.tensor([-0.5, 0.0, 1.0, 0.0, 1.5, -2.2]) / 6
    assert_close(new_logprob.grad, expected_grad)


def test_clipped_surrogate_loss_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        clipped_surrogate_loss(torch.zeros(4), torch.zeros(4), torch.zeros(4, 1), clip_coef=0.2)


def test_value_loss_unclipped_exact():
    new_values = torch.tensor([1.0, 2.0, 3.0])
    returns = torch.tensor([0.0, 2.0, 5.0])
    # squared errors [1, 0, 4]: 0.5 * 5/3
    assert_close(value_loss(new_values, returns), torch.tensor(5 / 6))
    # Clipping needs both old_values and clip_coef; either alone gives the plain loss.
    assert_close(value_loss(new_values, returns, old_values=torch.zeros(3)), torch.tensor(5 / 6))
    assert_close(value_loss(new_values, returns, clip_coef=0.2), torch.tensor(5 / 6))


def test_value_loss_clipped_exact():
    new_values = torch.tensor([1.0, 2.0, 3.0])
    returns = torch.tensor([0.0, 2.0, 5.0])
    old_values = torch.tensor([0.5, 1.0, 2.0])
    # v_clipped = old + clamp(new - old, -0.2, 0.2) = [0.7, 1.2, 2.2]
    # clipped squared errors [0.49, 0.64, 7.84], unclipped [1, 0, 4]; max = [1, 0.64, 7.84]
    # loss = 0.5 * 9.48 / 3 = 1.58
    assert_close(value_loss(new_values, returns, old_values, clip_coef=0.2), torch.tensor(1.58))
    # Within the clip range, both forms agree.
    assert_close(value_loss(new_values, returns, new_values - 0.1, clip_coef=0.2), torch.tensor(5 / 6))


def test_value_loss_shape_mismatch():
    with pytest.raises(ValueError, match="differ"):
        value_loss(torch.zeros(3), torch.zeros(3, 1))


def test_policy_gradient_loss_exact():
    # -(1*(-1) + 3*(-2)) / 2 = 3.5
    assert_close(policy_gradient_loss(torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 3.0])), torch.tensor(3.5))
    with pytest.raises(ValueError, match="differ"):
        policy_gradient_loss(torch.zeros(2), torch.zeros(3))


def test_normalize():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(5 / 3)  # unbiased standard deviation of [1, 2, 3, 4]
    out = normalize(x)
    assert_close(out, torch.tensor([-1.5, -0.5, 0.5, 1.5]) / std)
    assert_close(out.mean(), torch.tensor(0.0))
    assert_close(out.std(), torch.tensor(1.0))
    assert torch.equal(x, torch.tensor([1.0, 2.0, 3.0, 4.0]))  # not in place
    assert torch.equal(normalize(torch.tensor([3.0])), torch.tensor([0.0]))  # a single element is only centred
    assert torch.equal(normalize(torch.full((5,), 2.0)), torch.zeros(5))  # constant input: no division by zero


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert_close(explained_variance(returns, returns), torch.tensor(1.0))
    assert_close(explained_variance(torch.full((4,), 7.0), returns), torch.tensor(0.0))
    # residuals [0, 0, 0, -1]: unbiased variance 0.25; Var[returns] = 5/3; 1 - 0.25 / (5/3) = 0.85
    assert_close(explained_variance(torch.tensor([1.0, 2.0, 3.0, 5.0]), returns), torch.tensor(0.85))
    assert math.isnan(explained_variance(returns, torch.full((4,), 2.0)).item())
