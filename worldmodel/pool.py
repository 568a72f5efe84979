"""Worker processes for the embarrassingly parallel work: episodes, rollouts.

Workers are started with forkserver (spawn on macOS), never fork: forking a process in which
torch has run threads can deadlock the child. Each worker uses one torch thread, so N workers
fill N cores instead of fighting over them. A worker that dies (killed, out of memory) raises
a clear WorkerDied error instead of hanging the run; what finished before it is kept.

Backends. `run_tasks` runs its tasks on the backend chosen by `hardware.backend` (set for the
whole process by `worldmodel.hardware.setup`, like torch's thread count): `local`, the process
pool here, or `ray` (worldmodel/ray_backend.py, imported only then), which sends the same
tasks to Ray actors on one machine or a cluster. Callers see the same (task, result) pairs
either way; only the completion order may differ.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from worldmodel.errors import WorldModelError

# Read by numpy/torch's OpenMP and BLAS when a worker imports them.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


BACKENDS = ("local", "ray")
STDLIB_METHODS = ("fork", "spawn", "forkserver")
INSTALL_RAY = 'pip install -e ".[ray]"'


class WorkerDied(WorldModelError):
    """A worker process ended without returning its result."""


class BackendUnavailable(WorldModelError):
    """The chosen execution backend cannot be used here (not installed, unreachable)."""


@dataclass(frozen=True)
class Backend:
    """Where `run_tasks` runs its tasks."""

    name: str = "local"
    """local (this machine's process pool) | ray."""
    address: str | None = None
    """Ray only: the cluster to join ("auto", "ray://host:10001", "host:6379"); None starts a
    local Ray instance with `cpus` CPUs."""
    cpus: int = 1
    """Ray only: CPUs of the local instance started when `address` is None."""


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


def _init_worker(initializer: Callable[..., None] | None, args: tuple) -> None:
    os.environ.update(ONE_THREAD_ENV)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if initializer is not None:
        initializer(*args)


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
) -> ProcessPoolExecutor:
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
        # its thread count once, at import: set in _init_worker it comes too late, and every
        # worker would run one BLAS thread per core (2 workers on 2 cores: 5x fewer env
        # steps/s, the small matrix products of `preprocess` waiting on busy cores). So the
        # forkserver starts with the one-thread environment; this process keeps its own.
        with _environment(ONE_THREAD_ENV):
            multiprocessing.forkserver.ensure_running()
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(initializer, initargs),
    )


# (workers, initializer, initargs, preload) and its pool, kept by `keep_workers` while inside
# it; a list compared with ==, as initargs need not be hashable.
_kept_pools: list[tuple[tuple, ProcessPoolExecutor]] | None = None


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
    that wait would leave the workers running on as orphans. So they are terminated.
    """
    if not interrupted:
        pool.shutdown(wait=True, cancel_futures=True)
        return
    # ProcessPoolExecutor has no public way to stop running workers before Python 3.14
    # (terminate_workers); its pid -> Process map is the only handle on them.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


def _local_pool(workers: int, initializer: Callable[..., None] | None, initargs: tuple,
                preload: tuple[str, ...]) -> tuple[ProcessPoolExecutor, bool]:
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


def _forget_pool(pool: ProcessPoolExecutor) -> None:
    """Drop a broken pool from the kept ones, so the next call starts fresh workers."""
    if _kept_pools is not None:
        _kept_pools[:] = [(key, kept) for key, kept in _kept_pools if kept is not pool]


def run_tasks(
    fn: Callable[..., Any],
    tasks: Iterable[tuple],
    workers: int,
    what: str,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    preload: tuple[str, ...] = (),
    backend: Backend | None = None,
) -> Iterator[tuple[tuple, Any]]:
    """Yield (task, fn(*task)) as tasks finish, in completion order.

    `backend` defaults to the process's (`use_backend`). On the local backend, with
    workers == 1 the tasks run in this process (no pickling, easy to debug), and at most
    2 × workers tasks are in flight, so a long task list does not pile up in memory. On Ray,
    `workers` actors run `initializer` once each and then take one task at a time.
    """
    backend = backend or _backend
    if backend.name == "ray":
        from worldmodel import ray_backend

        yield from ray_backend.run_tasks(fn, tasks, workers, what, initializer, initargs,
                                         preload, backend)
        return
    tasks = iter(tasks)
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        for task in tasks:
            yield task, fn(*task)
        return
    pool, owned = _local_pool(workers, initializer, initargs, preload)
    pending: dict[Future, tuple] = {}
    interrupted = True  # until every task is done: a Ctrl-C, an error, a caller that stops
    try:
        while True:
            while len(pending) < 2 * workers:
                task = next(tasks, None)
                if task is None:
                    break
                pending[pool.submit(fn, *task)] = task
            if not pending:
                interrupted = False
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                yield task, future.result()
    except BrokenProcessPool as exc:
        _forget_pool(pool)
        owned = True  # broken: shut it down below even if it was a kept one
        raise WorkerDied(
            f"a worker process died while {what} (killed, or out of memory?). "
            "Finished work is kept; run the same command again to resume, or lower "
            "hardware.workers if memory is short."
        ) from exc
    finally:
        for future in pending:
            future.cancel()
        if owned:
            stop_pool(pool, interrupted)
