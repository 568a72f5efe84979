"""report.md: a run's numbers, the protocol behind them and its figures, in one page.

What a reader needs to trust a result: how many episodes, on which tracks, how many steps,
how long each step took and on what, with which package versions and commit. The numbers come
from the run's summary.json and each step's manifest.json; the figures from a figures
directory (the figures step's result, or what scripts/make_figures.py drew), linked by
relative paths so the report renders in any Markdown viewer from where it lies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from worldmodel import durable, layout, seeding
from worldmodel.envs import IDENTICAL
from worldmodel.errors import StoreError
from worldmodel.store import MANIFEST

SUMMARY = "summary.json"
REPORT = "report.md"
TITLES = {"vae": "V: the VAE", "mdrnn": "M: the MDN-RNN", "controller": "C: CMA-ES",
          "evaluate": "The agent on unseen tracks"}


def step_names(summary: dict) -> list[str]:
    """The steps a summary holds, in the order of the pipeline's table (the runner writes them
    in that order)."""
    return [name for name in summary if name != "run"]


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise StoreError(f"{path} does not exist: give a run directory (outputs/runs/<time> "
                         "or outputs/multiruns/<time>/<n>)")
    return json.loads(path.read_text())


def read_manifest(entry: dict[str, Any]) -> dict[str, Any]:
    """A summary entry's manifest ({} when its stored result is gone)."""
    path = Path(entry.get("path", "")) / MANIFEST
    return json.loads(path.read_text()) if entry.get("path") and path.is_file() else {}


def summary_from_manifests(results: dict[str, tuple[str, Path, dict]]) -> dict[str, Any]:
    """A summary.json-shaped dict from {step: (key, path, manifest)}: what the figures step
    knows, which has no run of its own (no wall time of a run, no command)."""
    summary: dict[str, Any] = {}
    for name, (key, path, manifest) in results.items():
        summary[name] = {**manifest.get("metrics", {}), "key": key, "path": str(path),
                         "reused": None, "seconds": None,
                         "compute_seconds": manifest.get("seconds")}
    return summary


# --- formatting --------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def link(target: Path, base: Path) -> str:
    """`target` relative to the directory `base` (forward slashes, spaces escaped)."""
    rel = os.path.relpath(Path(target).absolute(), Path(base).absolute())
    return Path(rel).as_posix().replace(" ", "%20")


def seed_range(seeds: list[int]) -> str:
    if not seeds:
        return "–"
    shown = ", ".join(str(s) for s in seeds[:3]) + (", ..." if len(seeds) > 3 else "")
    return f"{len(seeds)} seeds in [{min(seeds)}, {max(seeds)}] ({shown})"


# --- sections ----------------------------------------------------------------------------------


def of_kind(summary: dict, kind: str) -> list[tuple[str, dict]]:
    """(name, entry) of every round's step of `kind` in a summary, in round order."""
    return [(name, entry) for name, entry in summary.items()
            if name != "run" and layout.step_kind(name) == kind and isinstance(entry, dict)]


def last_round(summary: dict, kind: str) -> dict | None:
    """The entry of `kind` from the last round the summary holds (evaluate_r2 over evaluate)."""
    found = of_kind(summary, kind)
    return found[-1][1] if found else None


def rounds_lines(summary: dict) -> list[str]:
    """Per round, the evaluation's mean and the kept controller's score (a run of rounds)."""
    evaluated = [(name, entry) for name, entry in of_kind(summary, "evaluate")
                 if "mean_return" in entry]
    if len(evaluated) < 2:
        return []
    lines = ["", "| round | evaluation mean ± std | episodes | kept controller's score | "
             "M: tile AUROC | M: done AUROC | M: reward r |", "|---|---|---|---|---|---|---|"]
    for name, ev in evaluated:
        k, suffix = layout.step_round(name), name.removeprefix("evaluate")
        c, m = summary.get(f"controller{suffix}", {}), summary.get(f"mdrnn{suffix}", {})
        lines.append(f"| {k} | {ev['mean_return']:.1f} ± {ev.get('std_return', 0):.1f} | "
                     f"{ev.get('episodes')} | {fmt(c.get('best_score'))} | "
                     f"{fmt(m.get('tile_auroc'))} | {fmt(m.get('done_auroc'))} | "
                     f"{fmt(m.get('reward_corr'))} |")
    return lines


def result_section(summary: dict) -> list[str]:
    ev = last_round(summary, "evaluate")
    if not ev or "mean_return" not in ev:
        return ["No evaluation in this run (the `evaluate` step did not run)."]
    return [
        f"**Mean return {ev['mean_return']:.1f} ± {ev.get('std_return', 0):.1f}** (std) over "
        f"{ev.get('episodes')} episodes on tracks never used in training; min "
        f"{fmt(ev.get('min_return'))}, max {fmt(ev.get('max_return'))}, "
        f"{100 * ev.get('fraction_900', 0):.0f}% of episodes ≥ 900 (\"solved\"), "
        f"{ev.get('laps_finished', 0)} laps finished, {fmt(ev.get('mean_steps'))} frames per "
        "episode on average.",
        *rounds_lines(summary),
    ]


def acting(action_repeat: int) -> str:
    return ("C acting on every frame" if action_repeat == 1
            else f"C acting every {action_repeat} frames (env.action_repeat)")


def frames_of(renderer: str | None) -> str:
    """Whose frames a renderer draws, for a protocol line."""
    renderer = renderer or "fast"
    kind = ("identical to Gymnasium's" if renderer in IDENTICAL
            else "a training renderer's, not Gymnasium's")
    return f"`{renderer}` frames ({kind})"


def protocol_lines(name: str, entry: dict, config: dict) -> str:
    """One line saying how a step's numbers were made (vae_r1's as vae's: rows of one kind)."""
    name = layout.step_kind(name)
    c = config.get(name, {}) if isinstance(config.get(name), dict) else {}
    env = config.get("env", {})
    seed = config.get("seed")
    train = f"[{seeding.TRAIN_TRACKS.start}, 2^30)"
    if name == "collect":
        return (f"{fmt(c.get('episodes'))} episodes of up to {fmt(c.get('max_steps'))} frames, "
                f"policy `{c.get('policy')}`, {frames_of(env.get('renderer'))}, seed {seed}, "
                f"tracks from the training range "
                f"{train}; {fmt(entry.get('frames'))} frames, exploration return "
                f"{fmt(entry.get('mean_return'))} ± {fmt(entry.get('std_return'))}")
    if name == "vae":
        return (f"{fmt(c.get('epochs'))} epochs, z_dim {fmt(c.get('z_dim'))}, on "
                f"{fmt(entry.get('train_frames'))} frames ({fmt(entry.get('train_episodes'))} "
                f"episodes), validated on {fmt(entry.get('val_frames'))} frames "
                f"({fmt(entry.get('val_episodes'))} episodes); loss {fmt(entry.get('loss'))}, "
                f"validation {fmt(entry.get('val_loss'))}")
    if name == "encode":
        return f"{fmt(entry.get('frames'))} frames of {fmt(entry.get('episodes'))} episodes"
    if name == "mdrnn":
        return (f"{fmt(c.get('epochs'))} epochs on windows of {fmt(c.get('seq_len'))} steps, "
                f"{fmt(c.get('hidden_size'))} LSTM units, {fmt(c.get('num_gaussians'))} "
                f"Gaussians; {fmt(entry.get('train_episodes'))} training / "
                f"{fmt(entry.get('val_episodes'))} validation episodes; loss "
                f"{fmt(entry.get('loss'))}, validation {fmt(entry.get('val_loss'))}; held out "
                f"(teacher forced), rewards `{c.get('rewards', 'regress')}`: reward r "
                f"{fmt(entry.get('reward_corr'))}, tile AUROC {fmt(entry.get('tile_auroc'))}, "
                f"end AUROC {fmt(entry.get('done_auroc'))} ({fmt(entry.get('done_ends'))} "
                f"ends); dreamed against real return over 10 / 30 / 100 steps: r "
                f"{fmt(entry.get('dream_return_corr_10'))} / "
                f"{fmt(entry.get('dream_return_corr_30'))} / "
                f"{fmt(entry.get('dream_return_corr_100'))}; dream z MSE "
                f"{fmt(entry.get('dream_mse_sampled'))} against "
                f"{fmt(entry.get('dream_mse_copy'))} for copying the last z"
                + ("" if entry.get("dream_tiles_30_gas") is None else
                   f"; tiles M expects over 30 steps of full gas / coasting / braking "
                   f"{fmt(entry.get('dream_tiles_30_gas'))} / "
                   f"{fmt(entry.get('dream_tiles_30_coast'))} / "
                   f"{fmt(entry.get('dream_tiles_30_brake'))} (the data: "
                   f"{fmt(entry.get('real_tiles_30'))})"))
    if name == "controller":
        searching = ("inside M" if c.get("mode") == "dream" else
                     f"on {frames_of(c.get('renderer') or env.get('renderer'))}")
        return (f"mode `{c.get('mode')}`, CMA-ES population {fmt(c.get('population'))} × "
                f"{fmt(c.get('rollouts'))} rollouts of up to {fmt(c.get('max_steps'))} frames, "
                f"{fmt(c.get('generations'))} generations, sigma0 {fmt(c.get('sigma0'))}, "
                f"z = {c.get('z')}, searching {searching}; kept the "
                f"{entry.get('best_source')} of generation "
                f"{fmt(entry.get('best_generation'))}, score {fmt(entry.get('best_score'))} "
                f"on {fmt(c.get('score_episodes'))} training-range tracks no generation drives, "
                f"on identical frames")
    if name == "evaluate":
        stock = env.get("max_steps") == 1000 and not env.get("domain_randomize")
        rules = "stock CarRacing-v3 rules" if stock else "NOT the stock CarRacing-v3 rules"
        driven = ("CMA-ES's final mean (es_mean.pt, evaluate.controller=final_mean), "
                  if entry.get("controller") == "final_mean" else "")
        return (f"{driven}{fmt(entry.get('episodes'))} episodes of up to "
                f"{fmt(env.get('max_steps'))} "
                f"frames ({rules}), {frames_of(entry.get('renderer') or env.get('renderer'))}, "
                f"{acting(env.get('action_repeat', 1))}, "
                f"no early stop, seed {seed}; evaluation tracks from "
                f"[2^30, 2^31), never driven in training: "
                f"{seed_range(entry.get('track_seeds') or [])}")
    if name == "figures":
        return f"{fmt(entry.get('figures'))} figures, format {entry.get('format')}"
    return ""


def steps_section(summary: dict, manifests: dict[str, dict]) -> list[str]:
    lines = [
        "| step | key | this run | wall time (this run) | share of the run | compute time | "
        "computed on | commit | protocol |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    run_seconds = summary.get("run", {}).get("seconds")
    for name in step_names(summary):
        entry = summary.get(name)
        if not isinstance(entry, dict):
            continue
        manifest = manifests.get(name, {})
        reused = {True: "reused", False: "ran", None: "–"}[entry.get("reused")]
        device = computed_on(manifest.get("hardware", {}))
        commit = (manifest.get("git_commit") or "–")[:12]
        protocol = protocol_lines(name, entry, manifest.get("config", {})).replace("|", "\\|")
        seconds = entry.get("seconds")
        share = (f"{100 * seconds / run_seconds:.0f}%" if seconds is not None and run_seconds
                 else "–")
        lines.append(f"| {name} | `{entry.get('key')}` | {reused} | "
                     f"{duration(seconds)} | {share} | "
                     f"{duration(entry.get('compute_seconds'))} | {device} | {commit} | "
                     f"{protocol} |")
    lines += ["", "*Wall time (this run)*: what the step took in this run (close to 0 when "
              "reused). *Compute time*: what computing the stored result took, when and where "
              "it was made (its manifest)."]
    return lines


def environment_section(summary: dict, manifests: dict[str, dict]) -> list[str]:
    run = summary.get("run", {})
    versions = run.get("versions") or next(
        (m["versions"] for m in manifests.values() if m.get("versions")), {})
    hardware = run.get("hardware") or next(
        (m["hardware"] for m in manifests.values() if m.get("hardware")), {})
    lines = []
    if run:
        lines += [f"- command: `{run.get('command')}`",
                  f"- status: {run.get('status')}, started {run.get('started')}, "
                  f"{duration(run.get('seconds'))} in all",
                  f"- seed: {run.get('seed')}; store: `{run.get('store')}`"]
    lines += [f"- git commit: `{run.get('git_commit') or '–'}`" if run else
              "- git commit: per step, in the table above",
              "- hardware: " + ", ".join(f"{k} {v}" for k, v in hardware.items()),
              "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    commit = run.get("git_commit") or ""
    if commit.endswith("+dirty"):
        lines.append("- note: the source tree had uncommitted changes (`+dirty`): the commit "
                     "alone does not reproduce this run")
    differ = sorted({m.get("git_commit") for m in manifests.values() if m} - {None})
    if len(differ) > 1:
        lines.append(f"- note: the stored results were made at {len(differ)} different "
                     "commits (see the table)")
    cpus = sorted({m.get("hardware", {}).get("cpu_model") for m in manifests.values() if m}
                  - {None})
    if len(cpus) > 1:
        lines.append(f"- note: the stored results were made on {len(cpus)} CPU models (see "
                     "the table): equal in distribution, not bit for bit, to one machine's")
    return lines


def computed_on(hardware: dict) -> str:
    """A step's device, and for the CPU its model: the CPU decides a result's last bits."""
    device = hardware.get("device", "–")
    model = hardware.get("cpu_model")
    return f"{device}, {model}" if model and device == "cpu" else device


def numbers_section(summary: dict) -> list[str]:
    lines = []
    for name in step_names(summary):
        entry = summary.get(name)
        if not isinstance(entry, dict):
            continue
        skip = {"key", "path", "reused", "seconds", "compute_seconds", "returns",
                "track_seeds"}
        rows = [(k, v) for k, v in sorted(entry.items())
                if k not in skip and not isinstance(v, (dict, list))]
        if not rows:
            continue
        lines += [f"<details><summary>{name}: every metric</summary>", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {fmt(v, 6)} |" for k, v in rows]
        lines += ["", "</details>", ""]
    return lines


def figures_section(figures_dir: Path, drawn: dict, base: Path,
                    summary: dict) -> list[str]:
    lines = []
    for name, result in drawn.items():
        lines += [f"### {TITLES.get(name, name)}", ""]
        if "skipped" in result:
            lines += [f"Not drawn: {result['skipped']}", ""]
            continue
        for rel in result.get("figures", []):
            path = figures_dir / rel
            target = link(path, base)
            # Markdown viewers show PNG, SVG and GIF inline; a PDF can only be linked.
            if path.suffix.lower() == ".pdf":
                lines.append(f"- [{path.name}]({target})")
            else:
                lines += [f"![{name}: {path.name}]({target})", ""]
        lines.append("")
    ev = last_round(summary, "evaluate")
    if isinstance(ev, dict) and ev.get("path"):
        videos = [p for stem in layout.EVALUATE.VIDEOS
                  for p in sorted(Path(ev["path"]).glob(stem + ".*"))]
        if videos:
            lines += ["Videos of the agent (stored with the evaluate result): " + ", ".join(
                f"[{p.name}]({link(p, base)})" for p in videos), ""]
    return lines


def write_report(path: Path, summary: dict, figures_dir: Path | None = None,
                 drawn: dict | None = None) -> Path:
    """Write report.md at `path` from a summary.json-shaped dict and a figures directory
    (`drawn` as figures_step.draw_all returns it; read from its figures.json when None)."""
    path = Path(path)
    manifests = {name: read_manifest(entry) for name, entry in summary.items()
                 if name != "run" and isinstance(entry, dict)}
    run = summary.get("run", {})
    title = f"# Run report: {path.parent.name}" if run else "# Figures report"
    lines = [title, ""]
    if not run:
        lines += ["Drawn by the figures step from stored results; the report in a run "
                  "directory adds that run's wall times and command.", ""]
    lines += ["## Result", "", *result_section(summary), "",
              "## Steps and protocol", "", *steps_section(summary, manifests), "",
              "## Environment", "", *environment_section(summary, manifests), "",
              "## Numbers", "", *numbers_section(summary)]
    if figures_dir is not None:
        figures_dir = Path(figures_dir)
        if drawn is None:
            index = figures_dir / "figures.json"
            drawn = json.loads(index.read_text()) if index.is_file() else {}
        lines += ["## Figures", "", *figures_section(figures_dir, drawn, path.parent, summary)]
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def write_run_report(run_dir: Path, summary: dict | None = None) -> Path:
    """RUN_DIR/report.md from its summary.json, with the figures step's figures if it ran.

    Meant for the command line after a run: the figures step's result may be reused from
    another run, so only here are this run's command and wall times known.
    """
    run_dir = Path(run_dir)
    summary = summary if summary is not None else read_summary(run_dir)
    entry = summary.get("figures")
    figures_dir = Path(entry["path"]) if isinstance(entry, dict) and entry.get("path") else None
    return write_report(run_dir / REPORT, summary, figures_dir)
