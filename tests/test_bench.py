"""scripts/bench.py --quick --json: every measurement is reported with its settings, in the
units it names, its numbers agree with each other, and its identical-frames check catches a
renderer that differs. No speed is asserted: that depends on the machine and its load."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_summarize import load_script
from worldmodel.envs import FastCarRacing, factory


@pytest.fixture(scope="module")
def bench():
    return load_script("bench")


@pytest.fixture(scope="module")
def report() -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "SDL_VIDEODRIVER": "dummy"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_measurement_is_reported_with_the_quick_settings(report, bench):
    assert report["quick"] is True
    results = report["results"]
    assert list(results) == list(bench.MEASUREMENTS)
    for name, settings in bench.QUICK.items():
        for key, value in settings.items():
            if (name, key) != ("env", "steps"):  # env reports the steps it took in all
                assert results[name][key] == value, (name, key)
    machine = report["machine"]
    assert machine["logical_cores"] == os.cpu_count()
    assert 1 <= machine["usable_cores"] <= machine["logical_cores"]
    for name in ("dream", "vae", "mdrnn"):  # each child ran with torch's default threads
        threads = results[name]["default_threads" if name == "dream" else "threads"]
        assert threads == machine["torch_threads"], name


def test_the_numbers_agree_with_each_other(report, bench):
    env, pool, repeat = (report["results"][name] for name in ("env", "population", "repeat"))
    # Renderers: every step of the quick episodes was compared (none ends sooner), all matched.
    assert env["steps"] == env["seeds"] * bench.QUICK["env"]["steps"]
    assert env["identical"] is True
    assert env["mismatched_steps"] == 0 and env["first_mismatch"] is None
    # The pool and the naive loop drove the same episodes, to the end: frames = P x R x T.
    assert pool["pool_steps"] == pool["naive_steps"] \
        == pool["population"] * pool["rollouts"] * pool["max_steps"]
    assert pool["same_returns"] is True
    assert pool["worker_processes_seen"] >= pool["workers"]
    # A rate is steps per second of the time reported next to it (rounded to 0.01 s).
    assert pool["pool_steps"] / pool["pool_steps_per_s"] \
        == pytest.approx(pool["later_generation_s"], abs=0.01)
    # The training renderer plays the same game, in frames close to the identical ones.
    assert env["lowres_same_game"] is True
    assert 0 < env["lowres_pixel_mean"] < 2 and env["lowres_pixel_p99"] < 40
    # The controller's loops drove the same episodes; batching alone changed no return.
    controller = report["results"]["controller"]
    full = controller["population"] * controller["rollouts"] * controller["max_steps"]
    assert controller["today_frames"] == controller["batched_frames"] <= full
    assert controller["batched_same_returns"] is True
    for loop in ("today", "batched", "lowres"):
        assert controller[f"{loop}_frames_per_s_per_core"] == pytest.approx(
            controller[f"{loop}_frames_per_s"] / controller["workers"], abs=0.1)
    # An agent step's parts add up to its time, and each is a share of it.
    for loop in ("today", "lowres"):
        step = report["results"]["step_time"][loop]
        assert sum(step["parts_ms"].values()) == pytest.approx(step["ms_per_agent_step"],
                                                               abs=0.01)
        assert all(ms >= 0 for part, ms in step["parts_ms"].items()
                   if part != "the rest of the loop")
    # Each ratio is B / A of the two rates printed beside it.
    for result, a, b in [(env, "stock_steps_per_s", "fast_steps_per_s"),
                         (pool, "naive_steps_per_s", "pool_steps_per_s"),
                         (repeat, "every_frame_per_s", "repeat_frames_per_s"),
                         (controller, "today_frames_per_s", "lowres_frames_per_s")]:
        assert result["ratio"] == pytest.approx(result[b] / result[a], rel=0.01), a


def test_memory_and_time_are_in_the_units_they_name(report):
    results = report["results"]
    # A Python process with torch imported peaks at hundreds of MB: in KiB or bytes that would
    # read 1e5 or more, in GiB below 1.
    for name, result in results.items():
        assert 100 < result["peak_rss_mb"] < 20_000, name
    assert 100 < results["population"]["worker_peak_rss_mb"] < 20_000
    # The total is the measurements' processes one after the other (each rounded to 0.1 s).
    assert sum(r["seconds"] for r in results.values()) \
        == pytest.approx(report["seconds"], abs=0.5)


def test_the_markdown_table_has_a_row_per_measurement(report, bench):
    text = bench.markdown(report)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    # The header, then one per measurement, and the env measurement's two renderer rows.
    assert len(rows) == 1 + len(bench.MEASUREMENTS) + 1
    assert "identical frames/rewards/flags: yes" in text
    assert "same rewards and flags: yes" in text and "same returns as today: yes" in text
    assert f"Total: {report['seconds']} s." in text
    different = copy.deepcopy(report)
    different["results"]["env"]["identical"] = False
    assert "identical frames/rewards/flags: NO" in bench.markdown(different)


class Tampered(FastCarRacing):
    """FastCarRacing with one pixel changed after its 4th step and the reward after its 6th."""

    taken = 0

    def reset(self, **kwargs):
        result = super().reset(**kwargs)  # CarRacing's reset takes a step of its own
        self.taken = 0
        return result

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        self.taken += 1
        if self.taken == 4:
            observation = observation.copy()
            observation[0, 0, 0] ^= 1
        if self.taken == 6:
            reward += 1e-3
        return observation, reward, terminated, truncated, info


def test_the_identical_frames_check_catches_a_renderer_that_differs(bench, monkeypatch):
    monkeypatch.setitem(factory.RENDERERS, "fast", Tampered)
    result = bench.compare_renderers(1, 8, "repeat", domain_randomize=False)
    assert result["steps"] == 8
    assert result["identical"] is False
    assert result["mismatched_steps"] == 2
    assert result["first_mismatch"] == "seed 0, step 3"
