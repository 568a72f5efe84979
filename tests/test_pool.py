"""Worker pools (worldmodel.pool): kept workers between calls, and a dead worker's error."""

from __future__ import annotations

import os

import pytest

from worldmodel.pool import WorkerDied, keep_workers, run_tasks


def worker_pids(calls: int = 2) -> list[set[int]]:
    """The worker processes that answered each of `calls` run_tasks calls of 6 tasks."""
    return [{pid for _, pid in run_tasks(os.getpid, [()] * 6, workers=2, what="testing")}
            for _ in range(calls)]


def test_each_call_starts_its_own_workers_by_default() -> None:
    first, second = worker_pids()
    assert os.getpid() not in first | second
    assert not first & second


def test_keep_workers_reuses_them_between_calls() -> None:
    with keep_workers():
        first, second = worker_pids()
        with keep_workers():  # nested: still the outer block's workers
            third, = worker_pids(1)
    kept = first | second | third  # which of the 2 workers answers a call varies
    assert os.getpid() not in kept and len(kept) <= 2
    after, = worker_pids(1)
    assert not after & kept  # the block's end stopped them


def test_a_dead_kept_worker_is_reported_and_replaced() -> None:
    with keep_workers():
        before, = worker_pids(1)
        with pytest.raises(WorkerDied, match="while testing"):
            list(run_tasks(os._exit, [(3,)] * 2, workers=2, what="testing"))
        after, = worker_pids(1)
    assert after and not after & before
