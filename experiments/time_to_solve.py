"""Time-to-solve race: how soon each library's agent is solved, timed by one script under one evaluation rule.

Every runner trains in a fresh subprocess, and every ``--eval-every`` env steps stops to play 10 deterministic
episodes on envs seeded 1000..1009 (the same function for all: :func:`solved`); it stops once their mean
reaches the threshold. Reported per run: wall seconds from process start (imports included) and from the start
of training, and the env steps used; then the median over seeds. Runners alternate per seed, A B C A B C.

    python experiments/time_to_solve.py                                 # CartPole: lightrl, sb3, cleanrl; seeds 1-5
    python experiments/time_to_solve.py --runners lightrl cleanrl --seeds 1 2 3 --eval-every 2048
    python experiments/time_to_solve.py --env acrobot                   # Acrobot: lightrl, sb3
    python experiments/time_to_solve.py --runners lightrl --lightrl-config my_recipe.yaml   # race another recipe
    python experiments/time_to_solve.py --plot docs/benchmarks           # also write race_<env>.json and .png there

CartPole-v1, threshold 475:
- ``lightrl``: ``experiments/ppo_cartpole_fast.yaml`` (found by ``race_search.py``);
- ``sb3``: Stable-Baselines3's PPO with the RL-zoo recipe (``benchmark.py``'s ``ppo_zoo`` row);
- ``cleanrl``: :func:`cleanrl_ppo`, a CleanRL-style single-file PPO written for this race (CleanRL's
  ``ppo.py`` hyperparameters) on gymnasium's ``SyncVectorEnv``.

Acrobot-v1, threshold -100: lightrl and SB3, both with the RL-zoo recipe (``normalize: true``: observations and
rewards, 16 envs, 256 steps, GAE 0.94, 4 epochs of minibatches of 64, no entropy bonus) and SB3's other defaults.
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
#: Each race: env id, threshold, lightrl's recipe (a config file or init_args), SB3's (kwargs, envs, VecNormalize).
RACES = {
    "cartpole": {"env_id": "CartPole-v1", "threshold": 475.0, "lightrl": "ppo_cartpole_fast.yaml", "sb3": "ppo_zoo",
                 "runners": ("lightrl", "sb3", "cleanrl")},
    "acrobot": {"env_id": "Acrobot-v1", "threshold": -100.0,
                # SB3's defaults where the zoo sets nothing: VecNormalize scales rewards too, a constant learning rate of 3e-4,
                # an unclipped value loss
                "lightrl": dict(num_envs=16, num_steps=256, gamma=0.99, gae_lambda=0.94, update_epochs=4, num_minibatches=64,
                                ent_coef=0.0, normalize_obs=True, normalize_reward=True, learning_rate=3e-4, anneal_lr=False, clip_vloss=False,
                                hidden_sizes=[64, 64]),
                "sb3": (dict(n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0), 16),
                "runners": ("lightrl", "sb3")},
}  # fmt: skip
RACE = RACES["cartpole"]
EVAL_SEEDS = list(range(1000, 1010))


def solved(act: Callable[[np.ndarray], np.ndarray]) -> tuple[bool, float]:
    """Play one deterministic episode on each of 10 fixed seeds; whether their mean return reaches the threshold."""
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(RACE["env_id"]) for _ in EVAL_SEEDS], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=EVAL_SEEDS)
    returns, done = np.zeros(len(EVAL_SEEDS)), np.zeros(len(EVAL_SEEDS), dtype=bool)
    while not done.all():
        obs, rewards, terminated, truncated, _ = envs.step(act(obs))
        returns += np.where(done, 0.0, rewards)
        done |= terminated | truncated
    envs.close()
    mean = float(returns.mean())
    return mean >= RACE["threshold"], mean


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

    recipe = RACE["lightrl"]
    if isinstance(recipe, str):
        config = yaml.safe_load((EXPERIMENTS / recipe).read_text())["model"]
        cls, init_args = getattr(lightrl, config["class_path"].rsplit(".", 1)[1]), config["init_args"]
    else:
        cls, init_args = lightrl.PPO, {"env_id": RACE["env_id"], **recipe}
    model = cls(**{**init_args, "seed": seed, "total_timesteps": race.budget})

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

    from stable_baselines3.common.vec_env import VecNormalize

    if isinstance(RACE["sb3"], str):
        (_, kwargs, num_envs), normalize = ROWS[RACE["sb3"]]["sb3"], False
    else:
        (kwargs, num_envs), normalize = RACE["sb3"], True
    env = make_vec_env(RACE["env_id"], n_envs=num_envs, seed=seed)
    if normalize:  # the zoo's normalize: true (observations and rewards)
        env = VecNormalize(env, gamma=kwargs["gamma"])
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", **{k: sb3_value(v, env) for k, v in kwargs.items()})

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(env.normalize_obs(obs) if normalize else obs, deterministic=True)[0]

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return not race.check(self.num_timesteps, act)

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
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(RACE["env_id"]) for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

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


def plot_race(path: Path, results: dict[str, list[dict]]) -> None:
    """The share of seeds solved against the wall clock, from ``fit`` start and from process start, per runner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, key, label in zip(axes, ("fit_seconds", "process_seconds"), ("from `fit` start", "from process start")):
        end = max(r[key] for runs in results.values() for r in runs)
        for runner, runs in results.items():
            times = sorted(r[key] for r in runs if r["solved"])
            shares = np.arange(len(times) + 1) / len(runs)
            ax.step([0.0, *times, end], [*shares, shares[-1]], where="post", label=runner)
        ax.set_xlabel(f"wall seconds {label}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of seeds solved")
    axes[0].legend()
    fig.suptitle(f"{RACE['env_id']}: eval >= {RACE['threshold']:.0f}, {len(next(iter(results.values())))} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


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
    parser.add_argument("--env", choices=list(RACES), default="cartpole")
    parser.add_argument("--runners", nargs="+", default=None, choices=list(RUNNERS), help="default: every runner of the race")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--eval-every", type=int, default=4096, help="env steps between evaluations (default 4096)")
    parser.add_argument("--budget", type=int, default=200_000, help="env steps after which a run gives up")
    parser.add_argument("--lightrl-config", help="a config file for the lightrl runner, instead of the race's recipe")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write race_<env>.json (every run) and race_<env>.png to DIR")
    parser.add_argument("--worker", nargs=2, metavar=("RUNNER", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global RACE
    RACE = RACES[args.env]
    if args.lightrl_config:
        RACE = {**RACE, "lightrl": str(Path(args.lightrl_config).resolve())}
    runners = args.runners or list(RACE["runners"])
    if not set(runners) <= set(RACE["runners"]):
        parser.error(f"--env {args.env} races {list(RACE['runners'])}, not {sorted(set(runners) - set(RACE['runners']))}")
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.eval_every, args.budget)
        return
    results: dict[str, list[dict]] = {runner: [] for runner in runners}
    for seed in args.seeds:
        for runner in runners:  # alternate, so that machine noise hits every runner alike
            cmd = [sys.executable, __file__, "--worker", runner, str(seed), "--env", args.env, "--eval-every", str(args.eval_every),
                   "--budget", str(args.budget)] + (["--lightrl-config", RACE["lightrl"]] if args.lightrl_config else [])  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=EXPERIMENTS)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.exit(f"{runner} seed {seed} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT "):])
            results[runner].append(result)
            print(f"{runner:<8} seed {seed}: {'solved' if result['solved'] else 'NOT solved'} (eval {result['eval_return']:.0f}) "
                  f"after {result['env_steps']} env steps, fit {result['fit_seconds']:.2f} s, process {result['process_seconds']:.2f} s", flush=True)
    print(f"\n{RACE['env_id']}, eval >= {RACE['threshold']:.0f} on 10 episodes every {args.eval_every} env steps; median over seeds {args.seeds}:")
    print(f"{'runner':<8} {'solved':>7} {'fit s':>7} {'process s':>10} {'env steps':>10}")
    for runner, runs in results.items():
        print(f"{runner:<8} {sum(r['solved'] for r in runs):>4}/{len(runs):<2} {statistics.median(r['fit_seconds'] for r in runs):7.2f} "
              f"{statistics.median(r['process_seconds'] for r in runs):10.2f} {statistics.median(r['env_steps'] for r in runs):10.0f}")
    if args.plot:
        args.plot.mkdir(parents=True, exist_ok=True)
        (args.plot / f"race_{args.env}.json").write_text(json.dumps(results, indent=1))
        plot_race(args.plot / f"race_{args.env}.png", results)
        print(f"wrote {args.plot / f'race_{args.env}.json'} and .png")


if __name__ == "__main__":
    main()
