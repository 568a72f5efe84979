"""Worker processes for the embarrassingly parallel work: episodes, rollouts.

Workers are started with forkserver (spawn on macOS), never fork: forking a process in which
torch has run threads can deadlock the child. Each worker uses one torch thread, so N workers
fill N cores instead of fighting over them.

Nothing lost, nothing stuck. A worker that dies (killed, out of memory) raises WorkerDied; a
task that runs past its deadline raises TaskTimedOut, naming the task and its worker, after
the workers are stopped; either way what finished before is kept (callers persist results as
they are yielded). Workers exit when this process ends, however it ends (SIGKILL included):
each watches a pipe that only this process holds open (see `_lifeline`).

Backends. `run_tasks` runs its tasks on the backend chosen by `hardware.backend` (set for the
whole process by `worldmodel.hardware.setup`, like torch's thread count): `local`, the process
pool here, or `ray` (worldmodel/ray_backend.py, imported only then), which sends the same
tasks to Ray actors on one machine or a cluster. Callers see the same (task, result) pairs
either way; only the completion order may differ. What both backends share (the worker's
start, the errors, `Backend`) is in worldmodel/workers.py.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any

from worldmodel.workers import (
    ONE_THREAD_ENV,
    POLL_S,
    Backend,
    BackendUnavailable,
    TaskTimedOut,
    WorkerDied,
    setup_worker,
    task_timed_out,
)

BACKENDS = ("local", "ray")
STDLIB_METHODS = ("fork", "spawn", "forkserver")
INSTALL_RAY = 'pip install -e ".[ray]"'

# The deadline a caller derives for a task of `frames` simulated frames (`task_deadline`).
# Measured per worker (docs/benchmarks.md, 2-core machine): the agent loop 197 frames/s
# (5 ms a frame), the stock environment alone 153 steps/s (6.5 ms); recording a GIF video
# (evaluate's record_task, timed apart) about 60 frames/s (17 ms). 50 ms a frame is 3x the
# slowest of them and 10x the episodes driven for training and evaluation, room for a busy
# or slower machine (a task that is merely slow must never stop a run); the fixed part
# covers what a task does once (making the environment, its first V and M calls, writing
# its file to a slow disk). A 1000-frame episode gets 170 s, where it takes 5 to 17.
STARTUP_S = 120.0
SECONDS_PER_FRAME = 0.05


def task_deadline(frames: int) -> float:
    """Seconds a task simulating up to `frames` frames may run before it counts as stuck."""
    return STARTUP_S + SECONDS_PER_FRAME * frames


_backend = Backend()


def use_backend(backend: Backend) -> Backend:
    """Make `backend` the one run_tasks uses in this process; returns the previous one.

    Asking for Ray checks that it imports now, so a missing install stops the run before any
    step starts rather than in the middle of one.
    """
    global _backend
    if backend.name not in BACKENDS:
        raise BackendUnavailable(
            f"hardware.backend={backend.name!r} is not one of {', '.join(BACKENDS)}"
        )
    if backend.name == "ray":
        require_ray()
    previous, _backend = _backend, backend
    return previous


def current_backend() -> Backend:
    return _backend


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"hardware.backend=ray needs Ray, which is not installed here: {INSTALL_RAY} "
            "(or run with hardware.backend=local)"
        ) from exc


# --- in a worker -------------------------------------------------------------------------------

# Where this worker says which task it starts (a queue its pool made), so that the parent
# knows which worker runs a task and since when.
_started: Any = None


def _start_worker(lifeline: Connection, started: Any,
                  initializer: Callable[..., None] | None, args: tuple) -> None:
    """A local worker's first act: exit with the parent, then the common start."""
    global _started
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True,
                     name="exit-with-parent").start()
    _started = started
    setup_worker(initializer, args)


def _exit_with_parent(lifeline: Connection) -> None:
    # Nothing is ever sent on the lifeline: reading it returns only at end-of-file, when the
    # process that made the pool has ended. The forkserver cannot stand in for it: a worker's
    # parent is the forkserver, which itself lives until its last worker has exited, so the
    # parent-death signal (prctl) would never fire; this works on macOS too.
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _run_reported(task_id: int, fn: Callable[..., Any], *task: Any) -> Any:
    _started.put((task_id, os.getpid()))
    return fn(*task)


# --- in the parent -----------------------------------------------------------------------------

# (pid, reader, writer) of the lifeline pipe of this process: only it holds the writer (it is
# not inherited by what it starts), its workers each get the reader. Made again in a forked
# child, whose workers must watch the child.
_lifeline: tuple[int, Connection, Connection] | None = None


def _lifeline_reader() -> Connection:
    global _lifeline
    if _lifeline is None or _lifeline[0] != os.getpid():
        reader, writer = multiprocessing.Pipe(duplex=False)
        _lifeline = (os.getpid(), reader, writer)
    return _lifeline[1]


class WorkerPool(ProcessPoolExecutor):
    """A process pool whose workers exit with this process and report each task they start
    on `started`, as (task id, pid)."""

    def __init__(self, workers: int, context: Any, initializer: Callable[..., None] | None,
                 initargs: tuple) -> None:
        self.started = context.SimpleQueue()
        super().__init__(max_workers=workers, mp_context=context, initializer=_start_worker,
                         initargs=(_lifeline_reader(), self.started, initializer, initargs))


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for what starts inside the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_method() -> str:
    return "spawn" if sys.platform == "darwin" or os.name == "nt" else "forkserver"


def make_pool(
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    preload: tuple[str, ...] = (),
) -> WorkerPool:
    """A process pool whose workers run `initializer(*initargs)` once (e.g. load models).

    `preload` names modules the forkserver imports once, so each worker is forked with them
    already loaded instead of importing gymnasium, pygame, ... anew (seconds per worker).
    """
    context = multiprocessing.get_context(start_method())
    if multiprocessing.get_start_method(allow_none=True) not in (None, *STDLIB_METHODS):
        # In a job of a joblib sweep (hydra/launcher=joblib) this process is a loky worker,
        # whose default start method is loky's own. Our workers (and the forkserver) are told
        # the parent's default method and fail to set it ("cannot find context for 'loky'"),
        # so this process switches to ours; loky starts its processes from explicit contexts.
        multiprocessing.set_start_method(context.get_start_method(), force=True)
    if context.get_start_method() == "forkserver":
        if preload:
            context.set_forkserver_preload(list(preload))
        # The forkserver imports numpy (preload) before any worker exists, and OpenBLAS reads
        # its thread count once, at import: set in setup_worker it comes too late, and every
        # worker would run one BLAS thread per core (2 workers on 2 cores: 5x fewer env
        # steps/s, the small matrix products of `preprocess` waiting on busy cores). So the
        # forkserver starts with the one-thread environment; this process keeps its own.
        with _environment(ONE_THREAD_ENV):
            multiprocessing.forkserver.ensure_running()
    return WorkerPool(workers, context, initializer, initargs)


# (workers, initializer, initargs, preload) and its pool, kept by `keep_workers` while inside
# it; a list compared with ==, as initargs need not be hashable.
_kept_pools: list[tuple[tuple, WorkerPool]] | None = None


@contextlib.contextmanager
def keep_workers() -> Iterator[None]:
    """Inside this block, local process pools outlive `run_tasks`: a later call with the same
    workers, initializer and arguments reuses the running workers (and the models their
    initializer loaded) instead of starting new ones. A CMA-ES search runs one `run_tasks` per
    generation, and starting 2 workers that load V and M costs about a second each time."""
    global _kept_pools
    if _kept_pools is not None:  # nested: the outer block keeps them
        yield
        return
    _kept_pools = []
    interrupted = True
    try:
        yield
        interrupted = False
    finally:
        pools, _kept_pools = _kept_pools, None
        for _, pool in pools:
            stop_pool(pool, interrupted)


def stop_pool(pool: ProcessPoolExecutor, interrupted: bool) -> None:
    """Shut a pool down; after an interruption (Ctrl-C, SIGTERM, an error) without waiting.

    Waiting would let the workers finish the episodes they are driving, which nobody will
    read, for up to minutes; SIGTERM reaches only this process, and a second signal during
    that wait would leave the workers running on as orphans. So they are terminated, also
    when a signal cuts the normal shutdown short.
    """
    # ProcessPoolExecutor has no public way to stop running workers before Python 3.14
    # (terminate_workers); its pid -> Process map is the only handle on them.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    if not interrupted:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
            return
        except BaseException:
            _terminate(pool, processes)
            raise
    _terminate(pool, processes)


def _terminate(pool: ProcessPoolExecutor, processes: list) -> None:
    with _signals_deferred():
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():  # a task that handles or ignores SIGTERM
            process.kill()
            process.join(timeout=10)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM arriving inside the block take effect at its end.

    A second Ctrl-C while the workers are being told to stop would leave the rest running,
    and this process waiting for them at exit. Blocking the signals (pthread_sigmask) would
    not do: the kernel hands them to another thread of this process, and Python runs the
    handler in the main thread all the same; so the handlers are swapped for a note.
    """
    if threading.current_thread() is not threading.main_thread():  # only it sets handlers
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if None in previous.values():  # a handler installed outside Python cannot be put back
        yield
        return
    caught: list[int] = []
    for signum in previous:
        signal.signal(signum, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def _local_pool(workers: int, initializer: Callable[..., None] | None, initargs: tuple,
                preload: tuple[str, ...]) -> tuple[WorkerPool, bool]:
    """A pool for one run_tasks call, and whether that call must shut it down."""
    if _kept_pools is None:
        return make_pool(workers, initializer, initargs, preload), True
    key = (workers, initializer, initargs, preload)
    for kept_key, pool in _kept_pools:
        if kept_key == key:
            return pool, False
    pool = make_pool(workers, initializer, initargs, preload)
    _kept_pools.append((key, pool))
    return pool, False


def _forget_pool(pool: WorkerPool) -> None:
    """Drop a broken pool from the kept ones, so the next call starts fresh workers."""
    if _kept_pools is not None:
        _kept_pools[:] = [(key, kept) for key, kept in _kept_pools if kept is not pool]


# Task ids, unique in this process: a kept pool's queue may still hold the start of a task
# of an earlier call.
_task_ids = itertools.count()


def run_tasks(
    fn: Callable[..., Any],
    tasks: Iterable[tuple],
    workers: int,
    what: str,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    preload: tuple[str, ...] = (),
    backend: Backend | None = None,
    deadline_s: float | None = None,
) -> Iterator[tuple[tuple, Any]]:
    """Yield (task, fn(*task)) as tasks finish, in completion order.

    `backend` defaults to the process's (`use_backend`). On the local backend, with
    workers == 1 the tasks run in this process (no pickling, easy to debug), and at most
    2 × workers tasks are in flight, so a long task list does not pile up in memory. On Ray,
    `workers` actors run `initializer` once each and then take one task at a time.

    `deadline_s`: a task running in a worker for longer (counted from when the worker starts
    it, not while it waits in the queue) stops the run with TaskTimedOut; callers derive it
    from their episode length (`task_deadline`), and the backend's `task_deadline_s`
    (hardware.task_deadline_s) replaces it. None waits as long as it takes, as do tasks run in
    this process (workers == 1), which nothing could stop.
    """
    backend = backend or _backend
    if backend.task_deadline_s is not None:
        deadline_s = backend.task_deadline_s
    if backend.name == "ray":
        from worldmodel import ray_backend

        yield from ray_backend.run_tasks(fn, tasks, workers, what, initializer, initargs,
                                         preload, backend, deadline_s)
        return
    tasks = iter(tasks)
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        for task in tasks:
            yield task, fn(*task)
        return
    pool, owned = _local_pool(workers, initializer, initargs, preload)
    pending: dict[Future, tuple[int, tuple]] = {}  # -> (task id, task)
    running: dict[int, tuple[int, float]] = {}  # task id -> (worker pid, when seen starting)
    interrupted = True  # until every task is done: a Ctrl-C, an error, a caller that stops
    try:
        while True:
            while len(pending) < 2 * workers:
                task = next(tasks, None)
                if task is None:
                    break
                task_id = next(_task_ids)
                if deadline_s is None:  # nobody reads the starts: do not report them
                    future = pool.submit(fn, *task)
                else:
                    future = pool.submit(_run_reported, task_id, fn, *task)
                pending[future] = (task_id, task)
            if not pending:
                interrupted = False
                return
            done, _ = wait(pending, timeout=None if deadline_s is None else POLL_S,
                           return_when=FIRST_COMPLETED)
            for future in done:
                task_id, task = pending.pop(future)
                running.pop(task_id, None)
                yield task, future.result()
            if deadline_s is not None:
                _check_deadline(pool, pending, running, deadline_s, fn, what)
    except BrokenProcessPool as exc:
        _forget_pool(pool)
        owned = True  # broken: shut it down below even if it was a kept one
        raise WorkerDied(
            f"a worker process died while {what} (killed, or out of memory?). "
            "Finished work is kept; run the same command again to resume, or lower "
            "hardware.workers if memory is short."
        ) from exc
    except TaskTimedOut:
        _forget_pool(pool)
        owned = True  # its stuck worker goes, even if it was a kept one
        raise
    finally:
        for future in pending:
            future.cancel()
        if owned:
            stop_pool(pool, interrupted)


def _check_deadline(pool: WorkerPool, pending: dict[Future, tuple[int, tuple]],
                    running: dict[int, tuple[int, float]], deadline_s: float,
                    fn: Callable[..., Any], what: str) -> None:
    """Note the tasks the workers started since the last look; raise if one is past due.

    A start counts from when this process reads it, on its own clock (no comparing clocks
    across processes): at most a poll late, which only makes the deadline more lenient.
    """
    now = time.monotonic()
    in_flight = {task_id: (future, task) for future, (task_id, task) in pending.items()}
    while not pool.started.empty():
        task_id, pid = pool.started.get()
        if task_id in in_flight:  # else it has finished already, or is an earlier call's
            running[task_id] = (pid, now)
    for task_id, (pid, since) in running.items():
        future, task = in_flight[task_id]
        if now - since > deadline_s and not future.done():  # done: yielded next time round
            raise task_timed_out(what, fn, task, f"PID {pid}", now - since, deadline_s)
