"""Exact-value tests of the Q-learning targets and losses (DQN, SAC, TD3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightrl.losses.q_learning import (
    dqn_loss,
    dqn_target,
    polyak_update,
    sac_actor_loss,
    sac_alpha_loss,
    sac_critic_target,
    smoothed_target_action,
    td3_target,
    td_target,
)
from lightrl.policies.q_learning import linear_schedule


def test_td_target_with_scalar_gamma_and_per_sample_discounts():
    rewards = torch.tensor([1.0, 2.0, 3.0])
    next_q = torch.tensor([10.0, 20.0, 30.0])
    terminations = torch.tensor([0.0, 1.0, 0.0])
    assert td_target(rewards, next_q, terminations, 0.5).tolist() == [6.0, 2.0, 18.0]
    discounts = torch.tensor([0.5, 0.25, 0.125])
    assert td_target(rewards, next_q, terminations, discounts).tolist() == [6.0, 2.0, 6.75]
    assert td_target(rewards, next_q[:, None], terminations.bool(), 0.5).tolist() == [6.0, 2.0, 18.0]


def test_double_q_target_differs_from_max_target():
    next_q_target = torch.tensor([[1.0, 4.0, 2.0], [3.0, 0.0, 5.0]])
    next_q_online = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rewards = torch.tensor([1.0, 1.0])
    terminations = torch.tensor([0.0, 0.0])
    assert dqn_target(next_q_target, rewards, terminations, 0.5).tolist() == [3.0, 3.5]  # max: 4 and 5
    double = dqn_target(next_q_target, rewards, terminations, 0.5, next_q_online=next_q_online)
    assert double.tolist() == [1.5, 3.5]  # online argmax picks actions 0 and 2: target values 1 and 5
    assert dqn_target(next_q_target, rewards, torch.tensor([1.0, 0.0]), 0.5, next_q_online).tolist() == [1.0, 3.5]


def test_dqn_loss_values_and_diagnostics():
    q_taken = torch.tensor([1.0, 2.0, 5.0], requires_grad=True)
    target = torch.tensor([1.5, 2.0, 1.0], requires_grad=True)
    huber, diagnostics = dqn_loss(q_taken, target)
    assert huber.item() == pytest.approx((0.5 * 0.25 + 0.0 + 3.5) / 3)
    assert diagnostics["q_values"].item() == pytest.approx(8.0 / 3)
    assert diagnostics["td_error"].item() == pytest.approx(4.5 / 3)
    mse, _ = dqn_loss(q_taken, target, loss="mse")
    assert mse.item() == pytest.approx((0.25 + 0.0 + 16.0) / 3)
    mse.backward()
    assert target.grad is None  # the target is detached
    assert q_taken.grad is not None


def test_dqn_errors():
    with pytest.raises(ValueError, match="loss must be one of"):
        dqn_loss(torch.zeros(3), torch.zeros(3), loss="l1")
    with pytest.raises(ValueError, match="same shape"):
        dqn_loss(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="num_actions"):
        dqn_target(torch.zeros(3), torch.zeros(3), torch.zeros(3), 0.99)
    with pytest.raises(ValueError, match="same shape"):
        dqn_target(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3), 0.99, next_q_online=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="terminations must have shape"):
        td_target(torch.zeros(3), torch.zeros(3), torch.zeros(4), 0.99)
    with pytest.raises(ValueError, match="next_q must have shape"):
        td_target(torch.zeros(3), torch.zeros(3, 3), torch.zeros(3), 0.99)
    with pytest.raises(ValueError, match="gamma must have shape"):
        td_target(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.ones(2))


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0, 1.0), (25, 0.7625), (50, 0.525), (100, 0.05), (150, 0.05)],
)
def test_linear_schedule(t, expected):
    assert linear_schedule(1.0, 0.05, 100, t) == pytest.approx(expected)


def test_linear_schedule_increasing_and_errors():
    assert linear_schedule(0.0, 1.0, 10, 5) == pytest.approx(0.5)
    assert linear_schedule(0.0, 1.0, 10, 20) == 1.0
    with pytest.raises(ValueError, match="duration"):
        linear_schedule(1.0, 0.05, 0, 1)
    with pytest.raises(ValueError, match="non-negative"):
        linear_schedule(1.0, 0.05, 10, -1)


def test_polyak_update_hard_and_soft():
    target, online = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        target.weight.copy_(torch.tensor([[1.0, 2.0]]))
        target.bias.fill_(4.0)
        online.weight.copy_(torch.tensor([[3.0, -2.0]]))
        online.bias.fill_(0.0)
    polyak_update(target.parameters(), online.parameters(), tau=0.5)
    assert target.weight.tolist() == [[2.0, 0.0]] and target.bias.tolist() == [2.0]
    polyak_update(target.parameters(), online.parameters(), tau=1.0)
    assert target.weight.tolist() == [[3.0, -2.0]] and target.bias.tolist() == [0.0]
    assert online.weight.tolist() == [[3.0, -2.0]]  # the online network is untouched
    polyak_update(target.parameters(), online.parameters(), tau=0.0)
    assert target.weight.tolist() == [[3.0, -2.0]]


def test_polyak_update_errors():
    params = [torch.zeros(2)]
    with pytest.raises(ValueError, match="tau"):
        polyak_update(params, params, tau=1.5)
    with pytest.raises(ValueError, match="same length"):
        polyak_update(params, params * 2, tau=0.5)


def test_sac_losses():
    q1 = torch.tensor([1.0, 4.0])
    q2 = torch.tensor([[2.0], [3.0]])  # a critic's [B, 1] output is accepted
    log_pi = torch.tensor([-1.0, 0.5])
    rewards = torch.tensor([1.0, 0.0])
    terminations = torch.tensor([0.0, 1.0])
    # min(q) = [1, 3]; soft value = min(q) - 0.2 * log_pi = [1.2, 2.9]
    target = sac_critic_target(q1, q2, log_pi, rewards, terminations, gamma=0.5, alpha=0.2)
    assert target.tolist() == pytest.approx([1.6, 0.0])
    assert sac_actor_loss(q1, q2, log_pi, alpha=0.2).item() == pytest.approx((-1.2 + -2.9) / 2)

    log_alpha = torch.tensor(0.0, requires_grad=True)
    loss = sac_alpha_loss(log_alpha, log_pi, target_entropy=-1.0)
    assert loss.item() == pytest.approx(-(-2.0 + -0.5) / 2)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(1.25)

    alpha = log_alpha.exp()
    log_alpha.grad = None
    sac_actor_loss(q1, q2, log_pi.requires_grad_(), alpha).backward()
    assert log_alpha.grad is None  # alpha is only trained by the alpha loss


def test_td3_target():
    next_q1, next_q2 = torch.tensor([1.0, 4.0]), torch.tensor([2.0, 3.0])
    target = td3_target(next_q1, next_q2, torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), 0.5)
    assert target.tolist() == [1.5, 1.0]


def test_smoothed_target_action_scales_clips_and_clamps():
    actions = torch.zeros(4000, 2)
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    smoothed = smoothed_target_action(actions, 0.2, 0.5, low, high, generator=torch.Generator().manual_seed(0))
    # Noise is clipped to noise_clip * action_scale = [1.0, 0.25], then clamped to the bounds.
    assert smoothed[:, 0].min().item() == pytest.approx(-1.0) and smoothed[:, 0].max().item() == pytest.approx(1.0)
    assert smoothed[:, 1].min().item() == 0.0 and smoothed[:, 1].max().item() == pytest.approx(0.25)
    assert smoothed[:, 0].std().item() == pytest.approx(0.2 * 2.0, rel=0.1)  # policy_noise * action_scale
    again = smoothed_target_action(actions, 0.2, 0.5, low, high, generator=torch.Generator().manual_seed(0))
    assert torch.equal(smoothed, again)
    at_bound = smoothed_target_action(torch.full((5, 1), 1.0), 10.0, 10.0, -1.0, 1.0)
    assert (at_bound <= 1.0).all() and (at_bound >= -1.0).all()
