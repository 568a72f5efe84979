"""Benchmark FastCarRacing against Gymnasium's CarRacing and check that they are identical;
time the training renderer (LowResCarRacing) beside them and measure how its frames differ.

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

from worldmodel.envs.factory import EnvConfig, make_env, preprocess
from worldmodel.envs.policies import POLICIES, make_policy, measure_policy


def compare_renderers(
    seeds: int, steps: int, policy_name: str, domain_randomize: bool
) -> dict[str, object]:
    """Step stock, fast and lowres CarRacing side by side on the same actions; time them.

    Stock and fast must agree on every frame, reward and flag (`identical`). Lowres must agree
    on rewards and flags (`lowres_same_game`); its frames are compared with the stock frames'
    preprocessing (`preprocess`), the frames the models would see: mean and 99th-percentile
    absolute difference per pixel channel, in 0..255 levels.
    """
    envs = {
        renderer: make_env(
            EnvConfig(renderer=renderer, domain_randomize=domain_randomize, max_steps=steps)
        )
        for renderer in ("stock", "fast", "lowres")
    }
    seconds = {renderer: 0.0 for renderer in envs}
    total_steps = 0
    mismatches = 0
    first_mismatch: str | None = None
    game_mismatches = 0
    pixel_differences = []

    def record_mismatch(where: str) -> None:
        nonlocal mismatches, first_mismatch
        mismatches += 1
        if first_mismatch is None:
            first_mismatch = where

    def compare_lowres(stock_frame: np.ndarray, lowres_frame: np.ndarray) -> None:
        model_frame = preprocess(stock_frame, crop_hud=True).astype(np.int16)
        pixel_differences.append(np.abs(model_frame - lowres_frame).astype(np.uint8).ravel())

    for seed in range(seeds):
        policy = make_policy(policy_name, np.random.default_rng(seed))
        policy.reset()
        first = {renderer: env.reset(seed=seed)[0] for renderer, env in envs.items()}
        if not np.array_equal(first["stock"], first["fast"]):
            record_mismatch(f"seed {seed}, reset observation")
        compare_lowres(first["stock"], first["lowres"])
        observation = first["stock"]
        for step in range(steps):
            action = policy.act(observation)
            order = list(envs) if step % 2 == 0 else list(reversed(envs))
            results = {}
            for renderer in order:
                start = time.thread_time()
                results[renderer] = envs[renderer].step(action)
                seconds[renderer] += time.thread_time() - start
            total_steps += 1
            stock, fast, lowres = results["stock"], results["fast"], results["lowres"]
            if not np.array_equal(stock[0], fast[0]) or stock[1:4] != fast[1:4]:
                record_mismatch(f"seed {seed}, step {step}")
            game_mismatches += stock[1:4] != lowres[1:4]
            compare_lowres(stock[0], lowres[0])
            observation = stock[0]
            if any(result[2] or result[3] for result in results.values()):
                break
    for env in envs.values():
        env.close()

    rates = {renderer: total_steps / seconds[renderer] for renderer in envs}
    differences = np.concatenate(pixel_differences)
    return {
        "seeds": seeds,
        "steps": total_steps,
        "policy": policy_name,
        "domain_randomize": domain_randomize,
        "stock_steps_per_s": round(rates["stock"], 1),
        "fast_steps_per_s": round(rates["fast"], 1),
        "lowres_steps_per_s": round(rates["lowres"], 1),
        "ratio": round(rates["fast"] / rates["stock"], 3),
        "lowres_ratio": round(rates["lowres"] / rates["stock"], 3),
        "identical": mismatches == 0,
        "mismatched_steps": mismatches,
        "first_mismatch": first_mismatch,
        "lowres_same_game": game_mismatches == 0,
        "lowres_pixel_mean": round(float(differences.mean()), 3),
        "lowres_pixel_p99": float(np.percentile(differences, 99)),
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
        print(f"lowres: {result['lowres_steps_per_s']:6.1f} steps/s (training renderer)")
        print(f"ratio: {result['ratio']:.2f}x (fast), {result['lowres_ratio']:.2f}x (lowres) "
              f"over {result['steps']} steps, {args.seeds} seeds")
        print(f"lowres pixels against the preprocessed stock frames: mean "
              f"{result['lowres_pixel_mean']:.2f}, 99th percentile "
              f"{result['lowres_pixel_p99']:.0f} levels; same rewards and flags: "
              f"{'yes' if result['lowres_same_game'] else 'NO'}")
        if result["identical"]:
            print("identical: every frame, reward, terminated and truncated matched")
        else:
            print(
                f"DIFFERENT: {result['mismatched_steps']} mismatched steps, "
                f"first at {result['first_mismatch']}"
            )
    return 0 if result["identical"] and result["lowres_same_game"] else 1


if __name__ == "__main__":
    sys.exit(main())
