"""The controller step's figure, drawn from its stored metrics.jsonl alone.

    cma_es.png   fitness per generation (best candidate, population mean, worst candidate)
                 and the periodic scores of the CMA-ES mean and the generation's best; dream
                 fitness and real fitness as separate curves, their numbers not comparable
"""

from __future__ import annotations

from pathlib import Path

from worldmodel import figures, layout


def make_figure(step_dir: Path, out_dir: Path) -> Path:
    """Draw cma_es.png from a controller result's metrics.jsonl alone.

    Fitness from M's dream (dream mode, dream pre-training) and from the real game are drawn as
    separate curves: their numbers are not comparable."""
    rows = figures.read_metrics(step_dir / layout.METRICS)
    x = [row["generation"] for row in rows]
    dreamed = ["controller/dream_steps" in row for row in rows]

    def column(name: str, kind: bool | None = None) -> tuple[list, list]:
        return x, [row.get(f"controller/{name}") if kind is None or d == kind else None
                   for row, d in zip(rows, dreamed, strict=True)]

    series = {}
    for kind in (True, False):
        if kind in dreamed:
            where = " (dream)" if kind else ""
            series.update({f"best candidate{where}": column("best", kind),
                           f"population mean{where}": column("mean", kind),
                           f"worst candidate{where}": column("worst", kind)})
    score = "real score:" if any(dreamed) else "score:"
    series.update({f"{score} CMA-ES mean": column("score_mean"),
                   f"{score} generation's best": column("score_best")})
    if any("controller/dream_score_mean" in row for row in rows):
        series["dream score: CMA-ES mean"] = column("dream_score_mean")
        series["dream score: generation's best"] = column("dream_score_best")
    title = "C: CMA-ES fitness per generation and periodic scores"
    if all(dreamed):
        title = "C trained in M's dream: dream fitness, dream and real scores"
    elif any(dreamed):
        title = "C: pre-trained in M's dream, then evolved in the real game"
    return figures.curves(series, out_dir / layout.CONTROLLER.FIGURE, "generation",
                          "mean return", title=title)
