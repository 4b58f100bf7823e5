"""lightrl.nn.distributions against torch.distributions: log-probabilities, entropies and sampling statistics."""

from __future__ import annotations

import torch
from torch.distributions import Categorical, Normal
from torch.testing import assert_close

from lightrl.nn.distributions import (
    categorical_entropy,
    categorical_log_prob,
    categorical_sample,
    normal_entropy,
    normal_log_prob,
    normal_sample,
)


def test_categorical_log_prob_and_entropy_match_torch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=generator) * 3
    actions = torch.randint(0, 5, (64,), generator=generator)
    reference = Categorical(logits=logits)
    assert_close(categorical_log_prob(logits, actions), reference.log_prob(actions))
    assert_close(categorical_entropy(logits), reference.entropy())
    log_probs = logits.log_softmax(-1)  # the shared log_softmax gives the same values
    assert torch.equal(categorical_log_prob(logits, actions, log_probs), categorical_log_prob(logits, actions))
    assert torch.equal(categorical_entropy(logits, log_probs), categorical_entropy(logits))


def test_normal_log_prob_and_entropy_match_torch():
    generator = torch.Generator().manual_seed(1)
    mean, log_std = torch.randn(64, 3, generator=generator), torch.randn(3, generator=generator) * 0.5
    actions = torch.randn(64, 3, generator=generator) * 2
    reference = Normal(mean, log_std.exp())
    assert_close(normal_log_prob(mean, log_std, actions), reference.log_prob(actions).sum(-1))
    assert_close(normal_entropy(log_std, torch.Size([64])), reference.entropy().sum(-1))


def test_categorical_samples_follow_the_probabilities():
    torch.manual_seed(2)
    n = 200_000
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0])
    counts = torch.bincount(categorical_sample(logits.expand(n, 4)), minlength=4).double()
    probs = logits.softmax(-1).double()
    # Each frequency is within 5 binomial standard deviations of its probability (sd <= 0.0012 here).
    assert ((counts / n - probs).abs() <= 5 * (probs * (1 - probs) / n).sqrt()).all(), (counts / n, probs)


def test_normal_samples_have_the_mean_and_std():
    torch.manual_seed(3)
    n = 200_000
    mean, log_std = torch.tensor([1.0, -2.0]), torch.tensor([0.0, -1.0])
    samples = normal_sample(mean.expand(n, 2), log_std)
    std = log_std.exp()
    # Standard errors: of the mean std/sqrt(n), of the std about std/sqrt(2n); 5 of each.
    assert ((samples.mean(0) - mean).abs() <= 5 * std / n**0.5).all()
    assert ((samples.std(0) - std).abs() <= 5 * std / (2 * n) ** 0.5).all()
    # and the log-density of the samples averages to minus the entropy
    assert_close(normal_log_prob(mean, log_std, samples).mean(), -normal_entropy(log_std, torch.Size([])), atol=0.02, rtol=0)
