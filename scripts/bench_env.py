"""Benchmark FastCarRacing against Gymnasium's CarRacing and check that they are identical.

Both environments run in this one process on the same seeds and the same action sequence (from
an exploration policy, fed the stock observations), one step of each in turn, alternating which
goes first, so that machine noise hits both alike. Steps are timed in this thread's CPU time,
which other processes on a shared machine do not inflate. Every observation, reward, terminated
and truncated flag is compared; the exit status is 1 if any differed. Comparing live runs, not
stored frames, matters: `smoothscale` output depends on the CPU's SIMD path.

    PYTHONPATH=. python scripts/bench_env.py [--seeds 5] [--steps 500] [--json]

With --policies it instead drives the real environment with each exploration policy and prints
what they produce (the table in worldmodel/envs/policies.py):

    PYTHONPATH=. python scripts/bench_env.py --policies --seeds 5 --steps 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from worldmodel.envs.factory import EnvConfig, make_env
from worldmodel.envs.policies import POLICIES, make_policy, measure_policy


def compare_renderers(
    seeds: int, steps: int, policy_name: str, domain_randomize: bool
) -> dict[str, object]:
    """Step stock and fast CarRacing side by side; time them and count any differences."""
    envs = {
        renderer: make_env(
            EnvConfig(renderer=renderer, domain_randomize=domain_randomize, max_steps=steps)
        )
        for renderer in ("stock", "fast")
    }
    seconds = {renderer: 0.0 for renderer in envs}
    total_steps = 0
    mismatches = 0
    first_mismatch: str | None = None

    def record_mismatch(where: str) -> None:
        nonlocal mismatches, first_mismatch
        mismatches += 1
        if first_mismatch is None:
            first_mismatch = where

    for seed in range(seeds):
        policy = make_policy(policy_name, np.random.default_rng(seed))
        policy.reset()
        first_observations = [env.reset(seed=seed)[0] for env in envs.values()]
        if not np.array_equal(*first_observations):
            record_mismatch(f"seed {seed}, reset observation")
        observation = first_observations[0]
        for step in range(steps):
            action = policy.act(observation)
            order = list(envs) if step % 2 == 0 else list(reversed(envs))
            results = {}
            for renderer in order:
                start = time.thread_time()
                results[renderer] = envs[renderer].step(action)
                seconds[renderer] += time.thread_time() - start
            total_steps += 1
            stock, fast = results["stock"], results["fast"]
            if not np.array_equal(stock[0], fast[0]) or stock[1:4] != fast[1:4]:
                record_mismatch(f"seed {seed}, step {step}")
            observation = stock[0]
            if stock[2] or stock[3] or fast[2] or fast[3]:
                break
    for env in envs.values():
        env.close()

    stock_rate = total_steps / seconds["stock"]
    fast_rate = total_steps / seconds["fast"]
    return {
        "seeds": seeds,
        "steps": total_steps,
        "policy": policy_name,
        "domain_randomize": domain_randomize,
        "stock_steps_per_s": round(stock_rate, 1),
        "fast_steps_per_s": round(fast_rate, 1),
        "ratio": round(fast_rate / stock_rate, 3),
        "identical": mismatches == 0,
        "mismatched_steps": mismatches,
        "first_mismatch": first_mismatch,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="episodes, seeded 0..N-1")
    parser.add_argument("--steps", type=int, default=500, help="steps per episode at most")
    parser.add_argument(
        "--policy", default="repeat", choices=sorted(POLICIES), help="what drives the car"
    )
    parser.add_argument("--domain-randomize", action="store_true", help="random colours")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--policies", action="store_true", help="measure the exploration policies instead"
    )
    args = parser.parse_args()

    if args.policies:
        seeds = list(range(args.seeds))
        table = {name: measure_policy(name, seeds, args.steps) for name in POLICIES}
        if args.json:
            print(json.dumps(table, indent=2))
        else:
            print(f"{'policy':18s} {'return':>8s} {'tiles':>6s} {'road':>5s} {'speed':>6s} left")
            for name, stats in table.items():
                print(
                    f"{name:18s} {stats['mean_return']:8.1f} {stats['tiles_visited']:6.3f} "
                    f"{stats['on_road']:5.2f} {stats['mean_speed']:6.1f} "
                    f"{stats['left_playfield']:.2f}"
                )
        return 0

    result = compare_renderers(args.seeds, args.steps, args.policy, args.domain_randomize)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"stock: {result['stock_steps_per_s']:7.1f} steps/s")
        print(f"fast:  {result['fast_steps_per_s']:7.1f} steps/s")
        print(f"ratio: {result['ratio']:.2f}x over {result['steps']} steps, {args.seeds} seeds")
        if result["identical"]:
            print("identical: every frame, reward, terminated and truncated matched")
        else:
            print(
                f"DIFFERENT: {result['mismatched_steps']} mismatched steps, "
                f"first at {result['first_mismatch']}"
            )
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
