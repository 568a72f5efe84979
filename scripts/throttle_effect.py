"""What collected driving shows of the throttle: over windows of 30 agent steps, one every 25,
the correlation between the gas held in a window and the new tiles visited in it.

M can only learn what the data holds. Where the policy draws its actions whatever the state
(the `repeat` policy), the correlation is the throttle's effect; where a controller collects,
its actions follow the state and the correlation mixes the two (docs/ablations.md, "What the
dream pays for"). "after a tile": the windows that follow a new tile in the 10 steps before,
where the car is on the road.

    .venv/bin/python scripts/throttle_effect.py outputs/store/collect/<key>/episodes [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from worldmodel.episodes import episode_files, load_episode
from worldmodel.rewards import tile_events

WINDOW, EVERY, BEFORE = 30, 25, 10


def windows(directories: list[Path]) -> np.ndarray:
    """(gas held, new tiles, new tiles in the BEFORE steps before) per window."""
    rows = []
    for path in episode_files(directories):
        episode = load_episode(path)
        tiles = tile_events(episode.rewards)
        for t in range(EVERY, episode.steps - WINDOW, EVERY):
            rows.append((episode.actions[t : t + WINDOW, 1].mean(), tiles[t : t + WINDOW].sum(),
                         tiles[max(0, t - BEFORE) : t].sum()))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def correlation(rows: np.ndarray) -> float | None:
    if len(rows) < 3 or rows[:, 0].std() == 0 or rows[:, 1].std() == 0:
        return None
    return float(np.corrcoef(rows[:, 0], rows[:, 1])[0, 1])


def throttle_effect(directories: list[Path]) -> dict:
    rows = windows(directories)
    on_road = rows[rows[:, 2] > 0]
    return {"windows": len(rows), "tiles_per_window": float(rows[:, 1].mean()) if len(rows)
            else None, "gas_tiles_corr": correlation(rows), "windows_after_a_tile": len(on_road),
            "gas_tiles_corr_after_a_tile": correlation(on_road)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("episodes", type=Path, nargs="+", help="collect steps' episodes/ dirs")
    args = parser.parse_args(argv)
    print(json.dumps(throttle_effect(args.episodes), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
