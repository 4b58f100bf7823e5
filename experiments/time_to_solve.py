"""Time-to-solve race: how soon each library's agent is solved, timed by one script under one evaluation rule.

Every runner trains in a fresh subprocess, and every ``--eval-every`` env steps stops to play 10 deterministic
episodes on envs seeded 1000..1009 (the same function for all: :func:`solved`); it stops once their mean
reaches the threshold. Reported per run: wall seconds from process start (imports included) and from the start
of training, and the env steps used; then the median over seeds. Runners alternate per seed, A B C A B C.

    python experiments/time_to_solve.py                                 # CartPole: lightrl, sb3, cleanrl; seeds 1-5
    python experiments/time_to_solve.py --runners lightrl cleanrl --seeds 1 2 3 --eval-every 2048

CartPole-v1, threshold 475:
- ``lightrl``: ``experiments/ppo_cartpole_fast.yaml``;
- ``sb3``: Stable-Baselines3's PPO with the RL-zoo recipe (``benchmark.py``'s ``ppo_zoo`` row);
- ``cleanrl``: :func:`cleanrl_ppo`, a CleanRL-style single-file PPO written for this race (CleanRL's
  ``ppo.py`` hyperparameters) on gymnasium's ``SyncVectorEnv``.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before the heavy imports, which every runner pays

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

EXPERIMENTS = Path(__file__).parent
ENV_ID, THRESHOLD = "CartPole-v1", 475.0
EVAL_SEEDS = list(range(1000, 1010))


def solved(act: Callable[[np.ndarray], np.ndarray]) -> tuple[bool, float]:
    """Play one deterministic episode on each of 10 fixed seeds; whether their mean return reaches the threshold."""
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in EVAL_SEEDS], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=EVAL_SEEDS)
    returns, done = np.zeros(len(EVAL_SEEDS)), np.zeros(len(EVAL_SEEDS), dtype=bool)
    while not done.all():
        obs, rewards, terminated, truncated, _ = envs.step(act(obs))
        returns += np.where(done, 0.0, rewards)
        done |= terminated | truncated
    envs.close()
    mean = float(returns.mean())
    return mean >= THRESHOLD, mean


class Race:
    """The clock and the evaluation schedule of one run."""

    def __init__(self, eval_every: int, budget: int):
        self.eval_every, self.budget = eval_every, budget
        self.next_eval = eval_every
        self.fit_start = time.perf_counter()
        self.result: dict | None = None

    def check(self, env_steps: int, act: Callable[[np.ndarray], np.ndarray]) -> bool:
        """Evaluate if an evaluation is due; True once solved (or out of budget)."""
        if env_steps < self.next_eval and env_steps < self.budget:
            return False
        self.next_eval += self.eval_every
        ok, mean = solved(act)
        if ok or env_steps >= self.budget:
            now = time.perf_counter()
            self.result = {"solved": ok, "eval_return": mean, "env_steps": env_steps,
                           "fit_seconds": now - self.fit_start, "process_seconds": now - PROCESS_START}  # fmt: skip
            return True
        return False


def run_lightrl(seed: int, race: Race) -> None:
    import lightning as L
    import torch
    import yaml

    import lightrl

    config = yaml.safe_load((EXPERIMENTS / "ppo_cartpole_fast.yaml").read_text())["model"]
    cls = getattr(lightrl, config["class_path"].rsplit(".", 1)[1])
    model = cls(**{**config["init_args"], "seed": seed, "total_timesteps": race.budget})

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.policy.act(torch.as_tensor(obs)).numpy()

    class Stop(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if race.check(pl_module.env_steps, act):
                trainer.should_stop = True

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Stop()])  # fmt: skip
    race.fit_start = time.perf_counter()
    trainer.fit(model)


def run_sb3(seed: int, race: Race) -> None:
    from benchmark import ROWS, sb3_value
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    _, kwargs, num_envs = ROWS["ppo_zoo"]["sb3"]
    env = make_vec_env(ENV_ID, n_envs=num_envs, seed=seed)
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", **{k: sb3_value(v, env) for k, v in kwargs.items()})

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return not race.check(self.num_timesteps, lambda obs: model.predict(obs, deterministic=True)[0])

    race.fit_start = time.perf_counter()
    model.learn(race.budget, callback=Stop())


def cleanrl_ppo(seed: int, race: Race, num_envs: int = 4, num_steps: int = 128, learning_rate: float = 2.5e-4,
                gamma: float = 0.99, gae_lambda: float = 0.95, num_minibatches: int = 4, update_epochs: int = 4,
                clip_coef: float = 0.2, ent_coef: float = 0.01, vf_coef: float = 0.5, max_grad_norm: float = 0.5) -> None:  # fmt: skip
    """PPO in one function, after CleanRL's ``ppo.py`` (its hyperparameters, learning-rate annealing, clipped value loss).

    Written for this race: SAME_STEP autoreset, and like CleanRL no bootstrap at truncation.
    """
    import gymnasium as gym
    import torch
    from torch import nn

    torch.manual_seed(seed)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    def layer(i: int, o: int, std: float = 2**0.5) -> nn.Linear:
        linear = nn.Linear(i, o)
        nn.init.orthogonal_(linear.weight, std)
        nn.init.constant_(linear.bias, 0.0)
        return linear

    obs_dim, n_actions = envs.single_observation_space.shape[0], envs.single_action_space.n
    critic = nn.Sequential(layer(obs_dim, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 1, 1.0))
    actor = nn.Sequential(layer(obs_dim, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, n_actions, 0.01))
    params = list(critic.parameters()) + list(actor.parameters())
    optimizer = torch.optim.Adam(params, lr=learning_rate, eps=1e-5)
    batch_size = num_envs * num_steps
    minibatch = batch_size // num_minibatches
    iterations = race.budget // batch_size
    obs_buf = torch.zeros(num_steps, num_envs, obs_dim)
    act_buf, logp_buf, rew_buf, done_buf, val_buf = (torch.zeros(num_steps, num_envs) for _ in range(5))

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor(torch.as_tensor(obs)).argmax(-1).numpy()

    next_obs = torch.as_tensor(envs.reset(seed=seed)[0])
    next_done = torch.zeros(num_envs)
    env_steps = 0
    race.fit_start = time.perf_counter()
    for iteration in range(iterations):
        optimizer.param_groups[0]["lr"] = (1.0 - iteration / iterations) * learning_rate
        for t in range(num_steps):
            obs_buf[t], done_buf[t] = next_obs, next_done
            with torch.no_grad():
                dist = torch.distributions.Categorical(logits=actor(next_obs))
                action = dist.sample()
                logp_buf[t], val_buf[t] = dist.log_prob(action), critic(next_obs).squeeze(-1)
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            act_buf[t], rew_buf[t] = action, torch.as_tensor(reward, dtype=torch.float32)
            next_obs, next_done = torch.as_tensor(obs), torch.as_tensor(terminated | truncated, dtype=torch.float32)
            env_steps += num_envs
        with torch.no_grad():
            advantages, last = torch.zeros_like(rew_buf), 0.0
            next_value = critic(next_obs).squeeze(-1)
            for t in reversed(range(num_steps)):
                not_done = 1.0 - (next_done if t == num_steps - 1 else done_buf[t + 1])
                following = next_value if t == num_steps - 1 else val_buf[t + 1]
                delta = rew_buf[t] + gamma * following * not_done - val_buf[t]
                advantages[t] = last = delta + gamma * gae_lambda * not_done * last
            returns = advantages + val_buf
        b_obs, b_act, b_logp = obs_buf.reshape(-1, obs_dim), act_buf.reshape(-1), logp_buf.reshape(-1)
        b_adv, b_ret, b_val = advantages.reshape(-1), returns.reshape(-1), val_buf.reshape(-1)
        for _ in range(update_epochs):
            for idx in torch.randperm(batch_size).split(minibatch):
                dist = torch.distributions.Categorical(logits=actor(b_obs[idx]))
                ratio = (dist.log_prob(b_act[idx]) - b_logp[idx]).exp()
                adv = (b_adv[idx] - b_adv[idx].mean()) / (b_adv[idx].std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
                value = critic(b_obs[idx]).squeeze(-1)
                clipped = b_val[idx] + (value - b_val[idx]).clamp(-clip_coef, clip_coef)
                v_loss = 0.5 * torch.max((value - b_ret[idx]) ** 2, (clipped - b_ret[idx]) ** 2).mean()
                loss = pg_loss - ent_coef * dist.entropy().mean() + vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
        if race.check(env_steps, act):
            break
    if race.result is None:  # the budget is not a multiple of the batch: the last evaluation
        race.check(race.budget, act)
    envs.close()


RUNNERS = {"lightrl": run_lightrl, "sb3": run_sb3, "cleanrl": cleanrl_ppo}


def worker(runner: str, seed: int, eval_every: int, budget: int) -> None:
    import torch

    torch.set_num_threads(1)
    race = Race(eval_every, budget)
    RUNNERS[runner](seed, race)
    if race.result is None:
        sys.exit(f"{runner} ended without a final evaluation")
    print("RESULT " + json.dumps({"runner": runner, "seed": seed, **race.result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--eval-every", type=int, default=4096, help="env steps between evaluations (default 4096)")
    parser.add_argument("--budget", type=int, default=200_000, help="env steps after which a run gives up")
    parser.add_argument("--worker", nargs=2, metavar=("RUNNER", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.eval_every, args.budget)
        return
    results: dict[str, list[dict]] = {runner: [] for runner in args.runners}
    for seed in args.seeds:
        for runner in args.runners:  # alternate, so that machine noise hits every runner alike
            cmd = [sys.executable, __file__, "--worker", runner, str(seed), "--eval-every", str(args.eval_every), "--budget", str(args.budget)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=EXPERIMENTS)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.exit(f"{runner} seed {seed} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT "):])
            results[runner].append(result)
            print(f"{runner:<8} seed {seed}: {'solved' if result['solved'] else 'NOT solved'} (eval {result['eval_return']:.0f}) "
                  f"after {result['env_steps']} env steps, fit {result['fit_seconds']:.2f} s, process {result['process_seconds']:.2f} s", flush=True)
    print(f"\n{ENV_ID}, eval >= {THRESHOLD:.0f} on 10 episodes every {args.eval_every} env steps; median over seeds {args.seeds}:")
    print(f"{'runner':<8} {'solved':>7} {'fit s':>7} {'process s':>10} {'env steps':>10}")
    for runner, runs in results.items():
        print(f"{runner:<8} {sum(r['solved'] for r in runs):>4}/{len(runs):<2} {statistics.median(r['fit_seconds'] for r in runs):7.2f} "
              f"{statistics.median(r['process_seconds'] for r in runs):10.2f} {statistics.median(r['env_steps'] for r in runs):10.0f}")


if __name__ == "__main__":
    main()
