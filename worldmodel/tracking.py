"""Experiment tracking: the `logger` config group, on top of the metrics.jsonl always written.

    logger=none          (default) nothing beyond metrics.jsonl and summary.json
    logger=tensorboard   event files in <run dir>/tensorboard (needs the `tensorboard` package)
    logger=wandb         Weights & Biases, offline by default: files in <run dir>/wandb that
                         `wandb sync` uploads later (needs the `wandb` package)

`make_tracker(cfg.logger, run_dir)` returns a Tracker with `log(metrics, step)`,
`log_video(name, path)` (True where the backend takes videos) and `close()`. The runner forwards
every metrics row a step logs (`log_row`) and, once a step's result is there, its final
numbers and videos (`log_result`). Backends are imported only when chosen, so a user who
never picks one never installs it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worldmodel.errors import ConfigError

log = logging.getLogger("worldmodel")

BACKENDS = ("none", "tensorboard", "wandb")
VIDEO_SUFFIXES = (".mp4", ".gif")


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of `metrics` (lists, strings and None are not plottable)."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[name] = float(value)
    return out


def split_row(row: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A metrics.jsonl row -> (its step/name metrics, its index value as the step).

    Rows hold the index (epoch=3, generation=5: names without '/'), the step's metrics
    ("vae/loss") and "time"; the first index is the x axis.
    """
    index = [v for k, v in row.items() if "/" not in k and k != "time"]
    step = int(index[0]) if index and isinstance(index[0], (int, float)) else 0
    return {k: v for k, v in row.items() if "/" in k}, step


class Tracker:
    """The `none` backend, and the interface of the others."""

    name = "none"

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record scalar metrics (names like "vae/loss") at x = step."""

    def log_video(self, name: str, path: Path) -> bool:
        """Record a video file; False where the backend cannot."""
        return False

    def close(self) -> None:
        """Flush and release; the tracker is unusable afterwards."""

    def log_row(self, row: Mapping[str, Any]) -> None:
        """Forward one metrics.jsonl row (what StepContext.log_metrics writes)."""
        metrics, step = split_row(row)
        if metrics:
            self.log(metrics, step)

    def log_result(self, name: str, path: Path, metrics: Mapping[str, Any],
                   reused: bool) -> None:
        """A step's result is there: its final numbers under `name/final/`, its videos, and
        (when reused, so nothing was logged live) its stored per-epoch curves."""
        path = Path(path)
        if reused:
            metrics_file = path / "metrics.jsonl"
            if metrics_file.is_file():
                for line in metrics_file.read_text().splitlines():
                    if line.strip():
                        self.log_row(json.loads(line))
        final = {f"{name}/final/{k}": v for k, v in scalars(metrics).items()}
        if final:
            self.log(final, 0)
        for video in sorted(p for p in path.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES):
            self.log_video(f"{name}/{video.stem}", video)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TensorBoardTracker(Tracker):
    """torch.utils.tensorboard's SummaryWriter. Videos are not logged: TensorBoard's video
    support needs moviepy, and the videos sit next to the result anyway."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, config: Mapping[str, Any] | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch raises this when tensorboard is not installed
            raise ConfigError(
                'logger=tensorboard needs the tensorboard package: pip install -e ".[tensorboard]"'
            ) from exc
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        if config:
            text = json.dumps(config, indent=2, default=str)
            # Indented by 4: TensorBoard renders text as Markdown, this keeps it a code block.
            self.writer.add_text("config", "\n".join("    " + s for s in text.splitlines()))

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for name, value in scalars(metrics).items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """wandb.init(mode=offline by default). Each step's metrics get their own x axis
    ("vae/epoch", "controller/generation"), since wandb's own step must only grow and the
    steps of a run each count from 1."""

    name = "wandb"

    def __init__(self, run_dir: Path, settings: Mapping[str, Any],
                 config: Mapping[str, Any] | None = None):
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError(
                'logger=wandb needs the wandb package: pip install -e ".[wandb]"'
            ) from exc
        self.wandb = wandb
        self.axes: set[str] = set()
        self.run = wandb.init(
            project=settings.get("project") or "worldmodel",
            entity=settings.get("entity"),
            group=settings.get("group"),
            tags=list(settings.get("tags") or []),
            name=settings.get("name") or Path(run_dir).name,
            mode=settings.get("mode") or "offline",
            dir=str(run_dir),
            config=dict(config or {}),
        )

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        values = scalars(metrics)
        for prefix in {name.split("/", 1)[0] for name in values}:
            axis = f"{prefix}/step"
            if axis not in self.axes:
                self.run.define_metric(axis)
                self.run.define_metric(f"{prefix}/*", step_metric=axis)
                self.axes.add(axis)
            values[axis] = step
        if values:
            self.run.log(values)

    def log_video(self, name: str, path: Path) -> bool:
        self.run.log({name: self.wandb.Video(str(path))})
        return True

    def close(self) -> None:
        self.run.finish()


def make_tracker(settings: Mapping[str, Any] | None, run_dir: Path,
                 config: Mapping[str, Any] | None = None) -> Tracker:
    """The tracker `settings` (the `logger` config group) ask for; `config`, the composed
    config as plain data, is recorded with the run where the backend keeps it."""
    settings = dict(settings or {})
    backend = settings.get("backend", "none")
    run_dir = Path(run_dir)
    if backend == "none":
        return Tracker()
    if backend == "tensorboard":
        tracker: Tracker = TensorBoardTracker(run_dir / settings.get("dir", "tensorboard"), config)
    elif backend == "wandb":
        tracker = WandbTracker(run_dir, settings, config)
    else:
        raise ConfigError(f"logger.backend={backend!r} is not one of {', '.join(BACKENDS)}")
    log.info("logger: %s, in %s", backend, run_dir)
    return tracker
