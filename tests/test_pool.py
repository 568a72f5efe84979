"""Worker pools (worldmodel.pool): kept workers between calls, a dead worker's error, and
workers that stop at once when the run is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def write_pid_then_sleep(directory: str, seconds: float) -> None:
    """A long task that says which worker runs it."""
    (Path(directory) / str(os.getpid())).touch()
    time.sleep(seconds)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


# A run as cli.main runs it: SIGTERM becomes KeyboardInterrupt, kept workers, long tasks.
INTERRUPTED_RUN = """
import signal, sys
from tests.test_pool import write_pid_then_sleep
from worldmodel.pool import keep_workers, run_tasks

def stop(signum, frame):
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, stop)
with keep_workers():
    list(run_tasks(write_pid_then_sleep, [(sys.argv[1], 120)] * 4, workers=2, what="testing"))
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("kept", [True, False])
def test_an_interrupted_run_stops_its_workers_at_once(tmp_path, kept) -> None:
    script = INTERRUPTED_RUN if kept else INTERRUPTED_RUN.replace("with keep_workers():",
                                                                  "if True:")
    run = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                           cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(path.name) for path in tmp_path.iterdir()]
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    started = time.monotonic()
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) != 0
    # Without waiting for the 120-second tasks, and no worker left running.
    assert time.monotonic() - started < 20
    while any(alive(pid) for pid in workers) and time.monotonic() - started < 20:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
