"""The evaluate step's return histogram, drawn from its returns alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldmodel import figures
from worldmodel.envs import SOLVED


def histogram(returns: list[float], path: Path, title: str) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Bins of 50 over a range that always shows 0 to 900, so that returns bunched together
    # still draw visible bars and the distance to "solved" reads at a glance.
    low = 50 * np.floor(min(0.0, min(returns)) / 50)
    high = 50 * np.ceil(max(SOLVED + 50, max(returns)) / 50)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.hist(returns, bins=np.arange(low, high + 1, 50), color="tab:blue", edgecolor="white")
    ax.axvline(float(np.mean(returns)), color="black", linewidth=1,
               label=f"mean {np.mean(returns):.0f}")
    ax.axvline(SOLVED, color="tab:red", linestyle="--", label=f"{SOLVED:.0f} (solved)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("return")
    ax.set_ylabel("episodes")
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    return figures.save(fig, path)
