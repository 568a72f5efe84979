"""Figures and report.md, redrawn from a finished tiny run with the training code unavailable;
and a two-job multirun that shares its upstream steps (the run the figures are drawn from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import compose_config, cpu_hardware, run_cli
from worldmodel import figures, report
from worldmodel.pipeline import STEPS
from worldmodel.runner import Runner
from worldmodel.store import Store

# The tiny preset made smaller still: the numbers mean nothing, every file is there.
CHAIN = ["data=tiny", "hardware=cpu", "collect.episodes=3", "collect.max_steps=80",
         "env.max_steps=80", "mdrnn.seq_len=16", "mdrnn.dream_start=5", "mdrnn.dream_steps=10",
         "controller.generations=1", "controller.max_steps=60", "controller.score_episodes=1"]
UPSTREAM = ["collect", "vae", "encode", "mdrnn", "controller"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """`worldmodel -m` over evaluate.episodes=1,2: one chain, then only evaluate again."""
    out = tmp_path_factory.mktemp("sweep")
    done = run_cli("-m", *CHAIN, "evaluate.episodes=1,2", f"paths.outputs={out}", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    [sweep_dir] = (out / "multiruns").iterdir()
    return sweep_dir


@pytest.fixture
def no_training(monkeypatch):
    """Every function that trains, collects or drives raises: figures must only read."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the figures must not train, collect or drive")

    from worldmodel import rollout
    from worldmodel.steps import collect, controller, encode, evaluate, mdrnn, vae

    for module, name in [(collect, "collect_episode"), (vae, "fit"), (vae, "train_epoch"),
                         (encode, "encode_frames"), (mdrnn, "fit"), (mdrnn, "train_epoch"),
                         (controller, "evolve"), (evaluate, "drive_jobs"),
                         (evaluate, "record_task"), (rollout, "drive")]:
        monkeypatch.setattr(module, name, forbidden)


def summary_of(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


def test_multirun_reuses_the_shared_upstream_steps(sweep):
    first, second = summary_of(sweep / "0"), summary_of(sweep / "1")
    assert all(first[s]["reused"] is False for s in [*UPSTREAM, "evaluate"])
    assert all(second[s]["reused"] is True for s in UPSTREAM), second
    assert second["evaluate"]["reused"] is False
    assert second["evaluate"]["episodes"] == 2
    assert all(first[s]["key"] == second[s]["key"] for s in UPSTREAM)


def test_make_figures_script_redraws_a_run_without_training(sweep, no_training, tmp_path):
    from tests.test_summarize import load_script

    make_figures = load_script("make_figures")
    job = sweep / "1"
    store_files = sorted(p for p in (sweep.parent.parent / "store").rglob("*") if p.is_file())
    assert make_figures.main([str(job)]) == 0
    drawn = json.loads((job / "figures" / "figures.json").read_text())
    assert set(drawn) == {"vae", "mdrnn", "controller", "evaluate"}
    expected = ["vae/reconstructions.png", "vae/losses.png", "mdrnn/dream.png",
                "mdrnn/dream.gif", "mdrnn/dream_error.png", "mdrnn/losses.png",
                "controller/cma_es.png", "evaluate/returns.png", "evaluate/filmstrip.png"]
    for rel in expected:
        assert (job / "figures" / rel).is_file(), rel
    # The store is read, never written.
    assert sorted(p for p in (sweep.parent.parent / "store").rglob("*") if p.is_file()) \
        == store_files

    text = (job / "report.md").read_text()
    summary = summary_of(job)
    for step in [*UPSTREAM, "evaluate"]:
        assert f"| {step} | `{summary[step]['key']}` |" in text
        assert report.duration(summary[step]["compute_seconds"]) in text
    assert "2 episodes of up to 80 frames" in text and "[2^30, 2^31)" in text
    assert "NOT the stock CarRacing-v3 rules" in text  # env.max_steps=80
    assert str(summary["evaluate"]["track_seeds"][0]) in text
    assert summary["run"]["git_commit"] in text or summary["run"]["git_commit"] is None
    assert "](figures/vae/reconstructions.png)" in text
    assert "best_episode." in text  # the video, linked where it is stored

    # Vector output on request, for what goes through worldmodel.figures.
    assert make_figures.main([str(job), "--format", "svg", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "vae" / "reconstructions.svg").is_file()
    assert (tmp_path / "controller" / "cma_es.svg").is_file()
    assert (tmp_path / "evaluate" / "filmstrip.svg").is_file()


def test_figures_step_reuses_every_input_and_reports(sweep, no_training, tmp_path):
    """pipeline.py's own figures row and conf/'s figures group, on the sweep's store: what
    `worldmodel steps=[figures]` runs after the sweep's second job."""
    cfg = compose_config([*CHAIN, "evaluate.episodes=2",
                          f"paths.outputs={sweep.parent.parent}", "figures.format=pdf"])
    runner = Runner(STEPS, cfg, cpu_hardware(), Store(cfg.paths.store), tmp_path / "run")
    summary = runner.run(["figures"])
    assert all(summary[s]["reused"] for s in [*UPSTREAM, "evaluate"])
    assert summary["figures"]["reused"] is False and summary["figures"]["skipped"] == []
    stored = Path(summary["figures"]["path"])
    assert (stored / "vae" / "reconstructions.pdf").is_file()
    assert (stored / "report.md").is_file()

    path = report.write_run_report(tmp_path / "run", summary)
    text = path.read_text()
    assert "| figures |" in text and "format pdf" in text
    assert "- [reconstructions.pdf](" in text  # a PDF is linked, not embedded
    # Links are relative and resolve from the report's directory.
    target = text.split("- [reconstructions.pdf](")[1].split(")")[0]
    assert not target.startswith("/") and (path.parent / target).is_file()


def test_style_is_scoped_and_format_swaps_the_suffix(tmp_path):
    import matplotlib
    import numpy as np

    before = dict(matplotlib.rcParams)
    with figures.style("pdf"):
        assert matplotlib.rcParams["axes.spines.top"] is False
        path = figures.curves({"a": ([1, 2], [1.0, None])}, tmp_path / "c.png", "x", "y")
    assert path == tmp_path / "c.pdf" and path.read_bytes().startswith(b"%PDF")
    assert figures.current_format() == "png"
    assert dict(matplotlib.rcParams) == before  # nothing set globally
    image = np.zeros((2, 8, 12, 3), np.uint8)
    assert figures.image_rows([("x", image)], tmp_path / "g.png", columns=["0", "1"]).is_file()
    with pytest.raises(ValueError, match="png, pdf, svg"):
        figures.check_format("jpg")


def test_report_names_each_steps_cpu_and_notes_a_dirty_tree_and_mixed_cpus():
    made = {"device": "cpu", "cpu_model": "CPU A (model 1)", "cpu_flags": "avx2 fma"}
    manifests = {"collect": {"hardware": made, "git_commit": "a" * 40},
                 "vae": {"hardware": dict(made, cpu_model="CPU B (model 2)"),
                         "git_commit": "a" * 40}}
    summary = {"run": {"git_commit": "b" * 40 + "+dirty", "hardware": made, "seconds": 60},
               "collect": {"key": "k1", "reused": True, "seconds": 1.0},
               "vae": {"key": "k2", "reused": False, "seconds": 59.0}}
    steps = "\n".join(report.steps_section(summary, manifests))
    assert "| cpu, CPU A (model 1) |" in steps and "| cpu, CPU B (model 2) |" in steps
    environment = "\n".join(report.environment_section(summary, manifests))
    assert "cpu_model CPU A (model 1)" in environment and "cpu_flags avx2 fma" in environment
    assert "uncommitted changes (`+dirty`)" in environment
    assert "made on 2 CPU models" in environment
    clean = dict(summary, run=dict(summary["run"], git_commit="b" * 40))
    one_cpu = {"collect": manifests["collect"]}
    text = "\n".join(report.environment_section(clean, one_cpu))
    assert "+dirty" not in text and "CPU models" not in text
