"""The evaluate step's return histogram, drawn from its returns alone, and the score per round
of an iterative run (rounds.png)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from worldmodel import figures, layout
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


def round_scores(controller_dirs: list[Path], evaluate_dirs: list[Path]) -> list[dict]:
    """Per round: the evaluation's mean and std over its unseen tracks, the kept controller's
    score (on the controller step's score tracks) and, in dream mode, its last dream score."""
    rows = []
    for k, (trained, scored) in enumerate(zip(controller_dirs, evaluate_dirs, strict=True)):
        info = json.loads((trained / layout.CONTROLLER.SUMMARY).read_text())
        results = json.loads((scored / layout.EVALUATE.RESULTS).read_text())
        rows.append({"round": k, "mean_return": results["mean_return"],
                     "std_return": results["std_return"], "episodes": results["episodes"],
                     "kept_score": info["best_score"],
                     "dream_score": info.get("final_dream_score")})
    return rows


def rounds_figure(rows: list[dict], path: Path) -> Path:
    """Score against round: the evaluation mean (real game, unseen tracks), the kept
    controller's score, and the dream's score of the CMA-ES mean where C trained in M."""
    rounds = [row["round"] for row in rows]
    series = {
        f"evaluation mean ({rows[-1]['episodes']} unseen tracks)":
            (rounds, [row["mean_return"] for row in rows]),
        "kept controller's score (real)": (rounds, [row["kept_score"] for row in rows]),
    }
    if any(row["dream_score"] is not None for row in rows):
        series["dream score of the CMA-ES mean (in M)"] = (
            rounds, [row["dream_score"] for row in rows])
    return figures.curves(series, path, "round", "mean return",
                          title="Iterative training: score per round")
