"""Mixed precision: bf16-mixed learns on CPU, the grad scaler updates once per iteration, GPU checks skip on CPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import lightning as L
import pytest
import torch

import lightrl
from lightrl.algos.precision import cached_autocast, optimizer_iteration
from lightrl.nn.cnn import NatureCNN
from space_envs import SQUARE_SIDE_ID


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


@pytest.mark.slow  # bf16 PPO's learning test stays in the fast suite
@pytest.mark.timeout(300)
def test_bf16_mixed_sac_improves_the_return():
    model = lightrl.SAC("Pendulum-v1", seed=1, total_timesteps=5000, learning_starts=100, policy_lr=1e-3, q_lr=1e-3,
                        batch_size=128, hidden_sizes=[64, 64])
    before, _ = lightrl.evaluate(model, num_episodes=10)
    fit(model, "bf16-mixed")
    after, _ = lightrl.evaluate(model, num_episodes=10)
    assert before < -900 and after >= -500, (before, after)


PIXEL_LEARNING = {  # SquareSide's 2x36x36 frames: a few seconds each on one CPU core
    "PPO": dict(num_envs=8, num_steps=16, total_timesteps=2048, update_epochs=4, num_minibatches=2, learning_rate=1e-3),
    "A2C": dict(num_envs=8, num_steps=8, total_timesteps=4096, learning_rate=1e-3),
    "DQN": dict(num_envs=4, total_timesteps=4000, learning_starts=500, buffer_size=4000, batch_size=32, train_frequency=4,
                target_network_frequency=200, exploration_fraction=0.3, learning_rate=1e-3, hidden_sizes=[64],
                gamma=0.5),  # the steps are independent: a short horizon keeps the Q-targets near the rewards
}  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo", sorted(PIXEL_LEARNING))
def test_bf16_mixed_pixel_policies_learn_to_read_the_frames(algo):
    """The Nature-CNN learns under bf16 autocast on CPU: in SquareSide, 8 steps an episode, reward 1 when the action names
    the side of a bright square in the frame. A policy that ignores the pixels scores 4 on average."""
    model = getattr(lightrl, algo)(SQUARE_SIDE_ID, seed=1, vectorization="sync", **PIXEL_LEARNING[algo])
    assert any(isinstance(m, NatureCNN) for m in model.modules())
    before, _ = lightrl.evaluate(model, num_episodes=20, seed=100)
    fit(model, "bf16-mixed")
    after, _ = lightrl.evaluate(model, num_episodes=20, seed=100)
    assert before < 7 and after >= 7.5, (before, after)


PIXEL_RUNS = {  # a few updates each on Breakout's 4x84x84 frames (ale-py's vector env, the default for Atari ids)
    "PPO": dict(num_envs=2, num_steps=32, update_epochs=1, num_minibatches=2, total_timesteps=128, eval_episodes=2),
    "A2C": dict(num_envs=2, num_steps=8, total_timesteps=64, eval_episodes=2),
    "DQN": dict(num_envs=2, total_timesteps=160, learning_starts=64, buffer_size=256, batch_size=16, train_frequency=4,
                target_network_frequency=32, hidden_sizes=[64], eval_episodes=2),
}  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py (lightrl[atari])")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo", sorted(PIXEL_RUNS))
def test_bf16_mixed_trains_the_nature_cnn_on_cpu(algo):
    """Every algorithm that takes pixels (SAC and TD3 take no images) trains its Nature CNN under bf16 autocast on CPU."""
    model = getattr(lightrl, algo)("ALE/Breakout-v5", seed=1, **PIXEL_RUNS[algo])
    cnn = next(m for m in model.modules() if isinstance(m, NatureCNN))
    before = [p.detach().clone() for p in cnn.parameters()]
    dtypes = set()
    hook = cnn.register_forward_hook(lambda module, args, out: dtypes.add((torch.is_grad_enabled(), out.dtype)))
    fit(model, "bf16-mixed")
    hook.remove()
    assert (True, torch.bfloat16) in dtypes  # the training forward ran in bf16
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in cnn.parameters())  # fp32 master weights
    assert any(not torch.equal(a, b) for a, b in zip(before, cnn.parameters()))  # and they were trained
    if algo != "A2C":  # A2C's optimizer is RMSprop
        # No grad scaler: Adam is fused, with PPO's clipping (max_grad_norm 0.5) too, which lightrl does itself.
        assert all(group["fused"] for optimizer in model.trainer.optimizers for group in optimizer.param_groups)


def test_acting_autocast_casts_each_weight_once_and_forgets_the_casts_on_exit():
    """Acting under bf16-mixed (cached_autocast) casts a weight once per context, not once per forward, and no cast
    outlives the context, even nested in an autocast without a cache (Lightning's training_step): after an
    optimizer step the next rollout acts with the new weights."""
    from torch.profiler import profile

    torch.manual_seed(0)
    linear, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):  # Lightning's training context
        with torch.no_grad(), cached_autocast("cpu", torch.bfloat16), profile() as prof:
            linear(x), linear(x)
        # weight, bias and input for the first forward; only the input for the second
        assert sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy") == 4
        with torch.no_grad():
            linear.weight.mul_(2.0)  # an optimizer step
            with cached_autocast("cpu", torch.bfloat16):
                after = linear(x)
            expected = linear(x)  # the outer autocast casts afresh
    assert after.dtype == torch.bfloat16 and torch.equal(after, expected)


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

    with optimizer_iteration(model) as iteration:
        for param, opt in ((a, opt_a), (b, opt_b)):
            scaler.scale((param * param).sum()).backward()
            scaler.step(opt)
            scaler.update()  # what Lightning's plugin calls after every step: held back here
    assert scaler.updates == 1 and not iteration.skipped
    assert scaler.get_scale() == 2048.0  # one growth step, not two
    assert torch.equal(a.detach(), torch.zeros(2)) and torch.equal(b.detach(), torch.zeros(2))

    opt_a.zero_grad()
    with optimizer_iteration(model) as iteration:
        scaler.scale((a * float("inf")).sum()).backward()
        scaler.step(opt_a)
    assert iteration.skipped and model.skipped_optimizer_steps == 1
    assert scaler.get_scale() == 1024.0
    assert torch.equal(a.detach(), torch.zeros(2))  # the step was skipped


def test_optimizer_iteration_without_scaler_is_a_no_op():
    model = lightrl.PPO("CartPole-v1")
    with optimizer_iteration(model) as iteration:
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
