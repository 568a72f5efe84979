"""Sweeps on launchers: the presets in conf/hydra/launcher compose, default worker counts
follow the CPUs a job may use, and a real parallel joblib sweep whose two jobs want the same
collect result computes it once (one job computes, the other waits and reuses it), with worker
pools started inside joblib's worker processes.

Tests of a launcher skip when its Hydra plugin is not installed (hydra-joblib-launcher,
hydra-submitit-launcher).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import compose_config, run_cli
from worldmodel import hardware
from worldmodel.hardware import HardwareConfig


@pytest.fixture
def joblib_plugin() -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher",
                        reason="hydra-joblib-launcher is not installed")


@pytest.fixture
def submitit_plugin() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher is not installed")


def test_parallel_preset_runs_two_joblib_jobs(joblib_plugin):
    cfg = compose_config(["hydra/launcher=parallel"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2


def test_the_plugins_own_joblib_launcher_composes_too(joblib_plugin):
    cfg = compose_config(["hydra/launcher=joblib"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


def test_slurm_preset_composes_and_takes_overrides(submitit_plugin):
    cfg = compose_config(["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=4",
                          "hydra.launcher.partition=gpu"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert (cfg.hydra.launcher.cpus_per_task, cfg.hydra.launcher.partition) == (4, "gpu")
    assert cfg.hydra.launcher.timeout_min == 720


def test_the_plugins_own_slurm_launcher_composes_too(submitit_plugin):
    cfg = compose_config(["hydra/launcher=submitit_slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")


def test_default_workers_are_the_cpus_this_process_may_use(monkeypatch):
    """A SLURM job with cpus_per_task=4 on a 64-core node gets 4 workers, not 64."""
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda _: {0, 1, 2, 3},
                        raising=False)
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 64)
    assert hardware.setup(HardwareConfig(device="cpu")).workers == 4


def test_two_parallel_jobs_wanting_one_collect_result_make_one(joblib_plugin, tmp_path):
    # controller.sigma0 is not read by collect: both jobs need the same collect result.
    # hardware.workers=2 starts a worker pool inside each joblib (loky) worker process.
    result = run_cli(
        "-m", "hydra/launcher=parallel", "data=tiny", "hardware=cpu", "hardware.workers=2",
        "steps=[collect]", "collect.episodes=2", "collect.max_steps=30",
        f"paths.outputs={tmp_path}", "seed=0", "controller.sigma0=0.1,0.2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stored = [p for p in (tmp_path / "store" / "collect").iterdir()
              if not p.name.startswith(".")]
    assert len(stored) == 1
    [sweep] = (tmp_path / "multiruns").iterdir()
    summaries = [json.loads((job / "summary.json").read_text())
                 for job in sorted(p for p in sweep.iterdir() if p.is_dir() and
                                   p.name.isdigit())]
    assert [s["run"]["status"] for s in summaries] == ["complete", "complete"]
    assert sorted(s["collect"]["reused"] for s in summaries) == [False, True]
    assert {Path(s["collect"]["path"]) for s in summaries} == set(stored)
