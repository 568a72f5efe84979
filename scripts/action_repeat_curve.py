"""CMA-ES learning curves of the real-mode controller at several env.action_repeat values.

    python scripts/action_repeat_curve.py outputs/store --repeats 1 2 4 --generations 15

Takes V and M from a store (the newest vae/ and mdrnn/ results, or --vae/--mdrnn) and, for each
action repeat, runs the controller step's search loop in miniature: CMA-ES (population
--population, sigma0 0.1, as the controller step), every candidate driving the generation's
--rollouts tracks with training rollouts cut after --early-stop frames without a new tile, and
every 5 generations the ES mean scored on --score-episodes full episodes of fixed tracks. The
tracks, CMA-ES seed and models are the same for every repeat, so the curves differ only by how
often C acts. Prints one line per generation and a markdown table of the scores; --json writes
everything. V is the same at any repeat (it encodes single frames); M was trained at the
store's own repeat, and only its hidden state is used here, as a feature.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cma
import numpy as np

from worldmodel import seeding
from worldmodel.envs import EnvConfig
from worldmodel.models import Controller, controller_size
from worldmodel.pool import keep_workers
from worldmodel.rollout import AgentFiles, DriveSettings
from worldmodel.steps.controller import drive_mean_returns

SCORE_EVERY = 5


def newest(store: Path, step: str) -> Path:
    models = sorted((store / step).glob("*/model.pt"), key=lambda p: p.stat().st_mtime)
    if not models:
        raise SystemExit(f"error: no {step}/*/model.pt in {store}; run `worldmodel "
                         f"steps=[{step}] paths.store={store}` first, or pass --{step}")
    return models[-1]


def curve(files: AgentFiles, args: argparse.Namespace) -> list[dict]:
    n_params = Controller(**controller_size(Path(files.vae), Path(files.mdrnn))).num_params
    es = cma.CMAEvolutionStrategy(np.zeros(n_params), 0.1,
                                  {"popsize": args.population, "seed": args.seed + 1,
                                   "verbose": -9})
    training = DriveSettings(max_steps=1000, z="mean", early_stop_steps=args.early_stop)
    scoring = DriveSettings(max_steps=1000, z="mean", early_stop_steps=None)
    score_tracks = [seeding.train_track(args.seed, "action_repeat_curve", "score", i)
                    for i in range(args.score_episodes)]
    rows, started = [], time.perf_counter()
    with keep_workers():
        for generation in range(1, args.generations + 1):
            candidates = np.array(es.ask())
            tracks = [seeding.train_track(args.seed, "action_repeat_curve", generation, r)
                      for r in range(args.rollouts)]
            fitness = drive_mean_returns(candidates, tracks, list(range(len(tracks))), files,
                                         training, args.workers, len(tracks), "training")
            es.tell(list(candidates), list(-fitness.returns))
            row = {"repeat": files.env.action_repeat, "generation": generation,
                   "best": float(fitness.returns.max()), "mean": float(fitness.returns.mean()),
                   "frames": int(fitness.env_steps)}
            if generation % SCORE_EVERY == 0:
                score = drive_mean_returns(es.mean[None], score_tracks,
                                           list(range(len(score_tracks))), files, scoring,
                                           args.workers, len(score_tracks), "scoring")
                row["es_mean_score"] = float(score.returns[0])
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(f"repeat {row['repeat']} generation {generation}: best {row['best']:.0f}, "
                  f"mean {row['mean']:.0f}" + (f", ES mean score {row['es_mean_score']:.0f}"
                                               if "es_mean_score" in row else "")
                  + f", {row['seconds']} s", flush=True)
    return rows


def markdown(rows: list[dict], repeats: list[int]) -> str:
    scored = sorted({r["generation"] for r in rows if "es_mean_score" in r})
    head = "| action_repeat | " + " | ".join(f"gen {g}: score (s)" for g in scored) + " |"
    lines = [head, "|---|" + "---|" * len(scored)]
    for repeat in repeats:
        cells = []
        for generation in scored:
            row = next(r for r in rows if r["repeat"] == repeat and r["generation"] == generation)
            cells.append(f"{row['es_mean_score']:.0f} ({row['seconds']:.0f})")
        lines.append(f"| {repeat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a store directory (<paths.outputs>/store)")
    parser.add_argument("--vae", type=Path, help="V's model.pt (default: the store's newest)")
    parser.add_argument("--mdrnn", type=Path, help="M's model.pt (default: the store's newest)")
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--rollouts", type=int, default=1)
    parser.add_argument("--early-stop", type=int, default=60)
    parser.add_argument("--score-episodes", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args(argv)
    if args.population < 3:
        parser.error("--population must be >= 3 (as controller.population)")
    vae = args.vae or newest(args.store, "vae")
    mdrnn = args.mdrnn or newest(args.store, "mdrnn")
    print(f"V: {vae}\nM: {mdrnn}", flush=True)
    rows = []
    for repeat in args.repeats:
        rows += curve(AgentFiles(str(vae), str(mdrnn), EnvConfig(action_repeat=repeat)), args)
    print(markdown(rows, args.repeats))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
