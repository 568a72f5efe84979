"""Dream score vs real score per temperature, from a `worldmodel -m sweep=temperature
controller=dream` multirun:

    .venv/bin/python scripts/temperature_figure.py outputs/multiruns/<date_time> [out.png]

Reads each job's summary.json, the controller step's files it points to, and writes the
figure (default: <multirun>/temperature.png); prints one line per job.
"""

from __future__ import annotations

import sys
from pathlib import Path

from worldmodel.dream import sweep_scores, temperature_figure


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    multirun = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) == 3 else multirun / "temperature.png"
    for row in sweep_scores(multirun):
        print(f"job {row['job']}: tau {row['temperature']:g}: dream {row['dream_score']:.1f}, "
              f"real {row['real_score']:.1f} (generation {row['generation']})")
    print(temperature_figure(multirun, out))


if __name__ == "__main__":
    main()
