"""Dream throughput at the paper's size: agent-steps per second of the batched dream.

    .venv/bin/python scripts/bench_dream.py                  # population 64 x 16 rollouts
    .venv/bin/python scripts/bench_dream.py --device cuda --population 256

Untrained M (z 32, hidden 256, 5 Gaussians) and random controllers; the done head is pushed
down so that every agent dreams the whole horizon (the worst case: nothing ends early).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from worldmodel.dream import dream_rollouts, warm_up
from worldmodel.models import MDRNN, Controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    mdrnn = MDRNN(z_dim=32, hidden_size=256).to(device).eval()
    with torch.no_grad():
        mdrnn.done_head.bias.fill_(-30.0)
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((60, 32)).astype(np.float16)
    actions = rng.uniform(-1, 1, (59, 3)).astype(np.float32)
    starts = warm_up(mdrnn, mu, actions, 50, device)
    agents = args.population * args.rollouts
    n_params = Controller(32, 256).num_params
    params = torch.as_tensor(rng.normal(0, 0.1, (agents, n_params)), dtype=torch.float32)
    which = torch.zeros(agents, dtype=torch.int64)
    seeds = [r for _ in range(args.population) for r in range(args.rollouts)]
    dream_rollouts(mdrnn, params, starts, which, seeds, 1.15, 10)  # warm the kernels up
    rates = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = dream_rollouts(mdrnn, params, starts, which, seeds, 1.15, args.horizon)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(result.steps.sum() / (time.perf_counter() - started))
    print(f"{args.population} x {args.rollouts} agents, horizon {args.horizon}, on {device} "
          f"({torch.get_num_threads()} threads): {np.median(rates):,.0f} agent-steps/s "
          f"(median of {args.repeats}; all: {', '.join(f'{r:,.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
