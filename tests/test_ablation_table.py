"""scripts/ablation_table.py on hand-made run directories, where the right numbers are known."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_summarize import load_script

STEPS = ("collect", "vae", "encode", "mdrnn", "controller", "evaluate", "figures")


def fake_run(runs: Path, name: str, overrides: list[str], compute_seconds: dict[str, float],
             run_seconds: float, evaluate: dict | None) -> Path:
    run = runs / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    summary = {"run": {"status": "complete" if evaluate else "failed", "seconds": run_seconds}}
    for step, seconds in compute_seconds.items():
        summary[step] = {"compute_seconds": seconds}
    if evaluate:
        summary["evaluate"].update(evaluate)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_rows_add_the_compute_time_of_every_step_and_report_the_evaluation(tmp_path, capsys):
    table = load_script("ablation_table")
    everything = dict.fromkeys(STEPS, 60.0)  # a minute each: 7 minutes to the agent
    default = fake_run(tmp_path, "a", ["paths.outputs=/x"], everything, 420.0,
                       {"episodes": 100, "mean_return": 812.25, "std_return": 40.5,
                        "fraction_900": 0.31})
    # Reused V and M: this run took 2 minutes, the agent still 7.
    reused = fake_run(tmp_path, "b", ["paths.outputs=/x", "controller.rollouts=1"], everything,
                      120.0, {"episodes": 100, "mean_return": 700.0, "std_return": 90.0,
                              "fraction_900": 0.05})
    failed = fake_run(tmp_path, "c", ["env.action_repeat=2"], {"collect": 30.0}, 30.0, None)

    assert table.main([str(default), str(reused), str(failed)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == ("| `default` | 7.0 | 7.0 | 1.0 / 1.0 / 1.0 / 1.0 / 1.0 | 100 | "
                        "812.2 ± 40.5 | 31% |")
    assert lines[3].startswith("| `controller.rollouts=1` | 7.0 | 2.0 |")
    assert "700.0 ± 90.0 | 5% |" in lines[3]
    assert lines[4] == ("| `env.action_repeat=2` | – | 0.5 | 0.5 / – / – / – / – | – | "
                        "no evaluation (failed) | – |")


def test_a_directory_without_summary_is_named(tmp_path, capsys):
    table = load_script("ablation_table")
    try:
        table.main([str(tmp_path)])
    except SystemExit as stop:
        assert "summary.json is missing" in str(stop)
    else:
        raise AssertionError("expected an error naming the missing summary.json")
