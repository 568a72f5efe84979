"""Redraw every figure of a finished run from its stored results, and write its report.md.

    python scripts/make_figures.py outputs/runs/2026-01-01_12-00-00
    python scripts/make_figures.py RUN_DIR --format pdf          # vector figures (or svg)
    python scripts/make_figures.py RUN_DIR --out paper/figures   # somewhere else

RUN_DIR is a directory `worldmodel` wrote (outputs/runs/<date_time>, or a multirun job's): its
summary.json holds the path of each step's stored result. Nothing is trained and the store is
not written: figures go to RUN_DIR/figures (or --out), the report to RUN_DIR/report.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from worldmodel.errors import WorldModelError
from worldmodel.figures import FORMATS
from worldmodel.steps.figures import regenerate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding summary.json")
    parser.add_argument("--format", choices=FORMATS, default="png", help="figure file format")
    parser.add_argument("--out", type=Path, help="where the figures go (default RUN_DIR/figures)")
    parser.add_argument("--filmstrip-frames", type=int, default=8,
                        help="frames of the best evaluation episode in its filmstrip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = regenerate(args.run_dir, args.out, args.format, args.filmstrip_frames)
    except WorldModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"figures: {args.out or args.run_dir / 'figures'}")
    print(f"report:  {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
