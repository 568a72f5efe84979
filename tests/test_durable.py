"""Durable files, the store's lock and killed runs: worldmodel/durable.py, store.py, runner.py."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from worldmodel import durable
from worldmodel.runner import mark_killed_runs
from worldmodel.store import Store, read_holder


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "data.json"
    durable.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), durable.atomic_write(path, "w") as f:
        f.write('{"a": 2, "half')
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".tmp-*"))  # and no temporary file is left behind


def test_leftover_temporary_files_are_found_and_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    durable.tmp_path(tmp_path / "sub" / "ep_000001.npz").write_bytes(b"half")
    (tmp_path / "ep_000002.npz").write_bytes(b"kept")
    assert [p.name for p in tmp_path.rglob("ep_*.npz")] == ["ep_000002.npz"]  # globs miss it
    assert durable.remove_leftovers(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["ep_000002.npz"]


def test_a_torn_last_line_is_dropped_and_the_next_append_starts_clean(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    durable.append_jsonl(path, {"epoch": 1, "loss": 2.0})
    with open(path, "a") as f:
        f.write('{"epoch": 2, "lo')  # a write a power cut or a full disk cut short
    with caplog.at_level(logging.WARNING):
        assert durable.read_jsonl(path) == [{"epoch": 1, "loss": 2.0}]
    assert "torn" in caplog.text
    durable.append_jsonl(path, {"epoch": 2, "loss": 1.5})
    assert durable.read_jsonl(path) == [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}]
    assert path.read_text().count("\n") == 2


def test_a_damaged_line_in_the_middle_keeps_only_the_rows_before_it(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, oops\n{"epoch": 3}\n')
    with caplog.at_level(logging.WARNING):
        assert durable.read_jsonl(path) == [{"epoch": 1}]
    assert "line 2 of 3 is damaged" in caplog.text


def test_arrays_are_crc_checked_on_load(tmp_path):
    path = tmp_path / "ep_000000.npz"
    frames = np.random.default_rng(0).integers(0, 255, (20, 64, 64, 3), dtype=np.uint8)
    durable.save_arrays(path, {"frames": frames, "rewards": np.zeros(19)}, compress=False)
    assert np.array_equal(durable.load_arrays(path, ("frames",), "episode file")["frames"],
                          frames)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the frames: the zip directory is intact
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert "frames.npy" in archive.namelist()
    with pytest.raises(durable.DamagedFile, match="episode file .* is damaged.*CRC"):
        durable.load_arrays(path, ("frames", "rewards"), "episode file")
    with pytest.raises(durable.DamagedFile, match="lacks"):
        durable.load_arrays(path, ("actions",), "episode file")


HOLD = """
import sys, time
from worldmodel.store import Store
with Store(sys.argv[1]).lock("vae", "abc"):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_run_waiting_on_a_lock_says_who_holds_it_every_interval(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "2.5"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    seen = []
    started = time.monotonic()
    with Store(tmp_path).lock("vae", "abc", on_wait=seen.append, every=0.5):
        waited = time.monotonic() - started
        # Now ours: the lock file names this process.
        assert read_holder(tmp_path / "vae" / ".lock-abc")["pid"] == os.getpid()
    holder.wait()
    assert 1.5 < waited < 10
    assert len(seen) >= 3  # at once, then every half second
    assert all(h["pid"] == holder.pid and h["step"] == "vae" and h["key"] == "abc"
               and h["host"] == socket.gethostname() for h in seen)


def test_a_lock_of_a_killed_process_is_free_again(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "60"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    holder.kill()
    holder.wait()
    got = threading.Event()
    with Store(tmp_path).lock("vae", "abc"):
        got.set()
    assert got.is_set()


def write_summary(run_dir, status, pid, host=None, computing=None):
    run_dir.mkdir(parents=True)
    record = {"status": status, "pid": pid, "host": host or socket.gethostname()}
    if computing:
        record["computing"] = computing
    (run_dir / "summary.json").write_text(json.dumps({"run": record}))


def test_runs_whose_process_is_gone_are_marked_killed(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_summary(tmp_path / "runs" / "a", "running", gone.pid, computing="controller")
    write_summary(tmp_path / "multiruns" / "b" / "0", "running", gone.pid)
    write_summary(tmp_path / "runs" / "alive", "running", os.getpid())
    write_summary(tmp_path / "runs" / "done", "complete", gone.pid)
    write_summary(tmp_path / "runs" / "elsewhere", "running", gone.pid, host="another-host")
    current = tmp_path / "runs" / "now"
    write_summary(current, "running", gone.pid)
    with caplog.at_level(logging.WARNING):
        killed = mark_killed_runs(tmp_path, current)
    assert sorted(p.name for p in killed) == ["0", "a"]
    assert json.loads((tmp_path / "runs" / "a" / "summary.json").read_text())["run"][
        "status"] == "killed"
    assert "was killed while computing controller" in caplog.text
    for name in ("alive", "elsewhere", "now"):
        assert json.loads((tmp_path / "runs" / name / "summary.json").read_text())["run"][
            "status"] == "running"
    assert mark_killed_runs(tmp_path, current) == []  # said once


def test_a_training_checkpoint_that_cannot_be_read_is_set_aside_and_training_restarts(
        tmp_path, caplog):
    import torch

    from worldmodel.models import VAE
    from worldmodel.training import resume

    step = tmp_path / ".staging-abc"
    step.mkdir()
    (step / "checkpoint.pt").write_bytes(b"half a checkpoint")
    (step / "metrics.jsonl").write_text('{"epoch": 1, "vae/loss": 3.0}\n')
    made = []

    def make():
        model = VAE(z_dim=4)
        made.append(model)
        return model, torch.optim.Adam(model.parameters())

    with caplog.at_level(logging.WARNING):
        model, _, done, rows = resume(step, "checkpoint.pt", make, torch.device("cpu"),
                                      logging.getLogger("test"))
    assert (done, rows) == (0, []) and model is made[-1]
    assert "training from the start" in caplog.text
    assert (step / "metrics.jsonl").read_text() == ""  # its rows came from the lost epochs
    assert not (step / "checkpoint.pt").exists()  # out of the result, kept beside it
    assert [p.name.startswith(".damaged-.staging-abc-checkpoint.pt-")
            for p in tmp_path.iterdir() if p != step] == [True]
