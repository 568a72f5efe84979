"""CarRacing-v3's reward, taken apart into the events M predicts (mdrnn.rewards: tiles).

CarRacing pays -0.1 per frame, +1000/N for each new tile of a track of N tiles, and -100 when
the car leaves the playfield, which also ends the episode. An agent step (env.action_repeat
frames) therefore earns one of a few values: the time cost (-0.1 per frame), that plus a tile
(+1000/N, 2.4 to 4.3 for N in 230..420), or the exit. Regressing that sum with a squared error
(mdrnn.rewards: regress) lets the rare -100 dominate the loss (4 exits carried 72 % of the
reward variance of the default data) and teaches M almost nothing about tiles. With `tiles`,
M predicts instead

    P(a new tile at t+1)                 binary cross-entropy on tile_events(rewards)
    P(the car leaves the playfield)      binary cross-entropy on exits(...), the done head

and the dream pays the expected tile reward each step, and the -100 on the step its sampled
end falls on (worldmodel/dream.py): the exit is an event, never a regressed value. The tile
value and the time cost are measured on the episodes the dream starts from (`RewardScale`),
so nothing here assumes a track length or an action repeat.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MODES = ("regress", "tiles")
EXIT_REWARD = -100.0  # CarRacing-v3: leaving the playfield
EXIT_BELOW = -50.0  # a step below this paid the exit (a step's time cost is -0.1 per frame)


def tile_events(rewards: np.ndarray) -> np.ndarray:
    """1.0 where a step visited a new tile (its reward is positive), else 0.0."""
    return (np.asarray(rewards) > 0).astype(np.float32)


def exits(rewards: np.ndarray, terminated: bool) -> np.ndarray:
    """1.0 at the last step of an episode that ended by leaving the playfield, else 0.0
    (an episode that ended by finishing its lap, or was cut, has none)."""
    out = np.zeros(len(rewards), np.float32)
    if terminated and len(rewards) and rewards[-1] < EXIT_BELOW:
        out[-1] = 1.0
    return out


class RewardScale(NamedTuple):
    """What a step pays: `step` (the time cost, negative) without a tile, `tile` with one."""

    step: float
    tile: float

    def expected(self, p_tile):
        """The expected reward of a step with tile probability p_tile (array or tensor)."""
        return self.step + p_tile * (self.tile - self.step)


def measure_scale(rewards: list[np.ndarray]) -> RewardScale:
    """The typical step and tile rewards of these episodes (medians: a lap's last step or a
    step with two tiles stays an outlier). Defaults for action_repeat 2 and a 300-tile track
    fill in what the episodes never show (a random policy may visit no tile)."""
    values = np.concatenate([np.asarray(r, np.float64) for r in rewards]) if rewards else (
        np.zeros(0))
    plain = values[(values <= 0) & (values > EXIT_BELOW)]
    tiles = values[values > 0]
    step = float(np.median(plain)) if len(plain) else -0.2
    tile = float(np.median(tiles)) if len(tiles) else 1000 / 300 + step
    return RewardScale(step, tile)
