"""The step store and runner, exercised with small step functions defined here.

Covers: identity (stable, blind to hardware, changed by its slice and propagated downstream),
reuse, force, steps=[X] pulling in only what is missing, resume after a kill, damaged results,
a hand-edited manifest, concurrent processes, and summary.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from worldmodel.errors import ConfigError, StoreError
from worldmodel.hardware import Hardware
from worldmodel.runner import Runner, Step, StepContext
from worldmodel.store import MANIFEST, Store

CALLS: Counter = Counter()


@dataclass
class NumbersParams:
    count: int
    fail_at: int | None = None


@dataclass
class NumbersConfig:
    seed: int
    numbers: NumbersParams


def make_numbers(ctx: StepContext) -> dict:
    """Writes `count` files one by one, skipping those a killed run already wrote."""
    CALLS["numbers"] += 1
    count = ctx.config.numbers.count
    fail_at = ctx.config.numbers.fail_at
    for i in range(count):
        path = ctx.dir / f"n{i}.txt"
        if path.exists():
            continue
        if i == fail_at and not os.environ.get("NUMBERS_NO_FAIL"):
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of the step
        CALLS["numbers_item"] += 1
        path.write_text(str(int(ctx.rng("item", i).integers(1000))))
    return {"count": count}


def make_total(ctx: StepContext) -> dict:
    CALLS["total"] += 1
    numbers = ctx.inputs["numbers"].path
    total = sum(int(p.read_text()) for p in numbers.glob("n*.txt")) * ctx.config["scale"]["k"]
    (ctx.dir / "total.json").write_text(json.dumps(total))
    ctx.log_metrics({"total": total}, epoch=0)
    return {"total": total}


def make_side(ctx: StepContext) -> dict:
    CALLS["side"] += 1
    (ctx.dir / "side.txt").write_text("side")
    return {}


TABLE = (
    Step("numbers", make_numbers, reads=("seed", "numbers"), config=NumbersConfig,
         writes=("n0.txt",)),
    Step("total", make_total, inputs=("numbers",), reads=("scale",), writes=("total.json",)),
    Step("side", make_side, reads=("side",), writes=("side.txt",)),
)


def config(**changes):
    base = {
        "seed": 0,
        "numbers": {"count": 4, "fail_at": None},
        "scale": {"k": 2},
        "side": {"x": 1},
        "hardware": {"device": "cpu"},
    }
    cfg = OmegaConf.create(base)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def hardware(device: str = "cpu") -> Hardware:
    return Hardware(device=torch.device(device), workers=1, threads=1)


@pytest.fixture(autouse=True)
def reset_calls():
    CALLS.clear()


def runner(tmp_path: Path, cfg=None, table=TABLE, verify="hash", device="cpu") -> Runner:
    store = Store(tmp_path / "store", verify=verify)
    return Runner(table, cfg if cfg is not None else config(), hardware(device), store,
                  tmp_path / "run")


def test_keys_are_stable_and_blind_to_hardware(tmp_path):
    keys = runner(tmp_path).keys()
    assert keys == runner(tmp_path).keys()
    other_hw = runner(tmp_path, config(**{"hardware.device": "cuda"}), device="meta").keys()
    assert other_hw == keys


def test_slice_change_changes_key_and_everything_downstream(tmp_path):
    keys = runner(tmp_path).keys()
    changed = runner(tmp_path, config(**{"numbers.count": 5})).keys()
    assert changed["numbers"][0] != keys["numbers"][0]
    assert changed["total"][0] != keys["total"][0]  # propagated through the input key
    assert changed["side"][0] == keys["side"][0]
    scale = runner(tmp_path, config(**{"scale.k": 3})).keys()
    assert scale["numbers"][0] == keys["numbers"][0] and scale["total"][0] != keys["total"][0]


def test_version_bump_changes_key(tmp_path):
    keys = runner(tmp_path).keys()
    bumped = (Step("numbers", make_numbers, reads=("seed", "numbers"), config=NumbersConfig,
                   version=2), *TABLE[1:])
    assert runner(tmp_path, table=bumped).keys()["numbers"][0] != keys["numbers"][0]


def test_first_run_computes_second_reuses(tmp_path):
    summary = runner(tmp_path).run("all")
    assert CALLS == Counter(numbers=1, numbers_item=4, total=1, side=1)
    assert summary["run"]["status"] == "complete"
    assert not summary["total"]["reused"]
    CALLS.clear()
    again = runner(tmp_path).run("all")
    assert CALLS == Counter()
    assert all(again[name]["reused"] for name in ("numbers", "total", "side"))
    assert again["total"]["total"] == summary["total"]["total"]
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["total"]["key"] == summary["total"]["key"]
    assert set(written["total"]) >= {"key", "path", "reused", "seconds", "total"}


def test_results_depend_on_seed(tmp_path):
    first = runner(tmp_path).run(["total"])["total"]["total"]
    second = runner(tmp_path, config(seed=1)).run(["total"])["total"]["total"]
    assert first != second


def test_manifest_records_config_inputs_files_versions(tmp_path):
    summary = runner(tmp_path).run(["total"])
    manifest = json.loads((Path(summary["total"]["path"]) / MANIFEST).read_text())
    assert manifest["config"] == {"scale": {"k": 2}}
    assert manifest["inputs"] == {"numbers": summary["numbers"]["key"]}
    assert set(manifest["files"]) == {"total.json", "metrics.jsonl"}
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["metrics"] == {"total": summary["total"]["total"]}
    metrics = (Path(summary["total"]["path"]) / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[0])["total/total"] == summary["total"]["total"]


def test_manifest_records_the_machine_that_decides_the_last_bits(tmp_path):
    summary = runner(tmp_path).run(["numbers"])
    manifest = json.loads((Path(summary["numbers"]["path"]) / MANIFEST).read_text())
    machine = manifest["hardware"]
    assert machine["cpu_model"] and machine["threads"] == 1
    assert machine["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(machine) >= {"cpu_flags", "torch_interop_threads", "mkldnn"}
    assert manifest["git_commit"] is None or len(manifest["git_commit"].split("+")[0]) == 40


def test_reusing_results_made_on_another_cpu_model_is_said_once(tmp_path, caplog):
    summary = runner(tmp_path).run("all")
    for name in ("numbers", "total"):  # as if copied from a machine with another CPU
        path = Path(summary[name]["path"]) / MANIFEST
        manifest = json.loads(path.read_text())
        manifest["hardware"]["cpu_model"] = "Other CPU (model 9)"
        path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger="worldmodel"):
        runner(tmp_path, verify="size").run("all")
    told = [r.getMessage() for r in caplog.records if "another CPU model" in r.getMessage()]
    assert len(told) == 1 and "Other CPU (model 9)" in told[0]
    assert "in distribution, not bit for bit" in told[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="worldmodel"):
        runner(tmp_path, verify="size").run(["side"])  # made here: nothing to say
    assert not [r for r in caplog.records if "another CPU model" in r.getMessage()]


def test_asking_for_one_step_runs_only_missing_upstream(tmp_path):
    runner(tmp_path).run(["total"])
    assert CALLS == Counter(numbers=1, numbers_item=4, total=1)  # side is not upstream
    CALLS.clear()
    runner(tmp_path, config(**{"scale.k": 5})).run(["total"])
    assert CALLS == Counter(total=1)  # numbers is stored and reused
    CALLS.clear()
    summary = runner(tmp_path).run(["total"])
    assert CALLS == Counter()  # total is stored: numbers is not needed...
    assert summary["numbers"]["reused"]  # ...but the summary still shows the whole chain
    assert "side" not in summary


def test_deleted_upstream_of_a_stored_step_is_not_recomputed(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    summary = runner(tmp_path).run(["total"])
    shutil.rmtree(summary["numbers"]["path"])  # e.g. a big dataset deleted to save disk
    CALLS.clear()
    again = runner(tmp_path).run(["total"])
    assert CALLS == Counter() and again["total"]["reused"] and "numbers" not in again
    assert "[numbers] not stored, and not needed" in caplog.text


def test_force_recomputes_the_step_and_downstream(tmp_path):
    runner(tmp_path).run("all")
    CALLS.clear()
    summary = runner(tmp_path).run(["side"], force=["numbers"])
    assert CALLS == Counter(numbers=1, numbers_item=4, total=1)  # side is reused
    assert not summary["numbers"]["reused"] and not summary["total"]["reused"]
    assert summary["side"]["reused"]
    CALLS.clear()
    runner(tmp_path).run("all", force="all")
    assert CALLS["numbers"] == CALLS["total"] == CALLS["side"] == 1


def test_unknown_step_names_are_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown step vae; the steps are numbers, total, side"):
        runner(tmp_path).run(["vae"])
    with pytest.raises(ConfigError, match="force"):
        runner(tmp_path).run("all", force=["nope"])


def test_interrupted_step_leaves_nothing_complete_and_rerun_resumes(tmp_path):
    cfg = config(**{"numbers.fail_at": 2})
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path, cfg).run(["total"])
    store = Store(tmp_path / "store")
    key = runner(tmp_path, cfg).keys()["numbers"][0]
    assert not store.final_dir("numbers", key).exists()
    assert sorted(p.name for p in store.staging_dir("numbers", key).iterdir()) == [
        "n0.txt", "n1.txt"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["run"]["status"] == "interrupted"
    CALLS.clear()
    os.environ["NUMBERS_NO_FAIL"] = "1"
    try:
        resumed = runner(tmp_path, cfg).run(["total"])
    finally:
        del os.environ["NUMBERS_NO_FAIL"]
    assert CALLS["numbers_item"] == 2  # only n2 and n3 were made
    assert store.final_dir("numbers", key).exists()
    assert not store.staging_dir("numbers", key).exists()
    # The resumed result equals one made in a single go.
    fresh = runner(tmp_path / "fresh").run(["total"])
    assert resumed["total"]["total"] == fresh["total"]["total"]


def test_killed_process_resumes(tmp_path):
    """SIGKILL in the middle of a step (no cleanup runs at all), then the same command."""
    script = tmp_path / "slow_pipeline.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, torch
        from omegaconf import OmegaConf
        from worldmodel.hardware import Hardware
        from worldmodel.runner import Runner, Step
        from worldmodel.store import Store

        def slow(ctx):
            for i in range(6):
                path = ctx.dir / f"part{{i}}"
                if not path.exists():
                    time.sleep(0.3)
                    path.write_text(str(i))
                    print("wrote", i, flush=True)
            return {{"parts": 6}}

        table = (Step("slow", slow, reads=("seed",), writes=("part5",)),)
        cfg = OmegaConf.create({{"seed": 0}})
        hw = Hardware(device=torch.device("cpu"), workers=1, threads=1)
        root = {str(tmp_path)!r}
        summary = Runner(table, cfg, hw, Store(root + "/store"), root + "/run").run("all")
        print("reused" if summary["slow"]["reused"] else "done", flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stdout:
        if line.startswith("wrote 2"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    store_dir = tmp_path / "store" / "slow"
    assert [p.name for p in store_dir.iterdir() if not p.name.startswith(".")] == []
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote 0" not in out.stdout and "wrote 3" in out.stdout and "done" in out.stdout


def test_deleted_file_is_detected_and_only_it_is_remade(tmp_path, caplog):
    summary = runner(tmp_path).run(["numbers"])
    path = Path(summary["numbers"]["path"])
    original = (path / "n1.txt").read_text()
    (path / "n1.txt").unlink()
    CALLS.clear()
    again = runner(tmp_path).run(["numbers"])
    assert not again["numbers"]["reused"]
    assert CALLS["numbers_item"] == 1  # the intact files were kept, only n1 was made again
    assert "n1.txt is missing" in caplog.text and "redoes only what is missing" in caplog.text
    assert (path / "n1.txt").read_text() == original
    assert runner(tmp_path).run(["numbers"])["numbers"]["reused"]


@pytest.mark.parametrize("verify", ["hash", "size"])
def test_corrupted_file_is_detected_kept_aside_and_remade(tmp_path, caplog, verify):
    summary = runner(tmp_path, verify=verify).run(["total"])
    path = Path(summary["numbers"]["path"]) / "n0.txt"
    original = path.read_text()
    if verify == "hash":
        # Same size, different content: only a hash can tell.
        path.write_text(original[:-1] + ("1" if original[-1] != "1" else "2"))
        problem = "does not match its sha256"
    else:
        path.write_text(original + "0")
        problem = "bytes, the manifest says"
    damaged = path.read_text()
    CALLS.clear()
    again = runner(tmp_path, verify=verify).run(["total", "numbers"])
    assert problem in caplog.text
    assert CALLS["numbers"] == 1 and CALLS["numbers_item"] == 1
    assert path.read_text() == original
    kept = list(path.parent.parent.glob(".broken-*/n0.txt"))
    assert [p.read_text() for p in kept] == [damaged]  # nothing is thrown away
    assert again["total"]["reused"]  # total's own files are intact and its key is unchanged


def test_unreadable_manifest_sets_the_whole_result_aside(tmp_path, caplog):
    summary = runner(tmp_path).run(["numbers"])
    path = Path(summary["numbers"]["path"])
    (path / MANIFEST).write_text("{not json")
    CALLS.clear()
    runner(tmp_path).run(["numbers"])
    assert "unreadable" in caplog.text and CALLS["numbers_item"] == 4
    assert list(path.parent.glob(".broken-*/n0.txt"))


def test_upstream_damage_is_caught_when_a_downstream_step_needs_it(tmp_path, caplog):
    runner(tmp_path).run(["numbers"])
    key = runner(tmp_path).keys()["numbers"][0]
    (Store(tmp_path / "store").final_dir("numbers", key) / MANIFEST).write_text("{not json")
    CALLS.clear()
    summary = runner(tmp_path).run(["total"])
    assert "unreadable" in caplog.text
    assert CALLS["numbers"] == 1 and CALLS["total"] == 1
    assert summary["total"]["total"] == runner(tmp_path / "b").run(["total"])["total"]["total"]


def test_hand_edited_manifest_config_names_the_difference(tmp_path):
    summary = runner(tmp_path).run(["numbers"])
    manifest_path = Path(summary["numbers"]["path"]) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["numbers"]["count"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"numbers\.count: stored 99, now 4.*force=\[numbers\]"):
        runner(tmp_path).run(["numbers"])


def test_step_that_forgets_its_files_fails_and_commits_nothing(tmp_path):
    table = (Step("lazy", lambda ctx: {}, reads=("seed",), writes=("model.pt",)),)
    with pytest.raises(RuntimeError, match="without writing"):
        runner(tmp_path, table=table).run("all")
    assert summary_status(tmp_path) == "failed"
    assert not any(p for p in (tmp_path / "store" / "lazy").iterdir() if p.name[0] != ".")


def summary_status(tmp_path: Path) -> str:
    return json.loads((tmp_path / "run" / "summary.json").read_text())["run"]["status"]


def test_config_slice_is_typed_at_the_step_boundary(tmp_path):
    cfg = config(**{"numbers.count": "many"})
    with pytest.raises(ConfigError, match="numbers.count: .*many"):
        runner(tmp_path, cfg).run(["numbers"])


def test_two_processes_wanting_one_step_make_one_result(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(textwrap.dedent(f"""
        import time, torch
        from omegaconf import OmegaConf
        from worldmodel.hardware import Hardware
        from worldmodel.runner import Runner, Step
        from worldmodel.store import Store

        def slow(ctx):
            time.sleep(1.5)
            (ctx.dir / "out.txt").write_text(str(time.time()))
            return {{}}

        table = (Step("slow", slow, reads=("seed",), writes=("out.txt",)),)
        hw = Hardware(device=torch.device("cpu"), workers=1, threads=1)
        root = {str(tmp_path)!r}
        import sys
        run_dir = root + "/run" + sys.argv[1]
        s = Runner(table, OmegaConf.create({{"seed": 0}}), hw, Store(root + "/store"),
                   run_dir).run("all")
        print("REUSED" if s["slow"]["reused"] else "COMPUTED")
    """))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    procs = [subprocess.Popen([sys.executable, str(script), str(i)], stdout=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    outputs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outputs == ["COMPUTED", "REUSED"]
    finished = [p for p in (tmp_path / "store" / "slow").iterdir() if not p.name.startswith(".")]
    assert len(finished) == 1


def test_step_sees_only_its_slice(tmp_path):
    seen = {}

    def peek(ctx):
        seen.update(ctx.config)
        (ctx.dir / "x").write_text("x")

    table = (Step("peek", peek, reads=("scale",), writes=("x",)),)
    runner(tmp_path, table=table).run("all")
    assert seen == {"scale": {"k": 2}}


def test_not_in_identity_keys_reach_the_step_but_not_the_key(tmp_path):
    seen = []

    def peek(ctx):
        seen.append(ctx.config["side"]["x"])
        (ctx.dir / "x").write_text("x")

    table = (Step("peek", peek, reads=("side",), writes=("x",), not_in_identity=("side.x",)),)
    first = runner(tmp_path, table=table).run("all")["peek"]["key"]
    second = runner(tmp_path, config(**{"side.x": 7}), table=table).run("all")
    assert second["peek"]["key"] == first and second["peek"]["reused"]
    assert seen == [1]


def test_staged_result_is_invisible_until_committed(tmp_path):
    """While a step runs, only its staging directory exists."""
    observed = {}

    def look(ctx):
        key_dirs = [p.name for p in ctx.dir.parent.iterdir() if not p.name.startswith(".")]
        observed["finished_while_running"] = key_dirs
        observed["staging"] = ctx.dir.name
        (ctx.dir / "x").write_text("x")
        time.sleep(0.01)

    table = (Step("look", look, reads=("seed",), writes=("x",)),)
    runner(tmp_path, table=table).run("all")
    assert observed["finished_while_running"] == []
    assert observed["staging"].startswith(".staging-")
