"""The logger backends: none always; tensorboard and wandb where their package is installed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF
from worldmodel import tracking
from worldmodel.errors import ConfigError
from worldmodel.runner import StepContext


def settings(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "logger" / f"{name}.yaml"))


class Recorder(tracking.Tracker):
    def __init__(self):
        self.logged, self.videos = [], []

    def log(self, metrics, step):
        self.logged.append((dict(metrics), step))

    def log_video(self, name, path):
        self.videos.append(name)
        return True


def test_none_does_nothing_and_bad_backends_are_one_line(tmp_path):
    tracker = tracking.make_tracker(settings("none"), tmp_path)
    tracker.log({"vae/loss": 1.0}, step=1)
    assert tracker.log_video("evaluate/best_episode", tmp_path / "x.gif") is False
    tracker.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="one of none, tensorboard, wandb"):
        tracking.make_tracker({"backend": "mlflow"}, tmp_path)


def test_missing_packages_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[wandb\]"'):
        tracking.make_tracker(settings("wandb"), tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[tensorboard\]"'):
        tracking.make_tracker(settings("tensorboard"), tmp_path)


def test_rows_results_and_videos_are_forwarded(tmp_path):
    row = {"epoch": 3, "vae/loss": 2.5, "vae/note": "text", "vae/none": None, "time": 1.0}
    assert tracking.split_row(row) == ({"vae/loss": 2.5, "vae/note": "text",
                                        "vae/none": None}, 3)
    result = tmp_path / "evaluate"
    result.mkdir()
    (result / "metrics.jsonl").write_text(
        json.dumps({"generation": 1, "evaluate/x": 1.0, "time": 0}) + "\n")
    (result / "best_episode.gif").write_bytes(b"GIF89a")
    tracker = Recorder()
    tracker.log_result("evaluate", result, {"mean_return": 5.0, "returns": [1, 2]}, reused=True)
    assert tracker.logged == [({"evaluate/x": 1.0}, 1), ({"evaluate/final/mean_return": 5.0}, 0)]
    assert tracker.videos == ["evaluate/best_episode"]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason='tensorboard is not installed (pip install -e ".[tensorboard]")')
def test_tensorboard_writes_scalars_a_reader_finds(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tracking.make_tracker(settings("tensorboard"), tmp_path, config={"seed": 0}) as tb:
        tb.log_row({"epoch": 1, "vae/loss": 3.0, "time": 0.0})
        tb.log_row({"epoch": 2, "vae/loss": 2.0, "time": 0.0})
        tb.log({"controller/best": 7.0, "controller/z": "mean"}, step=5)
        assert tb.log_video("evaluate/best_episode", tmp_path / "x.gif") is False
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("vae/loss")] == [(1, 3.0), (2, 2.0)]
    assert [e.step for e in events.Scalars("controller/best")] == [5]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason='wandb is not installed (pip install -e ".[wandb]")')
def test_wandb_offline_writes_its_run_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    with tracking.make_tracker(settings("wandb"), tmp_path, config={"seed": 0}) as run:
        run.log_row({"epoch": 1, "vae/loss": 3.0, "time": 0.0})
        run.log({"controller/best": 7.0}, step=1)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.skipif("tracker" not in StepContext.__dataclass_fields__,
                    reason="the runner does not forward metrics to a tracker yet")
def test_step_metrics_reach_the_tracker(tmp_path, cpu):
    import logging

    tracker = Recorder()
    ctx = StepContext(name="vae", config=None, dir=tmp_path, inputs={}, hardware=cpu, seed=0,
                      log=logging.getLogger("test"), tracker=tracker)
    ctx.log_metrics({"loss": 1.5}, epoch=2)
    assert tracker.logged == [({"vae/loss": 1.5}, 2)]
    assert Path(tmp_path / "metrics.jsonl").is_file()
