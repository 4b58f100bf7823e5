"""DQN's batched targets of an update phase against the step-by-step ones: the same training, bit for bit."""

from __future__ import annotations

import lightning as L
import torch

from lightrl import DQN


class StepByStep(DQN):
    """Computes each gradient step's target on its own, as with ``double_q`` or image observations."""

    def phase_targets(self, batch):
        return None


def train(cls) -> DQN:
    torch.manual_seed(0)
    # 40 gradient steps of 64: 2560 target rows, more than one 2048-row chunk.
    model = cls("CartPole-v1", seed=4, total_timesteps=600, learning_starts=200, train_frequency=200, gradient_steps=40,
                batch_size=64, buffer_size=1000, target_network_frequency=100, hidden_sizes=[32])  # fmt: skip
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(model)
    return model


def test_batched_phase_targets_give_the_weights_of_step_by_step_targets():
    batched, stepwise = train(DQN), train(StepByStep)
    assert batched.num_updates == stepwise.num_updates == 80
    assert any(not torch.equal(p, q) for p, q in zip(batched.q_network.parameters(), batched.target_network.parameters()))
    for (name, p), q in zip(batched.state_dict().items(), stepwise.state_dict().values()):
        assert torch.equal(p, q), name


def test_phase_targets_equal_the_targets_of_each_step():
    model = train(DQN)
    generator = torch.Generator().manual_seed(5)
    steps, size = 40, 64
    batch = {
        "next_observations": torch.randn(steps, size, 4, generator=generator),
        "rewards": torch.randn(steps, size, generator=generator),
        "terminations": (torch.rand(steps, size, generator=generator) < 0.1).float(),
        "discounts": torch.full((steps, size), 0.99),
    }
    from lightrl.losses.q_learning import dqn_target

    with torch.no_grad():
        expected = torch.stack([
            dqn_target(model.target_network(batch["next_observations"][i]), batch["rewards"][i], batch["terminations"][i], batch["discounts"][i])
            for i in range(steps)
        ])  # fmt: skip
    assert torch.equal(model.phase_targets(batch), expected)
