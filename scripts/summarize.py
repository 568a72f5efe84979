"""Summarise a sweep: the evaluation return per configuration, mean ± std across seeds.

    worldmodel -m seed=0,1,2 controller=real,dream
    python scripts/summarize.py outputs/multiruns/2026-01-01_12-00-00
    python scripts/summarize.py SWEEP_DIR --metric controller.best_score --out somewhere/

Each job of a Hydra multirun has a directory with summary.json and .hydra/overrides.yaml. A
job's configuration is its overrides minus `seed=`; jobs of one configuration are its seeds.
Overrides every job shares are listed once, above the table. Writes sweep_summary.csv,
sweep_summary.md and sweep_summary.png (into SWEEP_DIR, or --out) and prints where they went.
The std is across seeds (sample std, ddof=1; 0 for a single seed). A job without the metric
(failed, or its run stopped before the step) is listed as left out, not averaged as zero.

Below the table, one row per job (also sweep_jobs.csv): its metric, and from its evaluation's
returns the episodes, median, share >= 900 and episodes below 500; its run's wall time
(summary.json run.seconds: the runner's, from the first step to the last) and the CPU model
it ran on.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

NAME = "sweep_summary"


POOR = 500.0  # an episode below this left the road for good or crashed out


@dataclass
class Job:
    path: Path
    overrides: list[str]
    seed: str | None
    value: float | None
    status: str | None
    summary: dict = field(default_factory=dict)

    def details(self) -> dict[str, object]:
        """What one job's run shows besides the metric: its evaluation's spread, time, CPU."""
        run = self.summary.get("run", {})
        evaluation = self.summary.get("evaluate", {})
        returns = evaluation.get("returns") or []
        return {
            "episodes": len(returns) or None,
            "median": statistics.median(returns) if returns else None,
            "share_900": evaluation.get("fraction_900"),  # the evaluate step's own share
            "below_500": sum(r < POOR for r in returns) if returns else None,
            "minutes": run["seconds"] / 60 if isinstance(run.get("seconds"), (int, float))
            else None,
            "cpu": (run.get("hardware") or {}).get("cpu_model"),
        }


@dataclass
class Row:
    configuration: str
    seeds: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float:
        n = len(self.values)
        if n < 2:
            return 0.0
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (n - 1))


def metric_value(summary: dict, metric: str) -> float | None:
    """summary["evaluate"]["mean_return"] for metric "evaluate.mean_return"."""
    step, _, name = metric.partition(".")
    value = summary.get(step, {}).get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def read_jobs(sweep_dir: Path, metric: str) -> list[Job]:
    jobs = []
    for path in sorted(sweep_dir.rglob("summary.json")):
        job_dir = path.parent
        summary = json.loads(path.read_text())
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        overrides = [str(o) for o in overrides or []]
        seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), None)
        if seed is None and summary.get("run", {}).get("seed") is not None:
            seed = str(summary["run"]["seed"])
        jobs.append(Job(job_dir, [o for o in overrides if not o.startswith("seed=")], seed,
                        metric_value(summary, metric), summary.get("run", {}).get("status"),
                        summary))
    return jobs


def label(job: Job, common: list[str]) -> str:
    """A job's configuration: its overrides but seed= and those every job shares."""
    return " ".join(o for o in job.overrides if o not in common) or "(every job)"


def group(jobs: list[Job]) -> tuple[list[str], list[Row], list[Job]]:
    """(overrides common to every job, one row per configuration in first-seen order, jobs
    left out for want of the metric)."""
    common = sorted(set.intersection(*(set(j.overrides) for j in jobs))) if jobs else []
    rows: dict[str, Row] = {}
    left_out = []
    for job in jobs:
        name = label(job, common)
        row = rows.setdefault(name, Row(name))
        if job.value is None:
            left_out.append(job)
            continue
        row.seeds.append(job.seed if job.seed is not None else "?")
        row.values.append(job.value)
    return common, [r for r in rows.values() if r.values], left_out


def write_csv(path: Path, rows: list[Row], metric: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "seeds", "n", f"{metric} mean", f"{metric} std",
                         "min", "max"])
        for r in rows:
            writer.writerow([r.configuration, " ".join(r.seeds), len(r.values), r.mean, r.std,
                             min(r.values), max(r.values)])


JOB_COLUMNS = ("job", "configuration", "seed", "status", "value", "episodes", "median",
               "share_900", "below_500", "minutes", "cpu")


def job_rows(jobs: list[Job], common: list[str]) -> list[dict[str, object]]:
    return [{"job": job.path.name, "configuration": label(job, common), "seed": job.seed,
             "status": job.status, "value": job.value, **job.details()}
            for job in jobs]


def write_jobs_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=JOB_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def cell(value: object, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def jobs_markdown(rows: list[dict[str, object]], metric: str) -> list[str]:
    lines = [f"| job | configuration | seed | {metric} | median | ≥ 900 | below 500 | "
             "wall time (min) | CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = cell(None if r["share_900"] is None else 100 * r["share_900"], ".0f")
        below = (f"{r['below_500']} of {r['episodes']}" if r["episodes"] else "–")
        lines.append(f"| {r['job']} | {str(r['configuration']).replace('|', chr(92) + '|')} | "
                     f"{cell(r['seed'])} | {cell(r['value'], '.1f')} | {cell(r['median'], '.1f')}"
                     f" | {share}{' %' if r['share_900'] is not None else ''} | {below} | "
                     f"{cell(r['minutes'], '.1f')} | {cell(r['cpu'])} |")
    return lines


def write_markdown(path: Path, rows: list[Row], common: list[str], left_out: list[Job],
                   metric: str, sweep_dir: Path, jobs: list[dict[str, object]]) -> None:
    lines = [f"# Sweep {sweep_dir.name}: {metric}", ""]
    if common:
        lines += ["Every job: " + " ".join(f"`{o}`" for o in common), ""]
    lines += [f"| configuration | seeds | n | {metric} (mean ± std across seeds) | min | max |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.configuration.replace('|', chr(92) + '|')} | {' '.join(r.seeds)} | "
                     f"{len(r.values)} | {r.mean:.1f} ± {r.std:.1f} | {min(r.values):.1f} | "
                     f"{max(r.values):.1f} |")
    if left_out:
        lines += ["", f"Left out ({len(left_out)} job(s) without {metric}): " + ", ".join(
            f"{j.path.name} ({j.status})" for j in left_out)]
    lines += ["", "Per job (median, ≥ 900 and below 500 over its evaluation's episodes; wall "
              "time: its run, first step to last):", "", *jobs_markdown(jobs, metric)]
    lines += ["", f"![{metric} per configuration]({NAME}.png)"]
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, rows: list[Row], metric: str) -> Path:
    from matplotlib.figure import Figure

    from worldmodel import figures

    with figures.style("png"):
        fig = Figure(figsize=(max(4.0, 1.2 * len(rows) + 2), 4), layout="constrained")
        ax = fig.subplots()
        xs = range(len(rows))
        ax.bar(xs, [r.mean for r in rows], yerr=[r.std for r in rows], capsize=4,
               color="tab:blue", alpha=0.6, label="mean ± std across seeds")
        for x, r in zip(xs, rows, strict=True):
            ax.plot([x] * len(r.values), r.values, "o", color="black", label="one seed"
                    if x == 0 else None)
        ax.set_xticks(list(xs), [r.configuration for r in rows], rotation=20, ha="right")
        ax.set_ylabel(metric)
        ax.legend()
        return figures.save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (outputs/multiruns/T)")
    parser.add_argument("--metric", default="evaluate.mean_return",
                        help="STEP.NAME in each job's summary.json (default %(default)s)")
    parser.add_argument("--out", type=Path, help="where the files go (default SWEEP_DIR)")
    args = parser.parse_args(argv)
    jobs = read_jobs(args.sweep_dir, args.metric)
    common, rows, left_out = group(jobs)
    if not rows:
        print(f"error: no job under {args.sweep_dir} has {args.metric} in its summary.json",
              file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    per_job = job_rows(jobs, common)
    write_csv(out / f"{NAME}.csv", rows, args.metric)
    write_jobs_csv(out / "sweep_jobs.csv", per_job)
    write_markdown(out / f"{NAME}.md", rows, common, left_out, args.metric, args.sweep_dir,
                   per_job)
    plot(out / f"{NAME}.png", rows, args.metric)
    print(f"{len(jobs)} jobs, {len(rows)} configurations"
          + (f", {len(left_out)} left out" if left_out else ""))
    for name in (f"{NAME}.csv", "sweep_jobs.csv", f"{NAME}.md", f"{NAME}.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
