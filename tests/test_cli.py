"""The `worldmodel` command end to end on the real CarRacing-v3, as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, compose_config, make_runner, run_cli
from worldmodel.errors import ConfigError
from worldmodel.pipeline import STEPS

TINY = ["data=tiny", "hardware=cpu", "steps=[collect]", "collect.episodes=2",
        "collect.max_steps=30"]


def test_run_then_rerun_reuses_and_logs_where_files_are(tmp_path):
    first = run_cli(*TINY, f"paths.outputs={tmp_path}")
    assert first.returncode == 0, first.stderr
    second = run_cli(*TINY, f"paths.outputs={tmp_path}")
    assert second.returncode == 0, second.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    if len(runs) == 1:  # both commands started within the same second
        runs = runs * 2
    logs = [(run / "worldmodel.log").read_text() for run in runs]
    assert "[collect] ran in" in logs[0]
    assert "[collect] reused ->" in logs[-1] and str(tmp_path / "store" / "collect") in logs[-1]
    summary = json.loads((runs[-1] / "summary.json").read_text())
    assert summary["run"]["status"] == "complete"
    assert summary["collect"]["reused"] is True
    assert summary["collect"]["episodes"] == 2
    assert Path(summary["collect"]["path"], "manifest.json").is_file()


def test_multirun_writes_one_summary_per_job(tmp_path):
    out = run_cli("-m", *TINY, "seed=0,1", f"paths.outputs={tmp_path}")
    assert out.returncode == 0, out.stderr
    jobs = sorted((tmp_path / "multiruns").glob("*/*/summary.json"))
    assert len(jobs) == 2
    keys = {json.loads(p.read_text())["collect"]["key"] for p in jobs}
    assert len(keys) == 2  # the seed enters the identity


def test_unknown_step_is_one_clear_line(tmp_path):
    out = run_cli("hardware=cpu", "steps=[vea]", f"paths.outputs={tmp_path}")
    assert out.returncode == 2
    assert "unknown step vea; the steps are collect" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


# Each of these was refused only after collect, V and M had run, or ended in a traceback.
BAD_VALUES = {
    "collect.episodes=-3": "collect.episodes=-3 must be >= 1 (set collect.episodes=1 or more)",
    "env.action_repeat=0": "env.action_repeat=0 must be >= 1 (set env.action_repeat=1 or more)",
    "controller.population=2": "controller.population=2 must be >= 3 (set "
                               "controller.population=3 or more)",
    "evaluate.episodes=0": "evaluate.episodes=0 must be >= 1 (set evaluate.episodes=1 or more)",
    "seed=abc": "seed: Value 'abc' of type 'str' could not be converted to Integer",
    "controller.renderer=wireframe": "controller.renderer='wireframe' is not one of fast, "
                                     "stock, lowres (set controller.renderer to one of them)",
}
THROUGH_THE_CLI = ("collect.episodes=-3", "evaluate.episodes=0")  # a traceback; a late refusal


@pytest.mark.parametrize("bad", THROUGH_THE_CLI)
def test_a_bad_value_stops_the_run_before_any_step_with_one_line(tmp_path, bad):
    out = run_cli("data=tiny", "hardware=cpu", bad, f"paths.outputs={tmp_path}")
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith("error: " + BAD_VALUES[bad]), text
    assert not (tmp_path / "store").exists()  # no step ran, not even collect


@pytest.mark.parametrize("bad", sorted(set(BAD_VALUES) - set(THROUGH_THE_CLI)))
def test_every_bad_value_is_refused_before_any_step_with_its_key_and_fix(tmp_path, bad):
    """The same check the CLI runs first (Runner.check_configs), in this process."""
    runner = make_runner(STEPS, compose_config(["data=tiny", "hardware=cpu", bad]), tmp_path)
    with pytest.raises(ConfigError) as refused:
        runner.run()
    assert BAD_VALUES[bad] in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "store").exists()


def test_whole_tiny_chain_then_everything_is_reused(tmp_path):
    """The issue's 'done when': the whole chain on real CarRacing-v3, then a full reuse."""
    args = ["data=tiny", "hardware=cpu", f"paths.outputs={tmp_path}"]
    first = run_cli(*args, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(*args, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = sorted((tmp_path / "runs").iterdir())
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    steps = ["collect", "vae", "encode", "mdrnn", "controller", "evaluate"]
    assert all(not summaries[0][s]["reused"] for s in steps)
    assert all(summaries[-1][s]["reused"] for s in steps)
    evaluation = summaries[-1]["evaluate"]
    assert evaluation["episodes"] == len(evaluation["returns"]) == 2
    assert evaluation["mean_return"] == pytest.approx(sum(evaluation["returns"]) / 2)
    videos = list(Path(evaluation["path"]).glob("*_episode.*"))
    assert len(videos) == 3 and all(v.stat().st_size > 0 for v in videos)  # best, median, worst
    # scripts/transfer_gap.py drives the evaluated agent again: on an identical renderer it
    # returns what evaluate returned, episode for episode; on lowres, its own numbers.
    gaps = {}
    for renderer in ("fast", "lowres"):
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "transfer_gap.py"),
                               str(runs[-1]), "--renderer", renderer, "--workers", "1",
                               "--json"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        gaps[renderer] = json.loads(done.stdout)
    assert gaps["fast"]["same_returns_as_evaluate"] is True
    assert gaps["fast"]["renderer_mean"] == pytest.approx(evaluation["mean_return"], abs=0.01)
    assert gaps["lowres"]["episodes"] == 2 and gaps["lowres"]["identical_renderer"] == "fast"


def test_sigterm_stops_like_ctrl_c_and_the_same_command_resumes(tmp_path):
    """`kill` (or a cluster's time limit) marks the run interrupted and keeps finished episodes."""
    args = [*TINY[:-2], "collect.episodes=40", "collect.max_steps=200",
            f"paths.outputs={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "worldmodel", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    staging = tmp_path / "store" / "collect"
    deadline = time.monotonic() + 120
    while not list(staging.glob(".staging-*/episodes/ep_*.npz")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0
    assert "interrupted; finished steps are stored" in output
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["run"]["status"] == "interrupted"
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr + again.stdout
