"""scripts/bench.py --quick --json runs and reports every measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"

RATES = {
    "env": ["stock_steps_per_s", "fast_steps_per_s", "ratio"],
    "population": ["pool_steps_per_s", "naive_steps_per_s", "ratio", "worker_peak_rss_mb"],
    "repeat": ["every_frame_per_s", "repeat_frames_per_s", "ratio"],
    "dream": ["one_thread_steps_per_s", "default_threads_steps_per_s"],
    "vae": ["frames_per_s"],
    "mdrnn": ["timesteps_per_s"],
}


def test_quick_benchmark_reports_every_section():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"], capture_output=True, text=True,
        timeout=120, env={**os.environ, "SDL_VIDEODRIVER": "dummy"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["quick"] is True
    assert report["machine"]["logical_cores"] >= 1
    assert report["machine"]["torch"]
    results = report["results"]
    assert set(results) == set(RATES)
    for section, keys in RATES.items():
        for key in [*keys, "peak_rss_mb", "seconds"]:
            assert results[section][key] > 0, (section, key)
    assert results["env"]["identical"] is True
    assert results["env"]["mismatched_steps"] == 0
    assert results["population"]["same_returns"] is True
    assert results["population"]["pool_steps"] == results["population"]["naive_steps"]
