"""lightrl.nn: input_major (a memory layout for narrow first layers, same values and gradients), sequential_forward
(in-place activations, same values and gradients) and the SAC actor."""

import copy

import torch
from gymnasium import spaces
from torch import nn

from lightrl.nn.mlp import input_major, mlp, sequential_forward
from lightrl.nn.q_networks import SquashedGaussianActor, TwinQ


def test_input_major_changes_the_layout_not_the_values_or_the_gradients():
    torch.manual_seed(0)
    reference = nn.Linear(4, 32)
    layer = input_major(copy.deepcopy(reference))
    assert layer.weight.shape == (32, 4) and layer.weight.stride() == (1, 32)
    assert torch.equal(layer.weight, reference.weight) and isinstance(layer.weight, nn.Parameter)
    x = torch.randn(16, 4, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    layer(x).square().sum().backward()
    reference(x_ref).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_input_major_leaves_wide_inputs_alone():
    layer = input_major(nn.Linear(64, 8))
    assert layer.weight.is_contiguous()


def test_networks_keep_the_layout_through_copies_and_state_dicts():
    critic = TwinQ(3, 1, (32, 32))
    first = critic.qf1[0].weight
    assert first.stride() == (1, 32)
    target = copy.deepcopy(critic)
    assert target.qf1[0].weight.stride() == (1, 32)
    fresh = TwinQ(3, 1, (32, 32))
    fresh.load_state_dict(critic.state_dict())
    assert fresh.qf1[0].weight.stride() == (1, 32) and torch.equal(fresh.qf1[0].weight, first)
    policy = mlp(4, (64, 64), 2)
    assert policy[0].weight.stride() == (1, 64) and policy[2].weight.is_contiguous()


def test_sac_actor_act_draws_the_action_of_sample():
    # SAC explores with act(), which skips the log-probability: the same draw must give the same action.
    torch.manual_seed(0)
    actor = SquashedGaussianActor(3, spaces.Box(-2.0, 2.0, (2,)))
    obs = torch.randn(5, 3)
    torch.manual_seed(1)
    sampled, _ = actor.sample(obs)
    torch.manual_seed(1)
    acted = actor.act(obs)
    assert torch.equal(acted, sampled) and acted.abs().max() <= 2.0
    mean, _ = actor(obs)
    assert torch.equal(actor.act(obs, deterministic=True), torch.tanh(mean) * 2.0)


def test_sequential_forward_gives_the_values_and_gradients_of_the_module_call_without_touching_its_input():
    torch.manual_seed(0)
    # Starts with an activation (which must not run in place on the caller's tensor), then Linear-activation pairs.
    net = nn.Sequential(nn.Tanh(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.ReLU(), nn.Linear(8, 2))
    reference = copy.deepcopy(net)
    x = torch.randn(5, 4, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    before = x.detach().clone()
    out = sequential_forward(net, x)
    assert torch.equal(x.detach(), before)
    expected = reference(x_ref)
    assert torch.equal(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    assert torch.equal(x.grad, x_ref.grad)
    for p, p_ref in zip(net.parameters(), reference.parameters()):
        assert torch.equal(p.grad, p_ref.grad)


def test_discrete_observations_index_the_first_layers_with_the_values_and_gradients_of_one_hot_inputs():
    from lightrl.nn.actor_critic import ActorCritic

    torch.manual_seed(0)
    agent = ActorCritic(spaces.Discrete(40, start=-5), spaces.Discrete(3), hidden_sizes=(16, 16))
    reference = copy.deepcopy(agent)
    obs, actions = torch.tensor([-5, 34, 0, 0, 17, 34]), torch.tensor([0, 2, 1, 1, 2, 0])
    assert torch.equal(agent.features(obs), torch.tensor([0, 39, 5, 5, 22, 39]))
    _, log_prob, entropy, value = agent.get_action_and_value(obs, actions)
    (log_prob.sum() + entropy.sum() + value.square().sum()).backward()

    one_hot = reference.encoder(obs)  # the one-hot vectors, through the plain matmuls
    logits, ref_value = sequential_forward(reference.actor, one_hot), sequential_forward(reference.critic, one_hot).squeeze(-1)
    log_probs = logits.log_softmax(-1)
    ref_log_prob = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    (ref_log_prob.sum() - (log_probs.exp() * log_probs).sum() + ref_value.square().sum()).backward()
    assert torch.equal(log_prob, ref_log_prob) and torch.equal(value, ref_value)
    for (name, p), ref in zip(agent.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, ref.grad, rtol=0, atol=1e-7, msg=name)
    assert torch.equal(agent.act(obs, deterministic=True), logits.argmax(-1))


def test_activation_relu_builds_relu_heads_and_computes_with_them():
    import lightrl

    obs = torch.randn(3, 4)
    for kwargs in ({}, {"recurrent": "gru", "recurrent_size": 8}):
        relu = lightrl.PPO("CartPole-v1", activation="relu", hidden_sizes=[16, 16], **kwargs).policy.agent
        tanh = lightrl.PPO("CartPole-v1", hidden_sizes=[16, 16], **kwargs).policy.agent
        for net, kind in ((relu.actor, nn.ReLU), (relu.critic, nn.ReLU), (tanh.actor, nn.Tanh), (tanh.critic, nn.Tanh)):
            assert [type(m) for m in net] == [nn.Linear, kind, nn.Linear, kind, nn.Linear]
    agent = lightrl.A2C("CartPole-v1", activation="relu", hidden_sizes=[16]).policy.agent
    first, _, last = agent.critic
    assert torch.allclose(agent.get_value(obs), (last(torch.relu(first(obs)))).squeeze(-1), atol=1e-6)
