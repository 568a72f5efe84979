"""The ablation table: one row per finished run, with what it took and how well it drives.

    worldmodel paths.outputs=outputs/ablate                               # the default
    worldmodel paths.outputs=outputs/ablate controller.rollouts=1 controller.generations=200
    python scripts/ablation_table.py outputs/ablate/runs/*

Runs that share `paths.outputs` share a store, so a setting that changes only the controller
reuses the default's V and M. That is why each row reports two times:

- *time to agent*: the compute time of every step the run's agent is made of (collect through
  evaluate and figures, from each stored result's manifest), i.e. what a fresh run of that
  command takes on this machine, reused steps included;
- *this run*: the wall time of the run itself (reused steps cost ~0).

A row's setting is its command-line overrides minus `paths.*`. Its score is the evaluate
step's mean ± std (population std) over its episodes, with the fraction of episodes >= 900.
Runs without an evaluation (failed, interrupted) are listed as such. A run of several rounds
(iterations > 1) is scored by its last round, and its time to agent is that of every round.
Prints markdown, or CSV with --csv.

    python scripts/ablation_table.py --rounds outputs/ablate/runs/<time>

prints instead, per round of each run: its compute time, the real CarRacing frames it drove
for each use (collecting data, the search's fitness, scoring the kept-controller candidates,
the evaluation), the evaluation's score, the kept controller's score and, in dream mode, the
last dream score; read from the stored results themselves.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from worldmodel import layout
from worldmodel.store import MANIFEST

# The steps whose results make up the agent and its evaluation (pipeline order).
AGENT_STEPS = ("collect", "vae", "encode", "mdrnn", "controller", "evaluate", "figures")


@dataclass
class Row:
    run: Path
    setting: str
    status: str
    minutes_to_agent: float | None
    minutes_this_run: float | None
    step_minutes: dict[str, float]
    episodes: int | None
    mean: float | None
    std: float | None
    fraction_900: float | None


def read_row(run_dir: Path) -> Row:
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise SystemExit(f"error: {summary_path} is missing; pass run directories "
                         "(<paths.outputs>/runs/<time>)")
    summary = json.loads(summary_path.read_text())
    overrides_path = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
    setting = " ".join(str(o) for o in overrides or [] if not str(o).startswith("paths.")
                       ) or "default"
    run = summary.get("run", {})
    steps: dict[str, float] = {}
    for name, entry in summary.items():  # every round's rows add to their step's time
        kind = layout.step_kind(name)
        if kind in AGENT_STEPS and isinstance(entry, dict) and entry.get("compute_seconds"
                                                                         ) is not None:
            steps[kind] = steps.get(kind, 0.0) + entry["compute_seconds"] / 60
    evaluations = [entry for name, entry in summary.items()
                   if layout.step_kind(name) == "evaluate" and isinstance(entry, dict)]
    evaluation = evaluations[-1] if evaluations else {}
    complete = all(name in steps for name in AGENT_STEPS)
    return Row(
        run=run_dir, setting=setting, status=str(run.get("status")),
        minutes_to_agent=sum(steps.values()) if complete else None,
        minutes_this_run=run["seconds"] / 60 if run.get("seconds") is not None else None,
        step_minutes=steps, episodes=evaluation.get("episodes"),
        mean=evaluation.get("mean_return"), std=evaluation.get("std_return"),
        fraction_900=evaluation.get("fraction_900"),
    )


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(rows: list[Row]) -> str:
    lines = ["| setting | time to agent (min) | this run (min) | collect / V / M / C / eval "
             "(min) | episodes | mean ± std | ≥ 900 |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        parts = " / ".join(fmt(row.step_minutes.get(name), ".1f")
                           for name in ("collect", "vae", "mdrnn", "controller", "evaluate"))
        score = (f"{row.mean:.1f} ± {row.std:.1f}" if row.mean is not None
                 else f"no evaluation ({row.status})")
        lines.append(f"| `{row.setting}` | {fmt(row.minutes_to_agent, '.1f')} | "
                     f"{fmt(row.minutes_this_run, '.1f')} | {parts} | "
                     f"{fmt(row.episodes, 'd')} | {score} | "
                     f"{fmt(None if row.fraction_900 is None else 100 * row.fraction_900, '.0f')}"
                     f"{'' if row.fraction_900 is None else '%'} |")
    return "\n".join(lines)


def write_csv(rows: list[Row]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["setting", "minutes_to_agent", "minutes_this_run", "episodes",
                     "mean_return", "std_return", "fraction_900", "status", "run"])
    for row in rows:
        writer.writerow([row.setting, row.minutes_to_agent, row.minutes_this_run, row.episodes,
                         row.mean, row.std, row.fraction_900, row.status, row.run])


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def round_rows(run_dir: Path) -> list[dict]:
    """Per round of a run: minutes, real frames per use, and scores (see the docstring)."""
    summary = read_json(run_dir / "summary.json")
    rounds: dict[int, dict] = {}
    for name, entry in summary.items():
        if name == "run" or not isinstance(entry, dict) or not entry.get("path"):
            continue
        kind, k, path = layout.step_kind(name), layout.step_round(name), Path(entry["path"])
        row = rounds.setdefault(k, {"round": k, "minutes": 0.0})
        if kind == "figures":
            continue
        row["minutes"] += (entry.get("compute_seconds") or 0.0) / 60
        if kind == "collect":
            dataset = read_json(path / layout.COLLECT.DATASET)
            repeat = read_json(path / MANIFEST)["config"]["env"]["action_repeat"]
            row["collect_frames"] = dataset.get("env_frames", round(
                dataset["episodes"] * dataset["mean_steps"] * repeat))
        elif kind == "controller":
            info = read_json(path / layout.CONTROLLER.SUMMARY)
            metrics = [json.loads(line) for line in
                       (path / layout.METRICS).read_text().splitlines() if line.strip()]
            row["search_frames"] = sum(m["controller/env_steps"] for m in metrics)
            row["score_frames"] = sum(m.get("controller/score_env_steps", 0) for m in metrics)
            row["kept_score"] = info["best_score"]
            row["dream_score"] = info.get("final_dream_score")
        elif kind == "evaluate":
            results = read_json(path / layout.EVALUATE.RESULTS)
            row["evaluate_frames"] = sum(e["steps"] for e in results["episode_results"])
            row.update(mean=results["mean_return"], std=results["std_return"],
                       episodes=results["episodes"])
    return [rounds[k] for k in sorted(rounds)]


def rounds_markdown(run_dir: Path) -> str:
    lines = [f"{run_dir}:", "", "| round | compute (min) | real frames: collect / search / "
             "scoring / evaluation | evaluation mean ± std | episodes | kept controller's "
             "score | dream score |", "|---|---|---|---|---|---|---|"]
    for r in round_rows(run_dir):
        frames = " / ".join(fmt(r.get(k), ",d") for k in (
            "collect_frames", "search_frames", "score_frames", "evaluate_frames"))
        score = f"{r['mean']:.1f} ± {r['std']:.1f}" if "mean" in r else "–"
        lines.append(f"| {r['round']} | {r['minutes']:.1f} | {frames} | {score} | "
                     f"{fmt(r.get('episodes'), 'd')} | {fmt(r.get('kept_score'), '.1f')} | "
                     f"{fmt(r.get('dream_score'), '.1f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (with summary.json)")
    parser.add_argument("--csv", action="store_true", help="CSV instead of markdown")
    parser.add_argument("--rounds", action="store_true",
                        help="per round of each run: time, real frames per use, scores")
    args = parser.parse_args(argv)
    if args.rounds:
        print("\n\n".join(rounds_markdown(run) for run in args.runs))
        return 0
    rows = [read_row(run) for run in args.runs]
    if args.csv:
        write_csv(rows)
    else:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
