"""lightrl.optim: FusedAdam takes torch's Adam steps exactly; clip_grad_norm_ follows torch's rule."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from lightrl.compat import FusedAdam
from lightrl.optim import clip_grad_norm_


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> None:
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(16, 4, generator=data)).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("kwargs", [{}, {"eps": 1e-5, "weight_decay": 0.01, "betas": (0.8, 0.99)}])
def test_fused_adam_matches_torch_adam_bit_for_bit(kwargs):
    a, b = net(), net()
    reference = torch.optim.Adam(a.parameters(), lr=1e-2, fused=True, **kwargs)
    fused = FusedAdam(b.parameters(), lr=1e-2, **kwargs)
    train(a, reference)
    train(b, fused)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    ref_state, state = reference.state_dict(), fused.state_dict()
    assert ref_state["param_groups"] == state["param_groups"]
    for i, s in ref_state["state"].items():
        assert all(torch.equal(s[k], state["state"][i][k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert float(state["state"][0]["step"]) == 5


def test_fused_adam_leaves_parameters_without_gradient_alone():
    """A parameter outside the backward pass keeps its value and its step count, as in torch's Adam."""
    model = net()
    optimizer = FusedAdam(model.parameters(), lr=1e-2)
    train(model, optimizer, steps=2)
    head = model[2]
    before = head.weight.detach().clone()
    optimizer.zero_grad(set_to_none=True)
    model[0](torch.randn(8, 4)).sum().backward()  # the head gets no gradient
    optimizer.step()
    assert torch.equal(head.weight, before)
    assert float(optimizer.state[head.weight]["step"]) == 2
    assert float(optimizer.state[model[0].weight]["step"]) == 3


def test_fused_adam_runs_the_closure_and_the_step_hooks():
    model = net()
    optimizer = FusedAdam(model.parameters(), lr=1e-2)
    train(model, optimizer, steps=1)
    calls = []
    optimizer.register_step_pre_hook(lambda *_: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *_: calls.append("post"))

    def closure():
        calls.append("closure")
        optimizer.zero_grad()
        loss = model(torch.ones(2, 4)).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert calls == ["pre", "closure", "post"] and loss is not None


def test_fused_adam_runs_global_hooks_and_shows_in_the_profiler():
    model = net()
    optimizer = FusedAdam(model.parameters(), lr=1e-2)
    train(model, optimizer, steps=1)
    calls = []
    handles = [
        register_optimizer_step_pre_hook(lambda *_: calls.append("pre")),
        register_optimizer_step_post_hook(lambda *_: calls.append("post")),
    ]
    try:
        train(model, optimizer, steps=1)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["pre", "post"]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train(model, optimizer, steps=1)
    names = {event.name for event in prof.events()}
    assert {"Optimizer.step#FusedAdam.step", "Optimizer.zero_grad#FusedAdam.zero_grad"} <= names


def test_fused_adam_zero_grad_sets_none_or_zeros():
    model = net()
    optimizer = FusedAdam(model.parameters(), lr=1e-2)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_fused_adam_resumes_from_a_torch_adam_state_dict():
    a, b = net(), net()
    reference = torch.optim.Adam(a.parameters(), lr=1e-2, fused=True)
    train(a, reference, steps=3)
    b.load_state_dict(a.state_dict())
    fused = FusedAdam(b.parameters(), lr=1e-2)
    fused.load_state_dict(copy.deepcopy(reference.state_dict()))
    train(a, reference, steps=2)
    train(b, fused, steps=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("max_norm", [0.01, 1e6])
def test_clip_grad_norm_follows_torch(max_norm):
    a, b = net(), net()
    for model in (a, b):
        model(torch.randn(16, 4, generator=torch.Generator().manual_seed(2))).square().mean().backward()
    expected = torch.nn.utils.clip_grad_norm_(a.parameters(), max_norm)
    norm = clip_grad_norm_(b.parameters(), max_norm)
    assert norm == pytest.approx(float(expected), rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=0)
    if max_norm > 1:  # within the bound: untouched
        assert norm < max_norm


def test_clip_grad_norm_scales_nothing_when_a_gradient_is_not_finite():
    model = net()
    model(torch.randn(4, 4)).sum().backward()
    model[0].weight.grad[0, 0] = float("nan")
    before = model[2].weight.grad.clone()
    norm = clip_grad_norm_(model.parameters(), 1e-3)
    assert math.isnan(norm)
    assert torch.equal(model[2].weight.grad, before)
