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


def step_dir(root: Path, name: str, files: dict[str, object]) -> Path:
    path = root / "store" / name
    path.mkdir(parents=True)
    for file, content in files.items():
        (path / file).write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_the_rounds_table_adds_each_rounds_minutes_and_real_frames(tmp_path):
    table = load_script("ablation_table")
    summary = {"run": {"status": "complete"}}
    for k, (suffix, episodes, score, mean) in enumerate((("", 4, 120.0, 300.0),
                                                         ("_r1", 2, 480.5, 650.0))):
        collect = step_dir(tmp_path, f"collect{suffix}", {
            "dataset.json": {"episodes": episodes, "mean_steps": 150},
            "manifest.json": {"config": {"env": {"action_repeat": 2}}}})
        controller = step_dir(tmp_path, f"controller{suffix}", {
            "controller.json": {"best_score": score},
            "metrics.jsonl": "\n".join(json.dumps(m) for m in (
                {"controller/env_steps": 1000}, {"controller/env_steps": 500,
                                                 "controller/score_env_steps": 200}))})
        evaluate = step_dir(tmp_path, f"evaluate{suffix}", {"returns.json": {
            "mean_return": mean, "std_return": 10.0, "episodes": 2,
            "episode_results": [{"steps": 1000}, {"steps": 900}]}})
        for name, path in (("collect", collect), ("controller", controller),
                           ("evaluate", evaluate)):
            summary[f"{name}{suffix}"] = {"path": str(path), "compute_seconds": 60.0 * (k + 1)}
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary))
    lines = table.rounds_markdown(run).splitlines()
    # collect frames: episodes x mean agent steps x action_repeat (no env_frames recorded).
    assert lines[4] == "| 0 | 3.0 | 1,200 / 1,500 / 200 / 1,900 | 300.0 ± 10.0 | 2 | 120.0 | – |"
    assert lines[5] == "| 1 | 6.0 | 600 / 1,500 / 200 / 1,900 | 650.0 ± 10.0 | 2 | 480.5 | – |"
