"""The ray execution backend (worldmodel/ray_backend.py) against the local pool.

Covers: asking for Ray without it installed stops with one line naming the install command;
on a local 2-CPU Ray instance a population's fitnesses and a collected dataset equal the
local pool's for the same seeds; the initializer runs once per actor, also across calls; a
task's own exception comes back as itself; a dying actor ends in WorkerDied, not a hang, and a
stuck one in TaskTimedOut at its deadline; hardware.task_deadline_s reaches run_tasks. The
Ray tests share one Ray instance (module fixture: it takes seconds to start) and skip when
Ray is not installed (`pip install -e ".[ray]"`).
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_collect import assert_same_episodes, run_collect
from worldmodel import hardware, pool
from worldmodel.envs import EnvConfig
from worldmodel.errors import ConfigError, HardwareError, WorldModelError
from worldmodel.hardware import HardwareConfig
from worldmodel.models import MDRNN, VAE, checkpoint
from worldmodel.pool import Backend, TaskTimedOut, WorkerDied
from worldmodel.rollout import AgentFiles, DriveSettings
from worldmodel.steps import controller as controller_step

LOCAL = Backend("local")
RAY = Backend("ray", address=None, cpus=2)


@pytest.fixture(autouse=True)
def _restore_backend() -> Iterator[None]:
    """hardware.setup sets the process's backend: put the default back after each test."""
    previous = pool.current_backend()
    yield
    pool._backend = previous


# --- without Ray -------------------------------------------------------------------------------


def test_asking_for_ray_without_it_says_how_to_install_in_one_line(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(WorldModelError) as caught:
        hardware.setup(HardwareConfig(device="cpu", backend="ray"))
    message = str(caught.value)
    assert "\n" not in message
    assert 'pip install -e ".[ray]"' in message and "hardware.backend=local" in message
    assert pool.current_backend().name == "local"  # nothing half-switched


def test_an_unknown_backend_is_refused():
    with pytest.raises(WorldModelError, match="hardware.backend='dask' is not one of local, ray"):
        hardware.setup(HardwareConfig(device="cpu", backend="dask"))


def test_hardware_carries_the_backend():
    hw = hardware.setup(HardwareConfig(device="cpu", workers=3))
    assert (hw.backend, hw.ray_address) == ("local", None)
    assert hw.describe()["backend"] == "local"
    assert pool.current_backend() == Backend("local", None, cpus=3)


def test_the_task_deadline_knob_reaches_run_tasks_and_must_be_positive():
    hardware.setup(HardwareConfig(device="cpu", workers=2, task_deadline_s=600))
    assert pool.current_backend().task_deadline_s == 600
    with pytest.raises(HardwareError, match=r"hardware.task_deadline_s=0 must be > 0"):
        hardware.setup(HardwareConfig(device="cpu", task_deadline_s=0))


# --- on a local Ray instance -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]"')
    import ray

    from worldmodel import ray_backend

    # pytest imports this file as `test_ray_backend` from tests/: Ray workers must find it
    # there too to unpickle the small functions below (the local pool's workers inherit it).
    tests = Path(__file__).resolve().parent
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={
        "env_vars": {"PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}})
    yield
    ray_backend.shutdown()
    ray.shutdown()


Z_DIM, HIDDEN = 8, 16


def agent_files(root: Path, z_dim: int = Z_DIM, hidden: int = HIDDEN) -> AgentFiles:
    """Untrained V and M checkpoints, as the controller step's inputs."""
    torch.manual_seed(0)
    torch.save(checkpoint(VAE(z_dim=z_dim)), root / "vae.pt")
    torch.save(checkpoint(MDRNN(z_dim=z_dim, hidden_size=hidden)), root / "mdrnn.pt")
    return AgentFiles(str(root / "vae.pt"), str(root / "mdrnn.pt"), EnvConfig())


def population_fitness(files: AgentFiles, backend: Backend, population: int, rollouts: int,
                       max_steps: int, n_params: int) -> np.ndarray:
    """One CMA-ES generation's fitnesses, as the controller step computes them."""
    candidates = np.random.default_rng(1).normal(0, 0.5, (population, n_params))
    tracks = controller_step.rollout_tracks(0, generation=0, rollouts=rollouts)
    settings = DriveSettings(max_steps=max_steps, z="sample")
    previous = pool.use_backend(backend)
    try:
        return controller_step.drive_mean_returns(
            candidates, tracks, list(range(rollouts)), files, settings, workers=2,
            envs_per_worker=rollouts, what="evaluating a population").returns
    finally:
        pool.use_backend(previous)


def test_population_fitnesses_on_ray_equal_the_local_pool(ray_instance, tmp_path):
    files = agent_files(tmp_path)
    n_params = 3 * (Z_DIM + HIDDEN) + 3
    local = population_fitness(files, LOCAL, 4, 2, 60, n_params)
    on_ray = population_fitness(files, RAY, 4, 2, 60, n_params)
    assert len(set(local.tolist())) > 1  # the candidates really differ
    np.testing.assert_array_equal(on_ray, local)


def test_collection_on_ray_equals_local(ray_instance, tmp_path):
    local = run_collect(tmp_path / "local", workers=2)
    pool.use_backend(RAY)
    on_ray = run_collect(tmp_path / "ray", workers=2)
    assert on_ray["key"] == local["key"]
    assert_same_episodes(local, on_ray)


def mark_init(directory: str) -> None:
    """An initializer that leaves one file per call."""
    Path(directory, f"init-{os.getpid()}-{time.monotonic_ns()}").touch()


def where(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_initializer_runs_once_per_actor_and_actors_are_kept(ray_instance, tmp_path):
    def run(values):
        return dict(pool.run_tasks(where, [(x,) for x in values], 2, "testing",
                                   initializer=mark_init, initargs=(str(tmp_path),),
                                   backend=RAY))

    first = run(range(8))
    assert {task[0]: result[0] for task, result in first.items()} == {x: x * x for x in range(8)}
    assert len({pid for _, pid in first.values()}) == 2  # both actors took tasks
    second = run(range(8, 12))
    assert len(list(tmp_path.glob("init-*"))) == 2  # two actors, initialized once each
    assert {pid for _, pid in second.values()} <= {pid for _, pid in first.values()}


def fails(x: int) -> int:
    raise ConfigError(f"bad value {x}")


def test_a_task_error_comes_back_as_itself(ray_instance):
    with pytest.raises(ConfigError, match="bad value 3"):
        list(pool.run_tasks(fails, [(3,)], 1, "testing", backend=RAY))


def dies(x: int) -> int:
    os._exit(1)


@pytest.mark.slow  # ~35 s; the local pool's dying worker is in the default suite
def test_a_dying_actor_raises_worker_died(ray_instance):
    started = time.monotonic()
    with pytest.raises(WorkerDied, match="while testing"):
        list(pool.run_tasks(dies, [(1,), (2,)], 2, "testing", backend=RAY))
    assert time.monotonic() - started < 60
    # The backend still works afterwards, with fresh actors.
    assert dict(pool.run_tasks(where, [(3,)], 1, "testing", backend=RAY))[(3,)][0] == 9


def test_a_stuck_actor_task_stops_the_run_naming_its_actor(ray_instance):
    started = time.monotonic()
    with pytest.raises(TaskTimedOut) as caught:
        list(pool.run_tasks(time.sleep, [(3600,)], 1, "testing", backend=RAY, deadline_s=2))
    assert time.monotonic() - started < 60
    message = str(caught.value)
    assert "while testing: sleep(3600,) in worker PID " in message
    assert "hardware.task_deadline_s" in message and "\n" not in message
    # Its actor was killed; the backend goes on with fresh ones.
    assert dict(pool.run_tasks(where, [(3,)], 1, "testing", backend=RAY))[(3,)][0] == 9


# --- speed (prints the numbers docs/cluster.md reports) ----------------------------------------


@pytest.mark.slow
def test_speed_of_ray_and_the_local_pool_on_a_population(ray_instance, tmp_path):
    """Population 8 x 2 rollouts x 200 steps, untrained paper-size V and M, 2 workers each.

    pytest -m slow -s tests/test_ray_backend.py -k speed
    """
    files = agent_files(tmp_path, z_dim=32, hidden=256)
    n_params = 3 * (32 + 256) + 3
    seconds = {}
    results = {}
    for backend in (LOCAL, RAY, LOCAL, RAY):
        started = time.perf_counter()
        results[backend.name] = population_fitness(files, backend, 8, 2, 200, n_params)
        seconds.setdefault(backend.name, []).append(time.perf_counter() - started)
    np.testing.assert_array_equal(results["ray"], results["local"])
    for name, (first, second) in seconds.items():
        print(f"{name}: first generation {first:.1f} s, second {second:.1f} s "
              f"({8 * 2 * 200 / second:.0f} env steps/s at most)")
