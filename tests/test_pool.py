"""Worker pools (worldmodel.pool): kept workers between calls, a dead worker's error, a stuck
task's error at its deadline, workers that stop at once when the run is interrupted (also when
a signal cuts the stopping short), and workers that do not outlive a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from worldmodel import pool
from worldmodel.pool import (
    Backend,
    TaskTimedOut,
    WorkerDied,
    keep_workers,
    make_pool,
    run_tasks,
    stop_pool,
)

LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads /proc (Linux)")


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
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False


def descendants(pid: int) -> set[int]:
    """The processes below `pid` in the process table: its children, theirs, ..."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().split(")")[-1].split()[1])
        except (FileNotFoundError, ProcessLookupError):  # ended while we looked
            continue
    found: set[int] = set()
    below = {pid}
    while below:
        below = {child for child, parent in parents.items() if parent in below} - found
        found |= below
    return found


def pids_written(directory: Path, count: int) -> list[int]:
    """The PIDs of the first `count` workers that ran write_pid_then_sleep into `directory`."""
    deadline = time.monotonic() + 60
    while len(list(directory.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return [int(path.name) for path in directory.iterdir()]


def wait_until_gone(pids: set[int], seconds: float) -> set[int]:
    """Those of `pids` still running after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {pid for pid in pids if alive(pid)}


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


@LINUX_PROC
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


# --- nothing stuck: a task past its deadline --------------------------------------------------


@LINUX_PROC
@pytest.mark.parametrize("knob", [False, True])
def test_a_stuck_task_stops_the_run_naming_it_its_worker_and_the_knob(tmp_path, knob) -> None:
    """deadline_s as a caller passes it, or hardware.task_deadline_s (the backend's), which
    replaces the caller's."""
    given = {"backend": Backend("local", task_deadline_s=2), "deadline_s": 1000} if knob \
        else {"deadline_s": 2}
    tasks = [(str(tmp_path), 0), (str(tmp_path), 3600)]
    finished = []
    with keep_workers():
        started = time.monotonic()
        with pytest.raises(TaskTimedOut) as caught:
            for task, _ in run_tasks(write_pid_then_sleep, tasks, workers=2, what="testing",
                                     **given):
                finished.append(task)
        seconds = time.monotonic() - started
        workers = {int(path.name) for path in tmp_path.iterdir()}
        replaced, = worker_pids(1)  # the kept workers, stuck one included, were replaced
    assert finished == [tasks[0]]  # what finished before is kept
    assert seconds < 15  # the deadline (2 s), a poll or two, and starting the workers
    message = str(caught.value)
    assert "\n" not in message
    assert "while testing: write_pid_then_sleep(" in message and ", 3600) in worker" in message
    assert any(f"PID {pid}" in message for pid in workers)
    assert "hardware.task_deadline_s" in message
    assert not wait_until_gone(workers, 5)
    assert not replaced & workers


def test_tasks_that_each_finish_within_the_deadline_are_not_stopped(tmp_path) -> None:
    """6 one-second tasks on 2 workers take 3 s in all, longer than the deadline of each."""
    results = list(run_tasks(write_pid_then_sleep, [(str(tmp_path), 1.0)] * 6, workers=2,
                             what="testing", deadline_s=2.5))
    assert len(results) == 6


def test_task_deadline_grows_with_the_frames_a_task_simulates() -> None:
    assert pool.task_deadline(0) == pool.STARTUP_S
    assert pool.task_deadline(1000) == pool.STARTUP_S + 1000 * pool.SECONDS_PER_FRAME


# --- nothing lost: no worker outlives its run -------------------------------------------------


# A run that dies without cleaning up: SIGKILL, or SIGTERM with Python's default (no handler).
KILLED_RUN = """
import sys
from tests.test_pool import write_pid_then_sleep
from worldmodel.pool import run_tasks

list(run_tasks(write_pid_then_sleep, [(sys.argv[1], 120)] * 2, workers=2, what="testing"))
"""


@LINUX_PROC
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_workers_and_their_forkserver_end_with_a_killed_run(tmp_path, signum) -> None:
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path)],
                           cwd=Path(__file__).parents[1])
    try:
        workers = set(pids_written(tmp_path, 2))
        below = descendants(run.pid)  # the forkserver, its workers, the resource tracker
    finally:
        run.send_signal(signum)
        run.wait(timeout=30)
    assert len(workers) == 2 and workers < below
    assert not wait_until_gone(below, 10)


@pytest.fixture
def ctrl_c():
    """SIGINT raises KeyboardInterrupt in these tests even when the suite runs as a background
    job, which a non-interactive shell starts with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@LINUX_PROC
def test_ctrl_c_while_waiting_for_the_workers_stops_them(tmp_path, ctrl_c) -> None:
    """The normal shutdown waits for running tasks; a Ctrl-C then must not leave them."""
    workers_pool = make_pool(2)
    for _ in range(2):
        workers_pool.submit(write_pid_then_sleep, str(tmp_path), 120)
    workers = set(pids_written(tmp_path, 2))
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        stop_pool(workers_pool, interrupted=False)
    assert time.monotonic() - started < 20
    assert not wait_until_gone(workers, 5)


def test_a_signal_while_the_workers_are_told_to_stop_waits_for_the_end_of_it(ctrl_c) -> None:
    reached = False
    with pytest.raises(KeyboardInterrupt):
        with pool._signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # a signal not deferred raises here
            reached = True
    assert reached
