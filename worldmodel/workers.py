"""What every worker process is, on either backend: how it starts, and the errors that stop a
run because of one.

worldmodel/pool.py (the local process pool) and worldmodel/ray_backend.py (Ray actors) both
build on this module and on nothing of each other's, so the dependency goes one way:
pool -> ray_backend (imported only for hardware.backend=ray) -> workers.
"""

from __future__ import annotations

import os
import reprlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from worldmodel.errors import WorldModelError

# Read by numpy/torch's OpenMP and BLAS when a worker imports them.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

DEADLINE_KNOB = "hardware.task_deadline_s"
# How often a run with a deadline looks at its running tasks: a stuck task is caught at most
# about two of these after its deadline.
POLL_S = 1.0


class WorkerDied(WorldModelError):
    """A worker process ended without returning its result."""


class TaskTimedOut(WorldModelError):
    """A task ran in a worker for longer than its deadline: stuck, or far slower than expected."""


class BackendUnavailable(WorldModelError):
    """The chosen execution backend cannot be used here (not installed, unreachable)."""


@dataclass(frozen=True)
class Backend:
    """Where `run_tasks` runs its tasks, and how long one may run."""

    name: str = "local"
    """local (this machine's process pool) | ray."""
    address: str | None = None
    """Ray only: the cluster to join ("auto", "ray://host:10001", "host:6379"); None starts a
    local Ray instance with `cpus` CPUs."""
    cpus: int = 1
    """Ray only: CPUs of the local instance started when `address` is None."""
    task_deadline_s: float | None = None
    """Seconds one task may run in a worker before the run stops with TaskTimedOut; replaces
    the deadline each caller of run_tasks derives from its episode length. None: the caller's."""


def setup_worker(initializer: Callable[..., None] | None, args: tuple) -> None:
    """What a worker runs before its first task, on either backend."""
    os.environ.update(ONE_THREAD_ENV)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if initializer is not None:
        initializer(*args)


def _short(value: object, limit: int = 240) -> str:
    """A task's arguments on one line: parameter vectors and configs cut short, paths whole
    where they fit."""
    shorter = reprlib.Repr()
    shorter.maxstring, shorter.maxother = 120, 60
    text = " ".join(shorter.repr(value).split())  # numpy arrays print over several lines
    return text if len(text) <= limit else text[:limit - 3] + "..."


def task_timed_out(what: str, fn: Callable[..., object], task: tuple, worker: str,
                   seconds: float, deadline_s: float) -> TaskTimedOut:
    """The one-line error for a task that passed its deadline in `worker` ("PID 123 ...")."""
    call = f"{getattr(fn, '__name__', 'task')}{_short(task)}"
    return TaskTimedOut(
        f"a task ran {seconds:.0f} s without finishing (deadline {deadline_s:g} s) while "
        f"{what}: {call} in worker {worker}. Stuck, or this machine much slower than "
        f"expected? The workers were stopped and finished work is kept; run the same command "
        f"again to resume, or raise {DEADLINE_KNOB} (seconds) if tasks really take this long."
    )
