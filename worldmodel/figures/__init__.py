"""Small plotting helpers shared by the steps: image grids, per-epoch curves, one style.

They draw on a bare matplotlib `Figure` (no pyplot), which renders with Agg when saved: no
global backend is switched, no window can open, and nothing is imported until a figure is made.

Style and format. Every figure is drawn inside `style()`, which applies STYLE through
`matplotlib.rc_context` (never globally: importing worldmodel changes nobody's plots) and
chooses the file format: PNG by default, PDF or SVG for a write-up with
`with figures.style("pdf"): ...`. `save` swaps the suffix of the path it is given, so the steps
keep naming their figures `*.png` and call the same code for every format.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from worldmodel import durable

FORMATS = ("png", "pdf", "svg")
DPI = 100

# A few rc settings, applied per figure: readable small text, light grids, no top/right frame,
# text kept as text in vector files (so a PDF's labels stay searchable and editable).
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.4,
    "lines.markersize": 3,
    "image.interpolation": "nearest",
    "savefig.dpi": DPI,
    "savefig.bbox": "standard",
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
}

_FORMAT: contextvars.ContextVar[str] = contextvars.ContextVar("figure_format", default="png")


def check_format(fmt: str) -> str:
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"figure format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


@contextlib.contextmanager
def style(fmt: str | None = None) -> Iterator[None]:
    """Draw with STYLE inside; with `fmt`, `save` writes that format (png | pdf | svg).

    Without `fmt` the format chosen by an enclosing `style(...)` stays, so a step's figure
    drawn from the figures step comes out as that step asked.
    """
    import matplotlib

    token = _FORMAT.set(check_format(fmt)) if fmt is not None else None
    try:
        with matplotlib.rc_context(STYLE):
            yield
    finally:
        if token is not None:
            _FORMAT.reset(token)


def current_format() -> str:
    return _FORMAT.get()


def save(fig, path: Path) -> Path:
    """Save `fig` at `path` with the current format's suffix; returns the path written."""
    path = Path(path).with_suffix("." + _FORMAT.get())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = durable.tmp_path(path)
    fig.savefig(tmp, dpi=DPI, format=_FORMAT.get())
    durable.replace_durably(tmp, path)
    return path


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl file (an empty list when it does not exist; a torn last
    line is dropped with a warning)."""
    return durable.read_jsonl(path)


def image_rows(rows: list[tuple[str, np.ndarray]], path: Path, title: str = "",
               columns: list[str] | None = None) -> Path:
    """Save a grid with one row per (label, uint8 images (N, H, W, 3)) to `path`.

    `columns` optionally titles the columns (e.g. the frame numbers of a filmstrip). Returns
    the path written (its suffix follows the current format).
    """
    from matplotlib.figure import Figure

    count = max(len(images) for _, images in rows)
    with style():
        height, width = rows[0][1].shape[1:3]
        cell = 1.2 * width / height  # wide frames (a 600x400 render) get wide cells
        fig = Figure(figsize=(cell * count + 1.2, 1.3 * len(rows) + 0.4 + 0.2 * bool(columns)),
                     layout="constrained")
        axes = fig.subplots(len(rows), count, squeeze=False)
        for r, (label, images) in enumerate(rows):
            for c in range(count):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(images):
                    ax.imshow(images[c])
                else:
                    ax.set_axis_off()
                if columns and r == 0 and c < len(columns):
                    ax.set_title(columns[c], fontsize=8)
            axes[r][0].set_ylabel(label)
        if title:
            fig.suptitle(title, fontsize=10)
        return save(fig, path)


def curves(
    series: dict[str, tuple[list[float], list[float]]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """Save line plots of {label: (x, y)} on one axis to `path`; missing values are skipped.

    Returns the path written (its suffix follows the current format).
    """
    from matplotlib.figure import Figure

    with style():
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        for label, (xs, ys) in series.items():
            points = [(x, y) for x, y in zip(xs, ys, strict=True)
                      if y is not None and math.isfinite(y)]
            if points:
                px, py = zip(*points, strict=True)
                ax.plot(px, py, marker="o", label=label)
        if all(isinstance(x, int) for xs, _ in series.values() for x in xs):
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, generations
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        return save(fig, path)
