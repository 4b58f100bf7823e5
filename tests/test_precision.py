"""Mixed precision: bf16-mixed learns on CPU, the grad scaler updates once per iteration, GPU checks skip on CPU."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import lightning as L
import pytest
import torch

import lightrl


def fit(model, precision: str) -> None:
    L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, max_epochs=-1).fit(model)


@pytest.mark.timeout(300)
def test_bf16_mixed_ppo_improves_the_return():
    model = lightrl.PPO("CartPole-v1", total_timesteps=40_000, seed=1, num_envs=8, num_steps=32, update_epochs=20,
                        num_minibatches=1, gamma=0.98, gae_lambda=0.8, learning_rate=1e-3, ent_coef=0.0, clip_vloss=False)
    before, _ = lightrl.evaluate(model, num_episodes=10)
    fit(model, "bf16-mixed")
    after, _ = lightrl.evaluate(model, num_episodes=10)
    assert after >= 250 and after > before, (before, after)


@pytest.mark.timeout(300)
def test_bf16_mixed_sac_improves_the_return():
    model = lightrl.SAC("Pendulum-v1", seed=1, total_timesteps=5000, learning_starts=100, policy_lr=1e-3, q_lr=1e-3,
                        batch_size=128, hidden_sizes=[64, 64])
    before, _ = lightrl.evaluate(model, num_episodes=10)
    fit(model, "bf16-mixed")
    after, _ = lightrl.evaluate(model, num_episodes=10)
    assert before < -900 and after >= -500, (before, after)


def attach_scaler(model: lightrl.RLModule, scaler: torch.amp.GradScaler) -> None:
    model._trainer = types.SimpleNamespace(precision_plugin=types.SimpleNamespace(scaler=scaler))


class CountingScaler(torch.amp.GradScaler):
    updates = 0

    def update(self, new_scale=None):
        self.updates += 1
        super().update(new_scale)


def test_optimizer_iteration_updates_the_scaler_once_and_reports_skipped_steps():
    model = lightrl.PPO("CartPole-v1")
    scaler = CountingScaler("cpu", init_scale=1024.0, growth_interval=1)
    attach_scaler(model, scaler)
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt_a, opt_b = torch.optim.SGD([a], lr=0.5), torch.optim.SGD([b], lr=0.5)

    with model.optimizer_iteration() as iteration:
        for param, opt in ((a, opt_a), (b, opt_b)):
            scaler.scale((param * param).sum()).backward()
            scaler.step(opt)
            scaler.update()  # what Lightning's plugin calls after every step: held back here
    assert scaler.updates == 1 and not iteration.skipped
    assert scaler.get_scale() == 2048.0  # one growth step, not two
    assert torch.equal(a.detach(), torch.zeros(2)) and torch.equal(b.detach(), torch.zeros(2))

    opt_a.zero_grad()
    with model.optimizer_iteration() as iteration:
        scaler.scale((a * float("inf")).sum()).backward()
        scaler.step(opt_a)
    assert iteration.skipped and model.skipped_optimizer_steps == 1
    assert scaler.get_scale() == 1024.0
    assert torch.equal(a.detach(), torch.zeros(2))  # the step was skipped


def test_optimizer_iteration_without_scaler_is_a_no_op():
    model = lightrl.PPO("CartPole-v1")
    with model.optimizer_iteration() as iteration:
        pass
    assert not iteration.skipped and model.skipped_optimizer_steps == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
@pytest.mark.timeout(900)
def test_gpu_check_all_precisions_learn():
    script = Path(__file__).parents[1] / "experiments" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--algos", "PPO", "DQN", "SAC"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ["gpu_check.py", "host_syncs.py"])
def test_gpu_scripts_say_so_without_cuda(script):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = Path(__file__).parents[1] / "experiments" / script
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "no CUDA device" in proc.stdout
