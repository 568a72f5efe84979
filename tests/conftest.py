"""Shared test helpers: composing the real configs, and a CPU Hardware for steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from worldmodel.hardware import Hardware
from worldmodel.rollout import one_torch_thread
from worldmodel.runner import Runner
from worldmodel.store import Store

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

# pygame must never try to open a window in tests.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def compose_config(overrides: list[str] | None = None, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides or [],
                       return_hydra_config=return_hydra_config)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m worldmodel ARGS` from the repository root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "worldmodel", *args],
        capture_output=True, text=True, cwd=REPO, timeout=timeout,
    )


def cpu_hardware(workers: int = 1) -> Hardware:
    """What a step gets on this machine's CPU, with `workers` worker processes."""
    return Hardware(device=torch.device("cpu"), workers=workers, threads=1)


def make_runner(table, cfg, root: Path, workers: int = 1) -> Runner:
    """A Runner over `table` storing under root/store, with its run directory root/run."""
    return Runner(table, cfg, cpu_hardware(workers), Store(root / "store"), root / "run")


@pytest.fixture
def cpu() -> Hardware:
    return cpu_hardware(workers=2)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread for the whole session, as rollout workers use.

    The tests' models are small; on a few shared cores torch's thread pool mostly waits for
    busy cores, which made training tests several times slower than one thread.
    """
    with one_torch_thread():
        yield
