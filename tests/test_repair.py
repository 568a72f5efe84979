"""Damaged results are remade: the real pipeline on tiny data, files damaged, run again.

One whole tiny chain is run once (module fixture). Each test works on a copy of its store,
damages files of finished results (cut short, a flipped byte, deleted), runs the same config
again and checks that the run completes, that every damaged file is back, and that it is
byte-identical to the original, except for the timings that a recomputation logs anew.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import compose_config, make_runner
from worldmodel import layout, pipeline
from worldmodel.store import MANIFEST

TINY = ["data=tiny", "hardware=cpu", "controller.max_steps=60", "evaluate.episodes=2",
        "env.max_steps=200"]
TIMING = ("time", "seconds", "_per_s")  # row keys that a recomputation cannot reproduce
# The controller's search state: its metrics rows hold times, so a search run again pickles
# other bytes; what it decides (controller.pt, es_mean.pt) is compared byte for byte.
STATE_FILES = {layout.CONTROLLER.STATE, layout.CONTROLLER.STATE_INFO}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    make_runner(pipeline.STEPS, compose_config(TINY), root).run()
    return root


def results(root: Path) -> dict[str, Path]:
    """Each step's finished result directory in root's store."""
    found = {}
    for step in pipeline.STEPS:
        [final] = [p for p in (root / "store" / step.name).iterdir()
                   if (p / MANIFEST).is_file()]
        found[step.name] = final
    return found


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "cut":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    else:
        path.unlink()


DURATION = re.compile(r"\d+(\.\d+)? (s|min|h)\b")


def untimed(path: Path) -> object:
    """A file's content without the timings it logs: JSON lines minus timing keys; a report
    without its lines that show durations or speeds (an upstream step that computed again
    took another time)."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)}
                for row in rows]
    if path.name == layout.CONTROLLER.SUMMARY:  # its search_seconds
        return {k: v for k, v in json.loads(path.read_text()).items()
                if not any(t in k for t in TIMING)}
    if path.suffix == ".md":  # and which commit computed each step, also provenance
        return [line for line in path.read_text().splitlines()
                if not DURATION.search(line) and not any(t in line for t in TIMING)
                and "commit" not in line]
    return path.read_bytes()


def listed_files(root: Path) -> dict[tuple[str, str], Path]:
    """Every file of every finished result, as its manifest lists it."""
    return {(step, rel): path / rel for step, path in results(root).items()
            for rel in json.loads((path / MANIFEST).read_text())["files"]}


def rerun_after_damage(tmp_path: Path, finished: Path, targets: dict[str, list[str]],
                       how: str, caplog) -> None:
    """Copy the store, damage `targets` ({step: [file]}), run again, and compare every file
    of every result with what it was before."""
    root = tmp_path / "run"
    shutil.copytree(finished / "store", root / "store")
    before = results(root)
    originals = {where: (path.read_bytes(), untimed(path))
                 for where, path in listed_files(root).items()}
    for step, rels in targets.items():
        for rel in rels:
            damage(before[step] / rel, how)
    with caplog.at_level(logging.WARNING, logger="worldmodel"):
        summary = make_runner(pipeline.STEPS, compose_config(TINY), root).run()
    assert summary["run"]["status"] == "complete"
    assert {step: path.name for step, path in results(root).items()} == \
        {step: path.name for step, path in before.items()}, "a key changed"
    remade = listed_files(root)
    assert sorted(remade) == sorted(originals)
    for (step, rel), path in remade.items():
        original, original_untimed = originals[(step, rel)]
        if Path(rel).name in STATE_FILES or path.read_bytes() == original:
            continue
        # Only a file of a step that computed again (it could not remake the damaged file
        # alone) may differ, and then only in the timings it logs.
        assert untimed(path) == original_untimed, f"{step}/{rel} differs"
    for step in targets:
        assert any(f"[{step}] stored result failed its check" in r.message
                   for r in caplog.records), step


# The files that used to trap a repair (a step skipped its work and then failed on the file),
# and one data file of each step that streams many.
TRAPS = {
    "collect": ["episodes/ep_000001.npz", "dataset.json"],
    "vae": ["metrics.jsonl"],
    "encode": ["latents/ep_000002.npz"],
    "mdrnn": ["split.json"],
    "controller": ["controller.json", "es_mean.pt"],
    "evaluate": ["worst_episode.gif"],
    "figures": ["report.md"],
}


@pytest.mark.slow  # about 65 s: the default suite keeps to its 10-minute budget
def test_files_that_used_to_trap_a_repair_are_remade(tmp_path, finished, caplog):
    rerun_after_damage(tmp_path, finished, TRAPS, "cut", caplog)


def every_file_in_turn(finished: Path) -> list[dict[str, list[str]]]:
    """Rounds of damage: round i damages the i-th file of every step at once (a remade file
    keeps its step's key, so each step repairs its own in the same run)."""
    listed = {step: sorted(json.loads((path / MANIFEST).read_text())["files"])
              for step, path in results(finished).items()}
    rounds = max(len(files) for files in listed.values())
    return [{step: [files[i]] for step, files in listed.items() if i < len(files)}
            for i in range(rounds)]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cut", "flip", "delete"])
def test_every_file_of_every_result_damaged_in_turn_is_remade(tmp_path, finished, caplog, how):
    for number, targets in enumerate(every_file_in_turn(finished)):
        caplog.clear()
        rerun_after_damage(tmp_path / str(number), finished, targets, how, caplog)
