"""The `ray` execution backend: pool tasks on Ray actors, on this machine or a cluster.

Imported only when `hardware.backend=ray` (worldmodel/pool.py), so Ray stays optional.

Actors. `workers` actors, one CPU each, run the pool's initializer once (e.g. load V and M)
and then take tasks one at a time, each task sent to an idle actor: the models travel once per
actor, not once per task. The actors are kept between calls that use the same initializer and
arguments (CMA-ES asks for a population's fitness every generation), so a run loads its models
once per actor, not once per generation; anything else replaces them.

Results. (task, result) pairs come back in completion order, as from the local pool, and a
task computes exactly what it computes there (same function, same seeds, one thread), so
callers cannot tell the backends apart. An exception raised by a task is raised again as
itself. An actor that dies (killed, out of memory, its node lost) is restarted and its task
retried once by Ray; if that fails too, the run stops with WorkerDied instead of hanging. A
task still running past its deadline (pool.run_tasks) stops the run with TaskTimedOut, naming
the actor's PID and node; its actors are killed. The deadline counts from when the task is
sent, as only idle actors get one: for an actor's first task that includes its start.

Files. Tasks read and write paths (models, episodes): on a cluster of several machines,
`paths.outputs` must be on a filesystem every node mounts at the same path.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ray
import ray.exceptions

from worldmodel.workers import (
    ONE_THREAD_ENV,
    POLL_S,
    Backend,
    BackendUnavailable,
    WorkerDied,
    setup_worker,
    task_timed_out,
)

log = logging.getLogger(__name__)

# Ray restarts a dead actor (running the initializer again) and retries its task this many
# times before the run stops with WorkerDied. Tasks are safe to run twice: they are pure or
# write their file atomically.
RETRIES = 1


@ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)
class _Worker:
    """One worker: the pool initializer's state, then one task at a time."""

    def __init__(self, initializer: Callable[..., None] | None, initargs: tuple,
                 preload: tuple[str, ...]) -> None:
        for module in preload:  # what the local forkserver would have imported once
            importlib.import_module(module)
        setup_worker(initializer, initargs)

    def run(self, fn: Callable[..., Any], task: tuple) -> Any:
        return fn(*task)

    def where(self) -> str:
        return f"PID {os.getpid()} on {socket.gethostname()}"


class _Actors:
    """The actors kept for one (initializer, initargs, preload)."""

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.handles: list = []
        # handle -> its answer to `where`, asked when it starts: once it runs a stuck task it
        # can answer nothing more (one task at a time).
        self.where: dict = {}

    def take(self, count: int) -> list:
        """`count` actors, starting the ones missing."""
        initializer, initargs, preload = self.key
        # Set on the actor, not only on the Ray job: BLAS reads them once, at import, and a
        # cluster we join may have been started with other settings.
        options = {"runtime_env": {"env_vars": ONE_THREAD_ENV}}
        while len(self.handles) < count:
            handle = _Worker.options(**options).remote(initializer, initargs, preload)
            self.handles.append(handle)
            self.where[handle] = handle.where.remote()
        return self.handles[:count]

    def describe(self, handle: Any) -> str:
        """`PID 123 on host`, or less if the actor has not got that far."""
        try:
            return ray.get(self.where[handle], timeout=5)
        except (KeyError, ray.exceptions.RayError):
            return "(PID unknown: it had not started)"

    def kill(self) -> None:
        for handle in self.handles:
            ray.kill(handle, no_restart=True)
        self.handles = []
        self.where = {}


_kept: _Actors | None = None
_started_here = False


def connect(backend: Backend) -> None:
    """Join the cluster at backend.address, or start a local Ray instance; once per process."""
    global _started_here
    if ray.is_initialized():
        return
    try:
        if backend.address is None:
            # "local" starts a new instance even when RAY_ADDRESS points elsewhere.
            ray.init(address="local", num_cpus=backend.cpus, include_dashboard=False)
            _started_here = True
            log.info("started a local Ray instance with %d CPUs", backend.cpus)
        else:
            ray.init(address=backend.address)
            log.info("joined the Ray cluster at %s: %s", backend.address,
                     ray.cluster_resources())
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendUnavailable(
            f"cannot start or join Ray (hardware.ray_address={backend.address!r}): "
            f"{first_line}"
        ) from exc


def shutdown() -> None:
    """Stop the kept actors, and the local Ray instance if this process started it."""
    global _kept, _started_here
    if _kept is not None and ray.is_initialized():
        _kept.kill()
    _kept = None
    if _started_here:
        ray.shutdown()
        _started_here = False


def _actors(initializer: Callable[..., None] | None, initargs: tuple,
            preload: tuple[str, ...], count: int) -> list:
    global _kept
    key = (initializer, initargs, tuple(preload))
    if _kept is not None and not _same(_kept.key, key):
        _kept.kill()
        _kept = None
    if _kept is None:
        _kept = _Actors(key)
    # More actors than the cluster has CPUs would wait for a CPU forever, and their tasks
    # with them.
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return _kept.take(max(1, min(count, cpus)))


def _same(a: tuple, b: tuple) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # arguments that do not compare (numpy arrays): a new set
        return False


def _result(ref: ray.ObjectRef, what: str) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        # The task itself raised: raise its exception, as the local pool does.
        if isinstance(exc.cause, Exception):
            raise exc.cause from exc
        raise
    except ray.exceptions.RayError as exc:
        # Ray's message is many lines (and a traceback when the initializer failed); its
        # first line says which.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WorkerDied(
            f"a Ray worker died while {what} ({type(exc).__name__}: {first[:200]}). Killed, "
            "out of memory, its node lost, or (on a cluster) worldmodel not installed on "
            "every node? Finished work is kept; run the same command again to resume, or "
            "lower hardware.workers if memory is short."
        ) from exc


def run_tasks(
    fn: Callable[..., Any],
    tasks: Iterable[tuple],
    workers: int,
    what: str,
    initializer: Callable[..., None] | None,
    initargs: tuple,
    preload: tuple[str, ...],
    backend: Backend,
    deadline_s: float | None = None,
) -> Iterator[tuple[tuple, Any]]:
    """pool.run_tasks on Ray: yield (task, fn(*task)) as tasks finish."""
    global _kept
    connect(backend)
    idle = list(_actors(initializer, initargs, preload, workers))
    tasks = iter(tasks)
    running: dict[ray.ObjectRef, tuple[Any, tuple, float]] = {}  # -> (actor, task, sent at)
    finished = False
    try:
        while True:
            while idle:
                task = next(tasks, None)
                if task is None:
                    break
                actor = idle.pop()
                running[actor.run.remote(fn, task)] = (actor, task, time.monotonic())
            if not running:
                finished = True
                return
            ready, _ = ray.wait(list(running), num_returns=1,
                                timeout=None if deadline_s is None else POLL_S)
            if ready:
                actor, task, _ = running.pop(ready[0])
                result = _result(ready[0], what)
                idle.append(actor)
                yield task, result
            if deadline_s is not None:
                _check_deadline(running, deadline_s, fn, what)
    finally:
        if not finished and _kept is not None:
            # Stopped early (an error, a dead actor, or the caller stopped reading): busy
            # actors would finish tasks nobody reads, so they go; the next call starts afresh.
            _kept.kill()
            _kept = None


def _check_deadline(running: dict[ray.ObjectRef, tuple[Any, tuple, float]],
                    deadline_s: float, fn: Callable[..., Any], what: str) -> None:
    now = time.monotonic()
    for actor, task, sent in running.values():
        if now - sent > deadline_s:
            where = _kept.describe(actor) if _kept is not None else "(PID unknown)"
            raise task_timed_out(what, fn, task, where, now - sent, deadline_s)
