"""The paired transfer gap: a run's kept controller on the training renderer and on Gymnasium's
frames, over the very same evaluation tracks.

The evaluate step always drives frames identical to Gymnasium's. This drives the same kept
controller with the same V and M, on the same 100 unseen tracks with the same z noise, on
another renderer (by default the training renderer, `lowres`), and sets the two means side by
side: how much a controller trained on the training renderer loses on the frames it is
scored on (issue bar: at most 2 %). On an identical renderer ("fast", "stock") it must drive
exactly what the evaluate step drove, which `same_returns_as_evaluate` checks.

    .venv/bin/python scripts/transfer_gap.py outputs/runs/<run>            # its last round
    .venv/bin/python scripts/transfer_gap.py outputs/runs/<run> --round 0 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from omegaconf import OmegaConf

from worldmodel import durable, layout
from worldmodel.config import config_slice
from worldmodel.envs import RENDERERS, EnvConfig
from worldmodel.report import of_kind
from worldmodel.rollout import DriveSettings, Job, drive_jobs, kept_controller, stored_agent
from worldmodel.steps.evaluate import noise_seeds

EPISODES_PER_JOB = 10


def measure(run: Path, round_: int | None, renderer: str, workers: int) -> dict:
    summary = durable.read_json(run / "summary.json")
    config = OmegaConf.create(yaml.safe_load((run / ".hydra" / "config.yaml").read_text()))
    evaluated = of_kind(summary, "evaluate")
    if not evaluated:
        raise SystemExit("error: the run has no evaluate result; run the evaluate step first")
    k = layout.step_round(evaluated[-1][0]) if round_ is None else round_
    paths = {}
    for kind in ("vae", "mdrnn", "controller", "evaluate"):
        entry = summary.get(layout.round_name(kind, k))
        if not isinstance(entry, dict) or "path" not in entry:
            raise SystemExit(f"error: {run} has no {layout.round_name(kind, k)} result")
        paths[kind] = Path(entry["path"])
    results = durable.read_json(paths["evaluate"] / layout.EVALUATE.RESULTS)
    rows = results["episode_results"]
    # The game evaluate_rk drove: rounds after the first read `rounds` over their own groups.
    env_settings = config_slice(config, ("env",), "rounds" if k else None)["env"]
    env = replace(EnvConfig(**env_settings), renderer=renderer)
    files = stored_agent(paths["vae"], paths["mdrnn"], env)
    params, z_mode = kept_controller(paths["controller"], files)
    tracks = [row["track"] for row in rows]
    noise = noise_seeds(config["seed"], len(rows))
    jobs = [Job(np.repeat(params[None], len(chunk), axis=0), [tracks[i] for i in chunk],
                [noise[i] for i in chunk])
            for chunk in (range(i, min(i + EPISODES_PER_JOB, len(rows)))
                          for i in range(0, len(rows), EPISODES_PER_JOB))]
    settings = DriveSettings(max_steps=env.max_steps, z=z_mode)
    driven = [r.total_reward for job in drive_jobs(jobs, files, settings, workers,
                                                   f"driving on {renderer}") for r in job]
    identical = np.array([row["return"] for row in rows])
    other = np.array(driven)
    difference = identical - other
    return {
        "run": str(run), "round": k, "episodes": len(rows), "renderer": renderer,
        "identical_renderer": results.get("renderer", "fast"),
        "identical_mean": round(float(identical.mean()), 2),
        "renderer_mean": round(float(other.mean()), 2),
        # How much lower the identical frames score, in % of the renderer's mean.
        "gap_percent": (round(float(100 * (other.mean() - identical.mean())
                                    / abs(other.mean())), 2) if other.mean() else None),
        "paired_difference_mean": round(float(difference.mean()), 2),
        "paired_difference_sem": (round(float(difference.std(ddof=1) / np.sqrt(len(rows))), 2)
                                  if len(rows) > 1 else None),
        # On an identical renderer this drives exactly what the evaluate step drove.
        "same_returns_as_evaluate": bool(np.array_equal(identical, other)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory: <paths.outputs>/runs/<time>")
    parser.add_argument("--round", type=int, help="which round's agent (default: the last)")
    parser.add_argument("--renderer", default="lowres", choices=sorted(RENDERERS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    result = measure(args.run, args.round, args.renderer, args.workers)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    gap = result["gap_percent"]
    where = ("" if gap is None else
             f"; the identical frames score {abs(gap):.1f} % {'below' if gap > 0 else 'above'}")
    error = result["paired_difference_sem"]
    print(f"round {result['round']}, {result['episodes']} evaluation tracks: "
          f"{result['renderer']} {result['renderer_mean']:.1f}, identical "
          f"({result['identical_renderer']}) {result['identical_mean']:.1f}{where}; paired "
          f"difference {result['paired_difference_mean']:.1f}"
          + ("" if error is None else f" ± {error:.1f} (standard error)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
