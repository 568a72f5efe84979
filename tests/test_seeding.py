"""Seeds derive from (seed, path): stable, distinct per path, independent of call order."""

import numpy as np
import pytest

from worldmodel import seeding


def test_same_path_same_stream_in_any_order():
    a = [seeding.generator(0, "collect", i).integers(1 << 30) for i in range(5)]
    b = [seeding.generator(0, "collect", i).integers(1 << 30) for i in reversed(range(5))]
    assert a == b[::-1]


def test_paths_and_seeds_give_distinct_streams():
    draws = {
        seeding.derive_seed(s, step, i)
        for s in (0, 1) for step in ("collect", "evaluate") for i in range(50)
    }
    assert len(draws) == 200


def test_derived_seed_is_fixed_across_versions():
    # A change here silently changes every dataset: it must be deliberate.
    assert seeding.derive_seed(0, "collect", 0) == 1188096691
    ss = np.random.SeedSequence([0, 2751881972, 0])  # crc32("collect") == 2751881972
    assert seeding.seed_sequence(0, "collect", 0).entropy == ss.entropy


@pytest.mark.parametrize("bad", [-1, 1.5, True, "0"])
def test_bad_seed_is_rejected(bad):
    with pytest.raises(ValueError):
        seeding.generator(bad)


def test_evaluation_tracks_never_overlap_training_tracks():
    train = {seeding.train_track(s, "collect", i) for s in range(3) for i in range(2000)}
    evaluation = {seeding.eval_track(s, i) for s in range(3) for i in range(2000)}
    assert train.isdisjoint(evaluation)
    assert all(t in seeding.TRAIN_TRACKS for t in train)
    assert all(t in seeding.EVAL_TRACKS for t in evaluation)
    assert len(evaluation) == 6000  # distinct tracks, not one track repeated
