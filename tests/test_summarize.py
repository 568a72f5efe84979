"""scripts/summarize.py on a hand-made sweep directory, where the right numbers are known."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO


def load_script(name: str):
    """A script of scripts/ as a module, so tests call its main() in this process."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fake_job(sweep: Path, number: int, overrides: list[str], mean_return: float | None,
             returns: list[float] | None = None, seconds: float | None = None) -> None:
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    summary = {"run": {"status": "complete" if mean_return is not None else "failed",
                       "seconds": seconds, "hardware": {"cpu_model": "Test CPU (model 1)"}},
               "controller": {"best_score": 1.0}}
    if mean_return is not None:
        summary["evaluate"] = {"mean_return": mean_return, "episodes": 100,
                               "returns": returns or [],
                               "fraction_900": np.mean(np.array(returns) >= 900) if returns
                               else 0.0}
    (job / "summary.json").write_text(json.dumps(summary))


def test_one_row_per_configuration_with_mean_and_std_across_seeds(tmp_path, capsys):
    sweep = tmp_path / "multiruns" / "2026-01-01_00-00-00"
    returns = {("real", 0): 100.0, ("real", 1): 200.0, ("real", 2): 300.0,
               ("dream", 0): 50.0, ("dream", 1): 70.0}
    number = 0
    for (mode, seed), value in returns.items():
        fake_job(sweep, number, ["data=tiny", f"seed={seed}", f"controller={mode}"], value)
        number += 1
    fake_job(sweep, number, ["data=tiny", "seed=2", "controller=dream"], None)  # failed

    assert load_script("summarize").main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "6 jobs, 2 configurations, 1 left out" in printed
    assert str(sweep / "sweep_summary.csv") in printed

    rows = list(csv.DictReader((sweep / "sweep_summary.csv").open()))
    assert [r["configuration"] for r in rows] == ["controller=real", "controller=dream"]
    real, dream = rows
    assert real["seeds"] == "0 1 2" and real["n"] == "3"
    assert float(real["evaluate.mean_return mean"]) == 200.0
    assert math.isclose(float(real["evaluate.mean_return std"]), 100.0)  # sample std
    assert float(dream["evaluate.mean_return mean"]) == 60.0
    assert math.isclose(float(dream["evaluate.mean_return std"]), math.sqrt(200))

    table = (sweep / "sweep_summary.md").read_text()
    assert "Every job: `data=tiny`" in table
    assert "| controller=real | 0 1 2 | 3 | 200.0 ± 100.0 | 100.0 | 300.0 |" in table
    assert "| controller=dream | 0 1 | 2 | 60.0 ± 14.1 | 50.0 | 70.0 |" in table
    assert "Left out (1 job(s)" in table
    assert (sweep / "sweep_summary.png").read_bytes().startswith(b"\x89PNG")


def test_one_row_per_job_with_its_evaluations_spread_wall_time_and_cpu(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["seed=0"], 700.0, returns=[950.0, 400.0, 900.0, 550.0], seconds=2400)
    fake_job(sweep, 1, ["seed=1"], None)  # failed before evaluating
    assert load_script("summarize").main([str(sweep)]) == 0
    assert str(sweep / "sweep_jobs.csv") in capsys.readouterr().out
    first, failed = list(csv.DictReader((sweep / "sweep_jobs.csv").open()))
    assert first["seed"] == "0" and float(first["value"]) == 700.0
    assert float(first["median"]) == 725.0  # the mean of the middle two of four
    assert float(first["share_900"]) == 0.5 and first["below_500"] == "1"
    assert float(first["minutes"]) == 40.0 and first["cpu"] == "Test CPU (model 1)"
    assert failed["status"] == "failed" and failed["value"] == "" and failed["median"] == ""
    table = (sweep / "sweep_summary.md").read_text()
    assert ("| 0 | (every job) | 0 | 700.0 | 725.0 | 50 % | 1 of 4 | 40.0 | Test CPU (model 1) |"
            in table)
    assert "| 1 | (every job) | 1 | – | – | – | – | – | Test CPU (model 1) |" in table


def test_other_metric_and_output_dir_and_nothing_to_summarise(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["seed=0"], 10.0)
    fake_job(sweep, 1, ["seed=1"], 30.0)
    summarize = load_script("summarize")
    out = tmp_path / "out"
    assert summarize.main([str(sweep), "--metric", "controller.best_score", "--out",
                           str(out)]) == 0
    [row] = list(csv.DictReader((out / "sweep_summary.csv").open()))
    assert row["configuration"] == "(every job)" and row["n"] == "2"
    assert float(row["controller.best_score mean"]) == 1.0
    assert summarize.main([str(sweep), "--metric", "evaluate.nothing"]) == 2
    assert "no job under" in capsys.readouterr().err


def test_the_throttle_effect_correlates_the_gas_held_with_the_tiles_visited(tmp_path, capsys):
    from worldmodel.episodes import Episode, episode_path, save_episode

    script = load_script("throttle_effect")
    rng = np.random.default_rng(0)
    for index in range(3):  # gas held per 30 steps; a tile on every step with gas above 0.5
        gas = np.repeat(rng.uniform(0, 1, 10), 30).astype(np.float32)
        actions = np.stack([np.zeros(300), gas, np.zeros(300)], axis=1).astype(np.float32)
        rewards = np.where(gas > 0.5, 3.2, -0.1).astype(np.float32)
        save_episode(episode_path(tmp_path, index), Episode(
            np.zeros((301, 8, 8, 3), np.uint8), actions, rewards, False, True, False))
    found = script.throttle_effect([tmp_path])
    assert found["windows"] == 3 * len(range(25, 300 - 30, 25))
    assert found["gas_tiles_corr"] > 0.8 and found["windows_after_a_tile"] > 0
    assert script.main([str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == found
