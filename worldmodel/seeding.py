"""Every random stream of a run, derived from the one `seed`.

Streams are never shared: each is spawned from `numpy.random.SeedSequence` with a path such as
("collect", episode) or ("controller", generation, candidate, rollout), so what one episode
sees does not depend on how many workers ran or in which order.
"""

from __future__ import annotations

import zlib

import numpy as np


def _entropy(seed: int, path: tuple[int | str, ...]) -> list[int]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    words = [int(seed)]
    for part in path:
        if isinstance(part, str):
            # crc32 is stable across processes and Python versions, unlike hash().
            words.append(zlib.crc32(part.encode("utf-8")))
        elif isinstance(part, (int, np.integer)) and not isinstance(part, bool) and part >= 0:
            words.append(int(part))
        else:
            raise ValueError(f"seed path parts must be strings or non-negative ints, got {part!r}")
    return words


def seed_sequence(seed: int, *path: int | str) -> np.random.SeedSequence:
    """The SeedSequence for one stream, e.g. `seed_sequence(0, "collect", 17)`."""
    return np.random.SeedSequence(_entropy(seed, path))


def generator(seed: int, *path: int | str) -> np.random.Generator:
    """A numpy Generator for one stream."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *path)))


def derive_seed(seed: int, *path: int | str) -> int:
    """A 31-bit integer seed for one stream, for APIs that take ints (env.reset, torch)."""
    return int(seed_sequence(seed, *path).generate_state(1, dtype=np.uint32)[0] >> 1)


# Track seeds (CarRacing's env.reset(seed=...)) come from two disjoint ranges, so no
# evaluation track is ever a track that collection or training drove on.
TRAIN_TRACKS = range(0, 2**30)
EVAL_TRACKS = range(2**30, 2**31)


def train_track(seed: int, *path: int | str) -> int:
    """A track seed for collection or training rollouts, in TRAIN_TRACKS."""
    return TRAIN_TRACKS.start + derive_seed(seed, *path) % len(TRAIN_TRACKS)


def eval_track(seed: int, episode: int) -> int:
    """The track seed of evaluation episode `episode`, in EVAL_TRACKS."""
    return EVAL_TRACKS.start + derive_seed(seed, "evaluate", episode) % len(EVAL_TRACKS)
