"""Small plotting helpers shared by the steps: image grids and per-epoch curves, as PNG files.

They draw on a bare matplotlib `Figure` (no pyplot), which renders with Agg when saved: no
global backend is switched, no window can open, and nothing is imported until a figure is made.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl file (an empty list when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def image_rows(rows: list[tuple[str, np.ndarray]], path: Path, title: str = "") -> Path:
    """Save a grid with one row per (label, uint8 images (N, H, W, 3)) to `path`."""
    from matplotlib.figure import Figure

    columns = max(len(images) for _, images in rows)
    fig = Figure(figsize=(1.2 * columns + 1.2, 1.3 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
            else:
                ax.set_axis_off()
        axes[r][0].set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)
    return path


def curves(
    series: dict[str, tuple[list[float], list[float]]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """Save line plots of {label: (x, y)} on one axis to `path`; missing values are skipped."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for label, (xs, ys) in series.items():
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
        if points:
            px, py = zip(*points, strict=True)
            ax.plot(px, py, marker="o", markersize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    return path
