"""figures: every figure of a run, redrawn from the stored results of the other steps.

Inputs: collect, vae, encode, mdrnn, controller, evaluate. Nothing is trained: each step's own
figure function reads its stored files (models, metrics.jsonl, returns.json, videos). The step
reads only the `figures` config group, so adding it changes no other step's key, and
`force=[figures]` redraws without touching what it draws from.

Outputs, in the step's directory, one folder per step drawn:

    vae/reconstructions.png, vae/losses.png      real / reconstructed / z ~ N(0, I); V's loss
    mdrnn/dream.png, mdrnn/dream.gif             real against dreamed frames (strip, animation)
    mdrnn/dream_error.png, calibration.png, losses.png, evaluation.json
    controller/cma_es.png                        best / mean / worst per generation and scores
    evaluate/returns.png                         histogram of the evaluation returns
    evaluate/filmstrip.png                       frames of the best evaluation episode, taken
                                                 from its stored video
    figures.json                                 the figures drawn, per step, and any skipped
    report.md                                    the numbers, their protocol and the figures

`figures.format: pdf | svg` writes vector files where a figure goes through
worldmodel.figures; the animation stays a GIF. The same drawing serves
scripts/make_figures.py, which redraws a run from its summary.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worldmodel import durable, figures, layout, report
from worldmodel.config import at_least, one_of, require
from worldmodel.errors import StoreError, WorldModelError

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

log = logging.getLogger("worldmodel.figures")

INPUTS = ("collect", "vae", "encode", "mdrnn", "controller", "evaluate")
# With several rounds the step reads these of every round too (the last round's others):
# collect for V's figures (its episodes span the rounds), the rest for rounds.png and the
# report's table of rounds.
ROUND_INPUTS = ("collect", "mdrnn", "controller", "evaluate")
Rounds = dict[str, list[Path]]
FILES = layout.FIGURES
SHOWN = (".png", ".pdf", ".svg", ".gif")  # what counts as a figure in an output folder
# The order a reader meets them in (others follow, by name).
ORDER = ("reconstructions", "dream", "dream_error", "calibration", "losses", "cma_es",
         "returns", "filmstrip")


@dataclass
class FiguresParams:
    """The `figures` config group."""

    format: str = "png"
    """png | pdf | svg (animations stay GIF)."""
    filmstrip_frames: int = 8
    """Frames of the best evaluation episode in evaluate/filmstrip."""


@dataclass
class FiguresStepConfig:
    figures: FiguresParams = field(default_factory=FiguresParams)

    def __post_init__(self) -> None:
        require([*one_of("figures.format", self.figures.format, figures.FORMATS),
                 *at_least("figures", self.figures, ("filmstrip_frames",))])


# --- each step's figures, from its stored files ----------------------------------------------


def draw_vae(dirs: dict[str, Path], rounds: Rounds, out: Path, params: FiguresParams) -> None:
    from worldmodel.figures import vae  # imports torch: only when drawn

    collects = rounds.get("collect") or [dirs["collect"]]  # V trained on every round's
    vae.make_figures(dirs["vae"], [d / layout.COLLECT.EPISODES for d in collects], out)


def draw_mdrnn(dirs: dict[str, Path], rounds: Rounds, out: Path, params: FiguresParams
               ) -> None:
    from worldmodel.figures import mdrnn

    mdrnn.make_figures(dirs["mdrnn"], dirs["encode"], dirs["vae"], out)


def draw_controller(dirs: dict[str, Path], rounds: Rounds, out: Path, params: FiguresParams
                    ) -> None:
    from worldmodel.figures import controller

    controller.make_figure(dirs["controller"], out)


def draw_evaluate(dirs: dict[str, Path], rounds: Rounds, out: Path, params: FiguresParams
                  ) -> None:
    from worldmodel.figures import evaluate

    results = json.loads((dirs["evaluate"] / layout.EVALUATE.RESULTS).read_text())
    out.mkdir(parents=True, exist_ok=True)
    evaluate.histogram(results["returns"], out / layout.EVALUATE.HISTOGRAM,
                       f"C on {results['episodes']} unseen tracks: "
                       f"{results['mean_return']:.0f} ± {results['std_return']:.0f}")
    videos = sorted(dirs["evaluate"].glob("best_episode.*"))
    if not videos:
        raise StoreError(f"evaluate: no best_episode video in {dirs['evaluate']}")
    best = results["episode_results"][results["videos"]["best_episode"]]
    frames, times = video_frames(videos[0], params.filmstrip_frames)
    figures.image_rows(
        [(f"track {best['track']}", frames)], out / FILES.FILMSTRIP,
        title=f"The best evaluation episode: return {best['return']:.1f} in {best['steps']} "
              f"steps (from {videos[0].name})",
        columns=[f"{t:.1f} s" for t in times],
    )


def draw_rounds(dirs: dict[str, Path], rounds: Rounds, out: Path, params: FiguresParams
                ) -> None:
    from worldmodel.figures import evaluate

    if len(rounds.get("evaluate", [])) < 2:
        return  # one round: nothing to compare
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluate.round_scores(rounds["controller"], rounds["evaluate"])
    evaluate.rounds_figure(rows, out / FILES.ROUNDS)
    durable.write_json(out / FILES.ROUNDS_DATA, rows)


# Which inputs each group needs; a group whose inputs are not all there is skipped.
DRAWERS: dict[str, tuple[tuple[str, ...], Callable]] = {
    "vae": (("vae", "collect"), draw_vae),
    "mdrnn": (("mdrnn", "encode", "vae"), draw_mdrnn),
    "controller": (("controller",), draw_controller),
    "evaluate": (("evaluate",), draw_evaluate),
    "rounds": (("controller", "evaluate"), draw_rounds),
}


def video_frames(path: Path, count: int) -> tuple[np.ndarray, list[float]]:
    """`count` frames spread evenly over a stored video, and their times in seconds.

    GIF (the default videos) through Pillow, with each frame's own duration, since Pillow
    merges identical consecutive frames; MP4 through imageio-ffmpeg (the `video` extra).
    """
    if path.suffix.lower() == ".gif":
        from PIL import Image

        with Image.open(path) as image:
            starts, elapsed = [], 0.0
            for i in range(image.n_frames):
                image.seek(i)
                starts.append(elapsed)
                elapsed += image.info.get("duration", 0) / 1000
            picks = np.linspace(0, image.n_frames - 1, min(count, image.n_frames))
            picks = sorted(set(picks.round().astype(int).tolist()))
            frames = []
            for i in picks:
                image.seek(i)
                frames.append(np.asarray(image.convert("RGB")))
        return np.stack(frames), [starts[i] for i in picks]
    # Two passes (count, then keep the picks): a whole episode at 600x400 is too big to hold.
    total = sum(1 for _ in mp4_frames(path)[1])
    picks = set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist())
    meta, stream = mp4_frames(path)
    width, height = meta["size"]
    frames, times = [], []
    for i, raw in enumerate(stream):
        if i in picks:
            frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
            times.append(i / meta["fps"])
    return np.stack(frames), times


def mp4_frames(path: Path) -> tuple[dict, Iterator[bytes]]:
    """(metadata, raw RGB frames) of an MP4, through imageio-ffmpeg (the `video` extra)."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise StoreError(f"reading {path.name} needs imageio-ffmpeg: "
                         'pip install -e ".[video]"') from exc
    stream = imageio_ffmpeg.read_frames(str(path))
    return next(stream), stream


def draw_all(dirs: dict[str, Path], out_dir: Path, params: FiguresParams | None = None,
             rounds: Rounds | None = None) -> dict[str, dict]:
    """Draw every figure the results in `dirs` ({step: stored directory}, the last round's)
    allow, into out_dir/<step>/; returns {step: {"figures": [paths relative to out_dir]} or
    {"skipped": why}}, also written to out_dir/figures.json. `rounds` ({step: every round's
    directory}) adds rounds/rounds.png when a run has several rounds.

    A group whose results are missing or unreadable is skipped with a warning, so a partial
    run (say steps=[vae]) still gets the figures it can have.
    """
    params = params or FiguresParams()
    rounds = rounds or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, dict] = {}
    with figures.style(params.format):
        for name, (needs, draw) in DRAWERS.items():
            missing = [n for n in needs if n not in dirs]
            if missing:
                if name in dirs and name in INPUTS:
                    drawn[name] = {"skipped": f"needs the stored {', '.join(missing)}"}
                continue
            out = out_dir / name
            try:
                draw(dirs, rounds, out, params)
            except (WorldModelError, OSError, KeyError, ValueError) as exc:
                log.warning("figures: %s skipped: %s", name, exc)
                drawn[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
                continue
            if not out.is_dir():
                continue  # nothing to draw (rounds, in a run of one round)
            files = sorted((p for p in out.iterdir() if p.suffix.lower() in SHOWN),
                           key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER),
                                          p.suffix == ".gif", p.name))
            drawn[name] = {"figures": [p.relative_to(out_dir).as_posix() for p in files]}
    durable.write_json(out_dir / FILES.INDEX, drawn)
    return drawn


# --- a finished run, from its summary.json (scripts/make_figures.py) ---------------------------


def by_kind(found: list[tuple[str, Path]]) -> tuple[dict[str, Path], Rounds]:
    """({kind: the last round's directory}, {kind: every round's, in order}) from (kind, path)
    pairs listed in round order."""
    rounds: Rounds = {}
    for kind, path in found:
        rounds.setdefault(kind, []).append(path)
    return {kind: paths[-1] for kind, paths in rounds.items()}, rounds


def regenerate(run_dir: Path, out_dir: Path | None = None, fmt: str = "png",
               filmstrip_frames: int = 8) -> Path:
    """Redraw a run's figures from the results its summary.json points at; write its report.

    Figures go to `out_dir` (default RUN_DIR/figures), never into the store; the report is
    RUN_DIR/report.md. Returns the report's path.
    """
    run_dir = Path(run_dir)
    summary = report.read_summary(run_dir)
    stored = {name: Path(entry["path"]) for name, entry in summary.items()
              if isinstance(entry, dict) and entry.get("path") and layout.step_kind(name) in INPUTS}
    gone = [f"{n} ({p})" for n, p in stored.items() if not p.is_dir()]
    if gone:
        raise StoreError(f"stored results of this run are gone: {', '.join(gone)}")
    dirs, rounds = by_kind([(layout.step_kind(name), path) for name, path in stored.items()])
    out_dir = Path(out_dir) if out_dir else run_dir / "figures"
    drawn = draw_all(dirs, out_dir, FiguresParams(format=figures.check_format(fmt),
                                                  filmstrip_frames=filmstrip_frames), rounds)
    return report.write_report(run_dir / FILES.REPORT, summary, out_dir, drawn)


# --- the step ----------------------------------------------------------------------------------


def run(ctx: StepContext) -> dict:
    params: FiguresParams = ctx.config.figures
    dirs, rounds = by_kind([(ctx.kinds.get(name, name), artifact.path)
                            for name, artifact in ctx.inputs.items()])
    drawn = draw_all(dirs, ctx.dir, params, rounds)
    # The run directory is not known here (and a reused result serves many runs): this
    # report is built from the inputs' manifests; the runner's report adds the run's timings.
    summary = report.summary_from_manifests(
        {name: (artifact.key, artifact.path, artifact.manifest)
         for name, artifact in ctx.inputs.items()})
    path = report.write_report(ctx.dir / FILES.REPORT, summary, ctx.dir, drawn)
    count = sum(len(v.get("figures", [])) for v in drawn.values())
    ctx.log.info("%d figures and %s written", count, path.name)
    return {"figures": count, "format": params.format,
            "skipped": sorted(k for k, v in drawn.items() if "skipped" in v)}
