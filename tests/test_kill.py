"""Real kills: `worldmodel` on tiny data as a subprocess, SIGKILLed inside a step, run again.

An uninterrupted run of the same config is the reference; the moment of the kill is drawn at
random within the step's reference duration (its seed is printed, to replay a failure). A
killed run must leave no worker process behind, the next run must log that the earlier one was
killed, and the resumed result must equal the reference file for file: byte for byte, except
for the timings a run logs (metrics' time and seconds, the manifest) and the pickled search
state that carries them. Under `-m slow`: the reference alone is a whole tiny chain (39 s of
fixture setup on an idle 2-core machine, all five tests 148 s).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, compose_config, make_runner, run_cli
from worldmodel import pipeline
from worldmodel.store import MANIFEST

TINY = ("data=tiny", "hardware=cpu", "hardware.workers=2", "controller.max_steps=60",
        "controller.generations=3", "env.max_steps=200")
DREAM = ("controller=dream", "controller.dream_horizon=20")
TIMING = ("time", "seconds", "_per_s")
# Files whose bytes hold wall-clock times (or a digest of such a file): compared without them.
TIMED_FILES = {"manifest.json", "metrics.jsonl", "controller.json"}
STATE_FILES = {"es_state.pkl", "es_state.json"}  # the state's rows hold times too


def outputs_args(root: Path, *extra: str) -> list[str]:
    return [*TINY, *extra, f"paths.outputs={root}"]


def finish(root: Path, *extra: str) -> Path:
    done = run_cli(*outputs_args(root, *extra), timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The whole chain in real mode, never interrupted."""
    return finish(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def dream_reference(reference, tmp_path_factory) -> Path:
    """The same store with the dream-mode controller and its evaluation added."""
    root = tmp_path_factory.mktemp("dream_reference")
    shutil.copytree(reference / "store", root / "store")
    return finish(root, *DREAM)


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items()
                if not any(t in k for t in TIMING)}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def comparable(path: Path):
    if path.name not in TIMED_FILES:
        return path.read_bytes()
    if path.suffix == ".jsonl":
        return [without_timing(json.loads(line)) for line in path.read_text().splitlines()]
    return without_timing({k: v for k, v in json.loads(path.read_text()).items()
                           if k not in ("started", "hardware", "versions", "git_commit")})


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_inside(step: str, args: list[str], root: Path, after_s: float) -> None:
    """Start `worldmodel ARGS`; SIGKILL it `after_s` seconds after `step` starts working."""
    process = subprocess.Popen([sys.executable, "-m", "worldmodel", *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = root / "store" / step
    deadline = time.monotonic() + 300
    while not (store.is_dir() and any(store.glob(".staging-*"))):
        assert process.poll() is None, f"the run ended before {step} started"
        assert time.monotonic() < deadline, f"{step} never started"
        time.sleep(0.05)
    time.sleep(after_s)
    below = descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Its workers (and their forkserver) follow it within seconds, not hours.
    end = time.monotonic() + 15
    while any(alive(pid) for pid in below) and time.monotonic() < end:
        time.sleep(0.2)
    left = [pid for pid in below if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes {left} outlived the killed run"


def kill_and_resume(tmp_path: Path, reference: Path, step: str, extra: tuple[str, ...],
                    rng: random.Random, iterations: int = 1) -> None:
    """Copy the reference store without `step`, kill a run inside `step`, run again,
    compare the resumed result with the reference."""
    root = tmp_path / step
    shutil.copytree(reference / "store", root / "store")
    args = outputs_args(root, *extra, f"iterations={iterations}", f"steps=[{step}]")
    table = pipeline.table(iterations)
    key = make_runner(table, compose_config(args), root).keys()[step][0]
    wanted = reference / "store" / step / key
    shutil.rmtree(root / "store" / step / key)
    seconds = json.loads((wanted / MANIFEST).read_text())["seconds"]
    after = rng.uniform(0.0, 0.8 * seconds)
    kill_inside(step, args, root, after)
    again = run_cli(*args, timeout=600)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert "was killed" in log, log[-3000:]
    resumed = root / "store" / step / key
    files = json.loads((wanted / MANIFEST).read_text())["files"]
    assert sorted(json.loads((resumed / MANIFEST).read_text())["files"]) == sorted(files)
    for rel in sorted(files):
        if Path(rel).name in STATE_FILES:
            continue
        assert comparable(resumed / rel) == comparable(wanted / rel), \
            f"{step}/{rel} differs after a kill {after:.2f} s into the step"


@pytest.mark.slow
def test_a_controller_killed_at_a_random_moment_resumes_to_the_same_files(tmp_path, reference):
    seed = random.randrange(1 << 30)
    print(f"kill moment seed: {seed}")
    kill_and_resume(tmp_path, reference, "controller", (), random.Random(seed))


@pytest.mark.slow
@pytest.mark.parametrize("step, extra", [("vae", ()), ("mdrnn", ()), ("controller", DREAM),
                                         ("evaluate", ())])
def test_every_step_killed_at_a_random_moment_resumes_to_the_same_files(tmp_path, request,
                                                                         step, extra):
    seed = random.randrange(1 << 30)
    print(f"kill moment seed: {seed}")
    store = request.getfixturevalue("dream_reference" if extra else "reference")
    kill_and_resume(tmp_path, store, step, extra, random.Random(seed))
