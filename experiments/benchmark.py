"""Speed benchmark: lightrl against Stable-Baselines3 on the same hyperparameters, in one run.

Each (row, library, repeat) trains in a fresh subprocess; libraries alternate A B A B so that machine
noise hits both alike. Repeat ``r`` uses seed ``r + 1`` for both. Reported: env steps per second (min /
median / max over repeats), the ratio of medians, and the deterministic evaluation return at the end of
each run: 10 episodes, the same for both libraries (``lightrl.evaluate``'s sub-envs seeded 1000..1009).
Atari rows report the mean return of the last 10 training episodes instead: a greedy Breakout policy can
stall without pressing FIRE.

    python experiments/benchmark.py                      # every CPU row, 3 repeats (and the GPU rows on CUDA)
    python experiments/benchmark.py --rows ppo_cleanrl --repeats 5 --timesteps 100000
    python experiments/benchmark.py --rows ppo_cleanrl dqn_zoo sac_pendulum --plot docs/benchmarks
    python experiments/benchmark.py --rows ppo_cleanrl --compare timing   # time/* breakdown on vs off
    python experiments/benchmark.py --rows ppo_cleanrl --compare compile  # compile=False vs compile=True
    python experiments/benchmark.py --rows ppo_cleanrl --compare normalize  # normalize_obs=False vs True
    python experiments/benchmark.py --rows ppo_atari --compare precision    # 32-true vs bf16-mixed (CPU: AMX/AVX-512 BF16)
    python experiments/benchmark.py --rows ppo_atari --compare vectorization  # "auto" (native vector env) vs "sync"
    python experiments/benchmark.py --rows ppo_atari --compare fastest      # bf16 on the native env vs 32-true on "sync"
    python experiments/benchmark.py --rows ppo_atari --compare fastest-sb3  # the same bf16 path vs SB3
    python experiments/benchmark.py --rows ppo_lstm_novel                  # LSTM vs sb3-contrib RecurrentPPO (CartPoleNoVel)
    python experiments/benchmark.py --rows ppo_lstm_novel --compare memory  # the same recipe with the LSTM vs without (MLP)
    python experiments/benchmark.py --gpu                 # PPO Atari on CUDA: precisions x eager/compiled
    python experiments/benchmark.py --ddp                 # total SPS of 1 vs 2 DDP processes (CPU, gloo)

``--plot DIR`` writes ``<row>.png`` (return against env steps, mean and min-max band over the repeats' seeds,
both libraries on the same axes), ``<row>.json`` (each run's SPS and return) and ``sps.png`` (median SPS per
row, min-max bars, from every ``<row>.json`` in DIR, so rows measured in separate invocations share it). Needs the `bench` extra
(`pip install -e .[bench]`; `make benchmark` installs it), and `atari` for the Atari row.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

EXPERIMENTS = Path(__file__).parent

#: CleanRL's PPO agent in SB3's terms: separate 64-64 actor and critic MLPs, Adam with eps 1e-5.
CLEANRL_PPO_POLICY = dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), optimizer_kwargs=dict(eps=1e-5))
#: CleanRL's ppo.py defaults as SB3's PPO kwargs (a row changes what its recipe changes).
CLEANRL_PPO = dict(n_steps=128, batch_size=128, n_epochs=4, learning_rate="linear:2.5e-4", gamma=0.99, gae_lambda=0.95, clip_range=0.2,
                   clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, policy_kwargs=CLEANRL_PPO_POLICY)

# Each row: the lightrl experiment config (and overrides of its init_args), and the SB3 algorithm, kwargs and number
# of envs of the same recipe (see shared/ANCHORS.md). `timesteps` is the row's default budget.
ROWS = {
    "ppo_cleanrl": {
        "title": "PPO CartPole-v1, CleanRL defaults",
        "timesteps": 100_000,
        "lightrl": "ppo_cleanrl_cartpole.yaml",
        "sb3": ("PPO", CLEANRL_PPO, 4),
    },
    "ppo_zoo": {
        "title": "PPO CartPole-v1, RL-zoo recipe",
        "timesteps": 100_000,
        "lightrl": "ppo_cartpole.yaml",
        "sb3": ("PPO", dict(n_steps=32, batch_size=256, n_epochs=20, learning_rate="linear:1e-3", gamma=0.98, gae_lambda=0.8,
                            clip_range="linear:0.2", ent_coef=0.0), 8),
    },
    "dqn_zoo": {
        "title": "DQN CartPole-v1, RL-zoo recipe",
        "timesteps": 50_000,
        "lightrl": "dqn_cartpole.yaml",
        "sb3": ("DQN", dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
                            target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                            exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256])), 1),
    },
    "sac_pendulum": {
        "title": "SAC Pendulum-v1, lr 1e-3",
        "timesteps": 10_000,
        "lightrl": "sac_pendulum.yaml",
        "sb3": ("SAC", dict(learning_rate=1e-3), 1),
    },
    "td3_pendulum": {
        "title": "TD3 Pendulum-v1, RL-zoo recipe",
        "timesteps": 10_000,
        "lightrl": "td3_pendulum.yaml",
        # SB3 scales actions to [-1, 1]: its noise of 0.1 is lightrl's exploration_noise 0.1 (relative to the scale).
        "sb3": ("TD3", dict(learning_rate=1e-3, buffer_size=200_000, gamma=0.98, tau=0.005, batch_size=256, learning_starts=1000,
                            policy_delay=2, target_policy_noise=0.2, target_noise_clip=0.5, action_noise="normal:0.1",
                            policy_kwargs=dict(net_arch=[400, 300])), 1),
    },
    "ppo_halfcheetah": {
        "title": "PPO HalfCheetah-v5, CleanRL, normalized",
        "timesteps": 100_000,
        "lightrl": "ppo_halfcheetah.yaml",
        # SB3 clips Box actions itself (ClipAction); VecNormalize normalizes observations and rewards as lightrl does.
        "sb3": ("PPO", dict(n_steps=2048, batch_size=64, n_epochs=10, learning_rate="linear:3e-4", gamma=0.99, gae_lambda=0.95,
                            clip_range=0.2, clip_range_vf=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                            policy_kwargs=CLEANRL_PPO_POLICY), 1),
        "vec_normalize": dict(norm_obs=True, norm_reward=True, clip_obs=10.0, clip_reward=10.0, gamma=0.99),
    },
    "ppo_atari": {
        "title": "PPO Breakout, CleanRL ppo_atari (CPU)",
        "timesteps": 20_000,
        "lightrl": "ppo_atari.yaml",
        # SB3 steps lightrl's Python Atari preset (its AtariWrapper needs opencv), lightrl its default, ale-py's vector
        # env with the same preset ("--compare vectorization" sets the two lightrl paths against each other).
        "overrides": {"env_id": "BreakoutNoFrameskip-v4"},
        "sb3": ("PPO", dict(n_steps=128, batch_size=256, n_epochs=4, learning_rate="linear:2.5e-4", gamma=0.99, gae_lambda=0.95,
                            clip_range=0.1, clip_range_vf=0.1, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                            policy_kwargs=dict(optimizer_kwargs=dict(eps=1e-5))), 8),
        "policy": "CnnPolicy",
        "evaluate": False,
    },
    "ppo_masked_taxi": {
        "title": "PPO Taxi-v4, action masks (info)",
        "timesteps": 200_000,
        "lightrl": "ppo_taxi_masked.yaml",
        # sb3-contrib's MaskablePPO reads the same info["action_mask"] through action_masks() (InfoActionMasks).
        "sb3": ("MaskablePPO", {**CLEANRL_PPO, "n_steps": 64, "batch_size": 256, "n_epochs": 10, "learning_rate": "linear:1e-3", "ent_coef": 0.02}, 16),
        "action_masks": True,
    },
    "ppo_lstm_novel": {
        "title": "PPO CartPole-v1 no velocities, LSTM",
        "timesteps": 100_000,
        "lightrl": "ppo_lstm_cartpole_novel.yaml",
        # The RL zoo's ppo_lstm CartPoleNoVel-v1 recipe; both libraries' envs hide the velocities with HideVelocities.
        "sb3": ("RecurrentPPO", dict(n_steps=32, batch_size=256, n_epochs=20, learning_rate="linear:1e-3", gamma=0.98, gae_lambda=0.8,
                                     clip_range="linear:0.2", ent_coef=0.0,
                                     policy_kwargs=dict(ortho_init=False, activation_fn="nn.ReLU", lstm_hidden_size=64,
                                                        enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64]))), 8),
        "policy": "MlpLstmPolicy",
        "vec_normalize": dict(norm_obs=True, norm_reward=False),
    },
}
DEFAULT_ROWS = ["ppo_cleanrl", "ppo_zoo", "dqn_zoo", "sac_pendulum", "td3_pendulum", "ppo_halfcheetah", "ppo_atari", "ppo_masked_taxi"]
#: The two runs ``--compare`` sets against each other (A, B): mostly lightrl's default run against a variant.
COMPARISONS = {"sb3": ("lightrl", "sb3"), "timing": ("lightrl", "lightrl-notiming"), "compile": ("lightrl", "lightrl-compile"),
               "normalize": ("lightrl", "lightrl-normalize"), "precision": ("lightrl", "lightrl-bf16"),
               "vectorization": ("lightrl", "lightrl-sync"), "memory": ("lightrl", "lightrl-mlp"),
               # the speed issue's Atari yardstick: bf16-mixed on the default (native) env against the Python preset at 32-true
               "fastest": ("lightrl-bf16", "lightrl-sync"),
               # the same path against SB3, the fixed yardstick: the Python preset ran level with it when the issue was filed,
               # and the Nature-CNN's speed-ups since lift both lightrl paths
               "fastest-sb3": ("lightrl-bf16", "sb3")}  # fmt: skip
GPU_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def lightrl_config(row: dict) -> dict:
    import yaml

    model = yaml.safe_load((EXPERIMENTS / row["lightrl"]).read_text())["model"]
    return {**model, "init_args": {**model["init_args"], **row.get("overrides", {})}}


def lightrl_model(row: dict, timesteps: int, seed: int, **kwargs):
    import lightrl

    config = lightrl_config(row)
    cls = getattr(lightrl, config["class_path"].rsplit(".", 1)[1])
    return cls(**{**config["init_args"], "total_timesteps": timesteps, "seed": seed, **kwargs})


def sb3_value(value, env):
    if isinstance(value, str) and value.startswith("linear:"):
        start = float(value.split(":")[1])
        return lambda progress_remaining: progress_remaining * start
    if isinstance(value, str) and value.startswith("normal:"):
        import numpy as np
        from stable_baselines3.common.noise import NormalActionNoise

        dim = env.action_space.shape[-1]
        return NormalActionNoise(np.zeros(dim), float(value.split(":")[1]) * np.ones(dim))
    if value == "nn.ReLU":
        from torch import nn

        return nn.ReLU
    if isinstance(value, dict):  # policy_kwargs
        return {key: sb3_value(v, env) for key, v in value.items()}
    return value


def episode_recorder():
    """A callback that records ``(env steps, return)`` of every finished episode, and ``(seconds, env steps)`` per batch.

    It wraps the collector's ``step`` (one extra Python call per vector step) instead of logging through Lightning,
    whose ``self.log`` would cost more than the measurement is worth.
    """
    import lightning as L

    class EpisodeRecorder(L.Callback):
        def __init__(self):
            self.episodes: list[tuple[int, float]] = []
            self.clock: list[tuple[float, int]] = []
            self.vector_steps = 0

        def on_train_start(self, trainer, pl_module):
            collector, step = pl_module.source.collector, pl_module.source.collector.step
            per_step = pl_module.source.spec.steps_per_env_step

            def recording_step(actions):
                result = step(actions)
                self.vector_steps += 1
                self.episodes.extend((self.vector_steps * per_step, ret) for _, ret, _ in result.episodes)
                return result

            collector.step = recording_step
            self.clock.append((time.perf_counter(), pl_module.env_steps))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.clock.append((time.perf_counter(), pl_module.env_steps))

    return EpisodeRecorder()


def second_half_sps(clock: list[tuple[float, int]]) -> float:
    """Env steps per second over the second half of the run's env steps (after warm-up and compilation)."""
    if len(clock) < 3:
        return float("nan")
    half = clock[-1][1] / 2
    start = next(point for point in clock if point[1] >= half)
    seconds = clock[-1][0] - start[0]
    return (clock[-1][1] - start[1]) / seconds if seconds > 0 else float("nan")


def last_mean(episodes: list, k: int = 10) -> float:
    returns = [ret for _, ret in episodes[-k:]]
    return statistics.fmean(returns) if returns else float("nan")


def run_lightrl(row: dict, timesteps: int, seed: int, variant: str = "") -> dict:
    import lightning as L

    import lightrl

    variants = {"compile": {"compile": True}, "normalize": {"normalize_obs": True}, "sync": {"vectorization": "sync"}, "mlp": {"recurrent": None}}
    model = lightrl_model(row, timesteps, seed, **variants.get(variant, {}))
    if variant == "notiming":
        model.timer.enabled = False
    recorder = episode_recorder()
    # No validation during the run (SB3 evaluates nothing either): the return is measured once, after it.
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        max_epochs=-1, callbacks=[recorder], limit_val_batches=0, num_sanity_val_steps=0,
                        precision="bf16-mixed" if variant == "bf16" else "32-true")
    start = time.perf_counter()
    trainer.fit(model)
    seconds = time.perf_counter() - start
    if row.get("evaluate", True):
        mean, _ = lightrl.evaluate(model, num_episodes=10, seed=1000)
    else:
        mean = last_mean(recorder.episodes)
    return {"sps": model.env_steps / seconds, "sps_second_half": second_half_sps(recorder.clock), "return": mean,
            "env_steps": model.env_steps, "episodes": recorder.episodes}


def sb3_env(row: dict, num_envs: int, seed: int):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from stable_baselines3.common.vec_env import VecNormalize

    env_id = lightrl_config(row)["init_args"]["env_id"]
    wrappers = lightrl_env_wrappers(row)
    if wrappers:  # SB3 takes one wrapper class: lightrl's env_wrappers, applied in order
        return VecNormalize(make_vec_env(env_id, n_envs=num_envs, seed=seed, wrapper_class=lambda env: apply_wrappers(env, wrappers)),
                            **row["vec_normalize"])
    if row.get("action_masks"):
        return make_vec_env(env_id, n_envs=num_envs, seed=seed, wrapper_class=info_action_masks())
    if "vec_normalize" in row:
        from stable_baselines3.common.vec_env import VecNormalize

        return VecNormalize(make_vec_env(env_id, n_envs=num_envs, seed=seed), **row["vec_normalize"])
    if row.get("policy") != "CnnPolicy":
        return make_vec_env(env_id, n_envs=num_envs, seed=seed)
    from lightrl.envs.vector import make_env

    env = DummyVecEnv([lambda: make_env(env_id) for _ in range(num_envs)])
    env.seed(seed)
    return env


def lightrl_env_wrappers(row: dict) -> list:
    """The row's lightrl ``env_wrappers``, resolved (what both libraries' envs are wrapped with)."""
    from lightrl.envs.vector import resolve_wrappers, wrapper_spec

    return resolve_wrappers([wrapper_spec(entry, i) for i, entry in enumerate(lightrl_config(row)["init_args"].get("env_wrappers") or ())])


def apply_wrappers(env, wrappers: list):
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def info_action_masks():
    """A gymnasium wrapper that gives ``info["action_mask"]`` of the last ``reset()`` or ``step()`` as ``action_masks()``
    (sb3-contrib's convention): MaskablePPO then masks with the very masks lightrl reads from ``info``."""
    import gymnasium as gym

    class InfoActionMasks(gym.Wrapper):
        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            self.mask = info["action_mask"]
            return obs, info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.mask = info["action_mask"]
            return obs, reward, terminated, truncated, info

        def action_masks(self):
            return self.mask.astype(bool)

    return InfoActionMasks


class SB3Policy:
    """An SB3 model as ``lightrl.evaluate`` takes a module, so both libraries are scored on the same episodes.

    ``lightrl.evaluate`` plays 10 episodes on 10 sub-envs seeded 1000..1009; SB3's ``evaluate_policy`` on one env
    seeded 1000 would start from other states, and on Pendulum the start state moves the return by ~100.
    """

    def __init__(self, model, env_id: str, env_wrappers: list = ()):
        import torch
        from stable_baselines3.common.vec_env import VecNormalize

        self.model, self.device, self.training = model, torch.device("cpu"), False
        env = model.get_env()
        self.vec_normalize = env if isinstance(env, VecNormalize) else None  # its statistics, frozen, as lightrl evaluates
        self.hparams = types.SimpleNamespace(env_id=env_id, env_kwargs=None)
        self.policy = self  # evaluation acts through module.policy: act(obs) and explore(obs)
        # MaskablePPO acts with masks: the evaluation envs carry info["action_mask"] in the observations, as lightrl's do.
        self.env_wrappers = masked_env_wrappers(env_id) if type(model).__name__ == "MaskablePPO" else list(env_wrappers)
        #: RecurrentPPO's actor LSTM, whose state evaluation carries per env (``initial_state``, ``act_with_state``); else None.
        self.lstm = getattr(model.policy, "lstm_actor", None)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def act(self, obs, deterministic: bool = True):
        import torch

        if isinstance(obs, dict):  # {"action_mask", "obs"} of masked envs
            actions, _ = self.model.predict(obs["obs"].cpu().numpy(), deterministic=deterministic, action_masks=obs["action_mask"].cpu().numpy())
            return torch.as_tensor(actions)
        obs = obs.cpu().numpy()
        if self.vec_normalize is not None:
            obs = self.vec_normalize.normalize_obs(obs)
        actions, _ = self.model.predict(obs, deterministic=deterministic)
        return torch.as_tensor(actions)

    def explore(self, obs):
        return self.act(obs, deterministic=False)

    def initial_state(self, batch_size: int, device="cpu"):
        import torch

        return None if self.lstm is None else torch.zeros(batch_size, self.lstm.num_layers, 2 * self.lstm.hidden_size)

    def act_with_state(self, obs, state, deterministic: bool = True):
        """RecurrentPPO's actions and next state; lightrl's ``state`` rows are (h, c) side by side, zeroed at episode starts."""
        import numpy as np
        import torch

        obs = obs.cpu().numpy()
        if self.vec_normalize is not None:
            obs = self.vec_normalize.normalize_obs(obs)
        layers_first = state.transpose(0, 1).numpy()  # [layers, envs, 2 * hidden], as RecurrentPPO.predict takes (h, c)
        h, c = layers_first[..., : self.lstm.hidden_size].copy(), layers_first[..., self.lstm.hidden_size :].copy()
        actions, (h, c) = self.model.predict(obs, state=(h, c), episode_start=np.zeros(len(obs), bool), deterministic=deterministic)
        return torch.as_tensor(actions), torch.from_numpy(np.concatenate([h, c], axis=-1)).transpose(0, 1)


def masked_env_wrappers(env_id: str) -> list:
    """The wrapper that puts ``info["action_mask"]`` into the observations, as lightrl's masked runs have it."""
    from lightrl.envs.masks import mask_wrapper_spec
    from lightrl.envs.vector import resolve_wrapper

    return [resolve_wrapper(mask_wrapper_spec("info", env_id))]


def run_sb3(row: dict, timesteps: int, seed: int, variant: str = "") -> dict:
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import BaseCallback

    import lightrl

    class EpisodeRecorder(BaseCallback):
        def __init__(self):
            super().__init__()
            self.episodes: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.episodes.append((self.num_timesteps, float(info["episode"]["r"])))
            return True

    name, kwargs, num_envs = row["sb3"]
    env = sb3_env(row, num_envs, seed)
    if name in ("MaskablePPO", "RecurrentPPO"):
        import sb3_contrib

        library = sb3_contrib
    else:
        library = sb3
    model = getattr(library, name)(row.get("policy", "MlpPolicy"), env, seed=seed, device="cpu", verbose=0,
                               **{k: sb3_value(v, env) for k, v in kwargs.items()})
    recorder = EpisodeRecorder()
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=recorder)
    seconds = time.perf_counter() - start
    if row.get("evaluate", True):
        mean, _ = lightrl.evaluate(SB3Policy(model, lightrl_config(row)["init_args"]["env_id"], lightrl_env_wrappers(row)), num_episodes=10, seed=1000)
    else:
        mean = last_mean(recorder.episodes)
    return {"sps": model.num_timesteps / seconds, "sps_second_half": float("nan"), "return": float(mean),
            "env_steps": model.num_timesteps, "episodes": recorder.episodes}


def worker(row_name: str, library: str, timesteps: int, seed: int, threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    row = ROWS[row_name]
    name, _, variant = library.partition("-")
    result = (run_lightrl if name == "lightrl" else run_sb3)(row, timesteps, seed, variant)
    print("RESULT " + json.dumps(result))


def measure(row_name: str, library: str, timesteps: int, seed: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", row_name, library, str(timesteps), str(seed), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{library} {row_name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------------------------- GPU rows


def gpu_worker(precision: str, compiled: bool, timesteps: int) -> None:
    """PPO Atari with the Nature-CNN on one CUDA device; prints the SPS of the whole run and of its second half."""
    import lightning as L

    model = lightrl_model(ROWS["ppo_atari"], timesteps, seed=1, compile=compiled)
    recorder = episode_recorder()
    trainer = L.Trainer(accelerator="cuda", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, max_epochs=-1, callbacks=[recorder],
                        limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model)
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"sps": model.env_steps / seconds, "sps_second_half": second_half_sps(recorder.clock),
                                  "return": last_mean(recorder.episodes), "env_steps": model.env_steps}))


def gpu_report(timesteps: int, repeats: int) -> None:
    """PPO Atari on CUDA at each precision, eager and compiled; skipped (with a message) without CUDA."""
    import torch

    if not torch.cuda.is_available():
        print("GPU rows: no CUDA device here, skipped (run on a GPU machine for PPO Atari at 32-true / bf16-mixed / 16-mixed).")
        return
    print(f"GPU rows: {torch.cuda.get_device_name()}, PPO {ROWS['ppo_atari']['overrides']['env_id']}, {timesteps} steps, "
          f"{repeats} repeats; SPS of the whole run (incl. compilation) and of its second half")
    for precision in GPU_PRECISIONS:
        for compiled in (False, True):
            runs = []
            for _ in range(repeats):
                cmd = [sys.executable, __file__, "--gpu-worker", precision, str(int(compiled)), str(timesteps)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    print(f"  {precision:<11} {'compiled' if compiled else 'eager':<9} FAILED: {proc.stderr[-500:]}", flush=True)
                    break
                runs.append(json.loads(lines[-1][len("RESULT "):]))
            if runs:
                whole = [r["sps"] for r in runs]
                half = [r["sps_second_half"] for r in runs]
                print(f"  {precision:<11} {'compiled' if compiled else 'eager':<9} SPS {summarize(whole)}   "
                      f"second half {summarize(half)}", flush=True)


# ----------------------------------------------------------------------------------------------- DDP


def ddp_worker(devices: int, timesteps: int) -> None:
    """PPO with CleanRL's defaults over ``devices`` CPU processes (4 envs each); rank 0 prints the total SPS."""
    import lightning as L

    model = lightrl_model(ROWS["ppo_cleanrl"], timesteps, seed=1)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, max_epochs=-1)
    start = time.perf_counter()
    trainer.fit(model)
    if trainer.is_global_zero:
        print("RESULT " + json.dumps({"sps": model.env_steps / (time.perf_counter() - start), "env_steps": model.env_steps}))


def ddp_report(timesteps: int, repeats: int, threads: int) -> None:
    """Total env steps/s of 1 vs 2 DDP processes on this machine, alternating, with ``threads`` torch threads per process."""
    import os

    # Without it, the single process would run torch's default threads and each DDP rank cores // 2 (Lightning's launcher).
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads > 0 else None
    results: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for devices in (1, 2):
            cmd = [sys.executable, __file__, "--ddp-worker", str(devices), str(timesteps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"DDP with {devices} processes failed:\n{proc.stderr[-3000:]}")
            results[devices].append(json.loads(lines[-1][len("RESULT "):])["sps"])
    for devices, sps in results.items():
        print(f"{'PPO CartPole-v1, CleanRL, DDP (gloo)':<38} {f'{devices} proc':<17} {summarize(sps)}", flush=True)
    ratio = statistics.median(results[2]) / statistics.median(results[1])
    print(f"{'':<38} {'ratio':<17} 2 vs 1 process total SPS = {ratio:.2f}x  ({repeats} repeats, {timesteps} steps)", flush=True)


# ----------------------------------------------------------------------------------------------- report and plots


def memory_report() -> None:
    """Bytes per stored transition, and a full 1M-transition buffer, for HalfCheetah-sized spaces."""
    import torch

    from lightrl.data.replay import ReplayBuffer

    buffer = ReplayBuffer(1_000_000, 1, (17,), torch.float32, (6,), torch.float32)
    naive = 2 * 17 * 4 + 6 * 4 + 4 + 1  # obs and next_obs, action, reward, done
    print(f"replay buffer, obs (17,) + action (6,) float32: {buffer.bytes_per_transition:.1f} bytes/transition "
          f"(storing next_obs too: {naive}); a full 1M buffer holds {buffer.nbytes / 2**20:.0f} MiB", flush=True)


def summarize(values: list[float]) -> str:
    return f"{min(values):8.0f} {statistics.median(values):8.0f} {max(values):8.0f}"


def curve(runs: list[dict], grid: list[float], window: int = 10) -> tuple[list[float], list[float], list[float]]:
    """Mean, min and max over runs of the mean return of each run's last ``window`` episodes at each grid point."""
    per_run = []
    for run in runs:
        episodes, values, i = run["episodes"], [], 0
        for x in grid:
            while i < len(episodes) and episodes[i][0] <= x:
                i += 1
            recent = [ret for _, ret in episodes[max(0, i - window):i]]
            values.append(statistics.fmean(recent) if recent else math.nan)
        per_run.append(values)
    columns = [[v for v in column if not math.isnan(v)] for column in zip(*per_run)]
    mean = [statistics.fmean(c) if c else math.nan for c in columns]
    return mean, [min(c) if c else math.nan for c in columns], [max(c) if c else math.nan for c in columns]


def plot_row(out: Path, row_name: str, results: dict[str, list[dict]], timesteps: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [timesteps * (k + 1) / 50 for k in range(50)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for library, runs in results.items():
        mean, low, high = curve(runs, grid)
        (line,) = ax.plot(grid, mean, label=f"{library} ({len(runs)} seeds)")
        ax.fill_between(grid, low, high, alpha=0.2, color=line.get_color())
    ax.set_xlabel("env steps")
    ax.set_ylabel("episodic return (mean of last 10 episodes)")
    ax.set_title(ROWS[row_name]["title"], fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / f"{row_name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_row(out: Path, row_name: str, results: dict[str, list[dict]], timesteps: int, threads: int) -> None:
    """``DIR/<row>.json``: SPS and return of each run (not the episodes), for :func:`plot_sps` across invocations."""
    runs = {library: [{"sps": r["sps"], "return": r["return"]} for r in rs] for library, rs in results.items()}
    record = {"title": ROWS[row_name]["title"], "timesteps": timesteps, "threads": threads,
              "date": time.strftime("%Y-%m-%d"), "runs": runs}
    (out / f"{row_name}.json").write_text(json.dumps(record, indent=1) + "\n")


def plot_sps(out: Path) -> Path:
    """``DIR/sps.png`` from every ``DIR/<row>.json``: median SPS of each library per row, min-max bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = {name: json.loads((out / f"{name}.json").read_text())["runs"] for name in ROWS if (out / f"{name}.json").exists()}
    names = list(table)
    libraries = sorted({library for results in table.values() for library in results})
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.7 * len(names)))
    height = 0.8 / len(libraries)
    for j, library in enumerate(libraries):
        ys, medians, errors = [], [], [[], []]
        for i, name in enumerate(names):
            sps = [r["sps"] for r in table[name].get(library, [])]
            if not sps:
                continue
            median = statistics.median(sps)
            ys.append(i + (j - (len(libraries) - 1) / 2) * height)
            medians.append(median)
            errors[0].append(median - min(sps))
            errors[1].append(max(sps) - median)
        ax.barh(ys, medians, height=height, xerr=errors, capsize=3, label=library)
    for i, name in enumerate(names):
        runs = table[name]
        if "lightrl" in runs and "sb3" in runs:
            medians = [statistics.median(r["sps"] for r in runs[library]) for library in ("lightrl", "sb3")]
            ax.text(max(r["sps"] for rs in runs.values() for r in rs) * 1.15, i, f"{medians[0] / medians[1]:.2f}x",
                    va="center", fontsize=8)
    ax.set_yticks(range(len(names)), [ROWS[name]["title"] for name in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=ax.get_xlim()[1] * 2)  # room for the ratios
    ax.set_xlabel("env steps per second (median, min-max bars, log scale)")
    ax.set_title("SPS per row; lightrl/SB3 ratio of medians at right", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = out / "sps.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=None, help="override every row's budget")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of every run, both libraries (0: torch's default); the networks are "
                             "tiny, and on a small shared machine extra threads only spin against each other")
    parser.add_argument("--compare", choices=list(COMPARISONS), default="sb3",
                        help="the runs set against each other (COMPARISONS): lightrl against SB3 (default) or against one of "
                             "its variants (time/* breakdown off, compile=True, normalize_obs=True, ...)")
    parser.add_argument("--plot", type=Path, default=None, metavar="DIR", help="write learning curves and an SPS chart here")
    parser.add_argument("--gpu", action="store_true", help="only the GPU rows (PPO Atari, precisions x eager/compiled)")
    parser.add_argument("--ddp", action="store_true", help="report total SPS of 1 vs 2 DDP processes instead")
    parser.add_argument("--worker", nargs=4, metavar=("ROW", "LIB", "STEPS", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--gpu-worker", nargs=3, metavar=("PRECISION", "COMPILE", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--ddp-worker", nargs=2, type=int, metavar=("DEVICES", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        ddp_worker(*args.ddp_worker)
        return
    if args.gpu_worker:
        precision, compiled, steps = args.gpu_worker
        gpu_worker(precision, compiled == "1", int(steps))
        return
    if args.worker:
        row_name, library, steps, seed = args.worker
        worker(row_name, library, int(steps), int(seed), args.threads)
        return
    if args.ddp:
        ddp_report(args.timesteps or 100_000, args.repeats, args.threads)
        return
    if args.gpu:
        gpu_report(args.timesteps or 50_000, args.repeats)
        return

    memory_report()
    libraries = COMPARISONS[args.compare]
    print(f"torch threads per run: {args.threads or 'default'}")
    print(f"{'row':<38} {'library':<17} {'SPS min':>8} {'median':>8} {'max':>8} {'return (median)':>16}")
    for row_name in args.rows:
        timesteps = args.timesteps or ROWS[row_name]["timesteps"]
        results: dict[str, list[dict]] = {library: [] for library in libraries}
        for repeat in range(args.repeats):
            for library in libraries:  # alternate A B A B
                results[library].append(measure(row_name, library, timesteps, 1 + repeat, args.threads))
        for library, runs in results.items():
            sps = [r["sps"] for r in runs]
            ret = statistics.median(r["return"] for r in runs)
            returns = ", ".join(f"{r['return']:.0f}" for r in runs)
            print(f"{ROWS[row_name]['title']:<38} {library:<17} {summarize(sps)} {ret:16.1f}   (returns: {returns})", flush=True)
        a, b = (statistics.median(r["sps"] for r in results[library]) for library in libraries)
        print(f"{'':<38} {'ratio':<17} {libraries[0]}/{libraries[1]} median SPS = {a / b:.3f}x  "
              f"({args.repeats} repeats, {timesteps} steps)", flush=True)
        if args.compare == "compile":
            halves = [statistics.median(r["sps_second_half"] for r in results[library]) for library in libraries]
            print(f"{'':<38} {'second half':<17} median SPS {halves[0]:.0f} vs {halves[1]:.0f} = {halves[0] / halves[1]:.3f}x "
                  "(after compilation)", flush=True)
        if args.plot and args.compare == "sb3":
            args.plot.mkdir(parents=True, exist_ok=True)
            save_row(args.plot, row_name, results, timesteps, args.threads)
            print(f"{'':<38} wrote {plot_row(args.plot, row_name, results, timesteps)}", flush=True)
    if args.plot and args.compare == "sb3":
        print(f"wrote {plot_sps(args.plot)} (every row saved in {args.plot})")
    if args.compare == "sb3" and args.rows == DEFAULT_ROWS:
        gpu_report(50_000, args.repeats)


if __name__ == "__main__":
    main()
