"""Meta-RL speed: HalfCheetah environment steps per second of our batched MuJoCo rollout against
a plain loop over ``gymnasium.make("HalfCheetah-v5")`` environments, in one run and one thread,
and one full meta-iteration's time split into sampling, inner update and TRPO step.

Setting: a meta-batch of 40 tasks x 20 trajectories (800 HalfCheetah trajectories stepped
together). Cases, each run once per round, rounds interleaved, medians of the rounds' wall time
(the thread's CPU time beside it):

- ``env/ours``: :class:`meta.rl.cheetah.HalfCheetah`, all 800 trajectories advanced by one call of
  MuJoCo's C rollout per step (pre-drawn actions);
- ``env/gymnasium``: 800 ``gymnasium.make("HalfCheetah-v5")`` environments, ``env.step`` on each
  in a Python loop (the same actions);
- ``sample/ours``: :func:`meta.rl.sampler.sample` with the Gaussian MLP policy, one batched policy
  evaluation and one batched step per time step;
- ``sample/gymnasium, policy per env``: the plain loop with the policy evaluated for each
  environment (rllab's serial sampler);
- ``sample/gymnasium, batched policy``: the plain loop of environments with the policy evaluated
  once per time step on the stacked observations (a synchronous vector environment).

Then one meta-iteration of MAML-TRPO with the paper's settings per environment (``--envs``;
HalfCheetah: 40 tasks x 20 trajectories x 200 steps) and its split (``meta.rl.metalearner``'s
``sampling_s``, ``inner_s``, ``trpo_s``).

    python benchmarks/bench_rl.py                      # the table (a few minutes on one busy core)
    python benchmarks/bench_rl.py --steps 20 --rounds 3 --envs 2d-navigation    # quicker
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"  # one BLAS thread, before numpy and torch load

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meta.rl import ENVS, MetaRL, gaussian_mlp, inner_loop_of, make_env, meta_iteration, random_streams, sample
from meta.rl.policy import distribution
from meta.run.cpu import configure_cpu
from meta.run.rl_config import ENV_DEFAULTS

TASKS, TRAJECTORIES = 40, 20


def gym_envs(n: int) -> list:
    """``n`` gymnasium HalfCheetah-v5 environments (our control-cost weight), reset with seeds."""
    import gymnasium

    envs = [gymnasium.make("HalfCheetah-v5", ctrl_cost_weight=0.05) for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    return envs


def env_cases(tasks: int, trajectories: int, steps: int) -> dict[str, Callable[[], int]]:
    """The cases (module docstring): each runs ``steps`` steps of ``tasks x trajectories``
    trajectories and returns the number of environment steps it took."""
    ours = make_env("halfcheetah-vel", horizon=steps)
    goals = ours.sample_tasks(np.random.default_rng(0), tasks)
    envs = gym_envs(tasks * trajectories)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(steps, tasks, trajectories, 6))
    policy = gaussian_mlp(17, 6)
    params = {k: v.detach() for k, v in policy.named_parameters()}
    batch = tasks * trajectories

    def env_ours() -> int:
        ours.reset(goals, trajectories, np.random.default_rng(2))
        for t in range(steps):
            ours.step(actions[t])
        return batch * steps

    def env_gym() -> int:
        flat = actions.reshape(steps, batch, 6)
        for i, env in enumerate(envs):
            env.reset(seed=i)
        for t in range(steps):
            for env, action in zip(envs, flat[t]):
                env.step(action)
        return batch * steps

    def sample_ours() -> int:
        rng, noise = random_streams(0, 0)
        sample(ours, policy, params, goals, trajectories, rng, noise)
        return batch * steps

    def sample_gym(batched: bool) -> int:
        noise = torch.Generator().manual_seed(0)
        obs = np.stack([env.reset(seed=i)[0] for i, env in enumerate(envs)])
        for _ in range(steps):
            if batched:
                chosen = _act(policy, params, obs, noise).numpy()
                obs = np.stack([env.step(a)[0] for env, a in zip(envs, chosen)])
            else:
                obs = np.stack([env.step(_act(policy, params, o, noise).numpy())[0] for env, o in zip(envs, obs)])
        return batch * steps

    return {
        "env/ours": env_ours,
        "env/gymnasium": env_gym,
        "sample/ours": sample_ours,
        "sample/gymnasium, policy per env": lambda: sample_gym(batched=False),
        "sample/gymnasium, batched policy": lambda: sample_gym(batched=True),
    }


@torch.no_grad()
def _act(policy: torch.nn.Module, params: dict, obs: np.ndarray, noise: torch.Generator) -> torch.Tensor:
    """A sampled action for one observation ``(17,)`` or a stack ``(B, 17)``."""
    mean, log_std = distribution(policy, params, torch.as_tensor(obs, dtype=torch.float32))
    return mean + torch.exp(log_std) * torch.randn(mean.shape, generator=noise)


def time_cases(cases: dict[str, Callable[[], int]], rounds: int) -> dict[str, dict[str, float]]:
    """Median environment steps per second (wall and thread CPU time), rounds interleaved after
    one warm-up round."""
    wall: dict[str, list[float]] = {n: [] for n in cases}
    cpu: dict[str, list[float]] = {n: [] for n in cases}
    for r in range(rounds + 1):
        for name, case in cases.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            done = case()
            w1, c1 = time.perf_counter(), time.thread_time()
            if r:
                wall[name].append(done / (w1 - w0))
                cpu[name].append(done / (c1 - c0))
        print(f"  round {r}/{rounds} done", file=sys.stderr)
    return {n: {"wall": statistics.median(wall[n]), "cpu": statistics.median(cpu[n])} for n in cases}


def meta_iteration_split(env_name: str, tasks: int | None = None, trajectories: int = TRAJECTORIES) -> dict:
    """One MAML-TRPO meta-iteration with the paper's settings on ``env_name``: its metrics
    (``sampling_s``, ``inner_s``, ``trpo_s``, returns) and the total wall time ``total_s``."""
    env = make_env(env_name)
    torch.manual_seed(0)
    policy = gaussian_mlp(env.observation_size, env.action_size)
    rl = MetaRL(inner_loop_of("maml-trpo", 0.1), trajectories)
    rng, noise = random_streams(0, 0)
    batch = env.sample_tasks(rng, tasks or ENV_DEFAULTS[env_name]["meta_batch_size"])
    started = time.perf_counter()
    metrics = meta_iteration(policy, env, batch, rl, rng, noise)
    return {**metrics, "total_s": time.perf_counter() - started, "tasks": len(batch), "horizon": env.horizon}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=TASKS, help="tasks of the meta-batch (default: 40)")
    parser.add_argument("--trajectories", type=int, default=TRAJECTORIES, help="trajectories per task (default: 20)")
    parser.add_argument("--steps", type=int, default=50, help="environment steps per round (default: 50)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round (default: 5)")
    parser.add_argument("--envs", default=",".join(ENVS), help="meta-iteration split for these (default: all)")
    parser.add_argument("--split-tasks", type=int, default=None, help="meta-batch of the split (default: paper's)")
    args = parser.parse_args()
    settings = configure_cpu(threads=1)
    print(f"torch {torch.__version__}, {settings}, one thread", file=sys.stderr)
    timing = time_cases(env_cases(args.tasks, args.trajectories, args.steps), args.rounds)
    shape = f"{args.tasks} tasks x {args.trajectories} trajectories"
    print(f"\nHalfCheetah, {shape}, {args.steps} steps, {args.rounds} rounds")
    print("| case | env steps/s (wall) | env steps/s (CPU) | vs gymnasium loop |")
    print("|---|---|---|---|")
    for name, rate in timing.items():
        base = timing["env/gymnasium" if name.startswith("env/") else "sample/gymnasium, policy per env"]
        print(f"| {name} | {rate['wall']:.0f} | {rate['cpu']:.0f} | {rate['wall'] / base['wall']:.2f}x |")
    batched = timing["sample/ours"]["wall"] / timing["sample/gymnasium, batched policy"]["wall"]
    print(f"sample/ours vs the loop with a batched policy: {batched:.2f}x")
    print("\n| env | tasks x trajectories x horizon | meta-iteration s | sampling s | inner update s | TRPO step s |")
    print("|---|---|---|---|---|---|")
    for env_name in filter(None, args.envs.split(",")):
        m = meta_iteration_split(env_name, args.split_tasks, args.trajectories)
        shape = f"{m['tasks']} x {args.trajectories} x {m['horizon']}"
        print(
            f"| {env_name} | {shape} | {m['total_s']:.1f} | {m['sampling_s']:.1f} | {m['inner_s']:.2f} |"
            f" {m['trpo_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
