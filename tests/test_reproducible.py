"""Bit-identical training: the same V and M from two separate processes on one machine.

What README "Reproducibility" promises: on the same CPU model, package versions and thread
count, a step's result is the same bit for bit. Two `worldmodel` processes train V and M at
the paper's model size (V: 64x64x3 -> 32 floats; M: LSTM 256, 5 Gaussians) on one shared
collection, each in its own store, and every tensor of both checkpoints must be equal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from worldmodel.models.mdrnn import MDRNN
from worldmodel.models.vae import VAE
from worldmodel.rollout import load_model

SMALL_DATA = ["hardware=cpu", "hardware.threads=2", "data=tiny", "collect.episodes=6",
              "collect.max_steps=200", "vae.epochs=2", "mdrnn.epochs=3"]


MODELS = {"vae": VAE, "mdrnn": MDRNN}


def model_tensors(store: Path, step: str) -> dict[str, torch.Tensor]:
    [path] = (store / step).glob("*/model.pt")
    return load_model(MODELS[step], path, step).state_dict()


@pytest.mark.slow
def test_two_processes_train_bit_identical_v_and_m(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    collected = run_cli(*SMALL_DATA, "steps=[collect]", f"paths.outputs={first}", timeout=900)
    assert collected.returncode == 0, collected.stderr
    # The same collection in both stores: the processes differ only in what they train.
    shutil.copytree(first / "store" / "collect", second / "store" / "collect")
    for outputs in (first, second):
        done = run_cli(*SMALL_DATA, "steps=[mdrnn]", f"paths.outputs={outputs}", timeout=1800)
        assert done.returncode == 0, done.stderr
        last_run = sorted((outputs / "runs").glob("*/summary.json"))[-1]
        summary = json.loads(last_run.read_text())
        assert summary["vae"]["reused"] is False and summary["mdrnn"]["reused"] is False
    for step in ("vae", "mdrnn"):
        a = model_tensors(first / "store", step)
        b = model_tensors(second / "store", step)
        assert a.keys() == b.keys() and len(a) > 4
        different = [name for name in a if not torch.equal(a[name], b[name])]
        assert different == [], f"{step}: tensors differ between the processes: {different}"
    # The paper's sizes: 32 latents, an LSTM of 256 units, 5 Gaussians per latent.
    v, m = model_tensors(first / "store", "vae"), model_tensors(first / "store", "mdrnn")
    [mu] = [t for n, t in v.items() if n.endswith("to_mu.weight")]
    [lstm] = [t for n, t in m.items() if n.endswith("lstm.weight_hh_l0")]
    [head] = [t for n, t in m.items() if n.endswith("mixture_head.weight")]
    assert mu.shape[0] == 32 and lstm.shape == (4 * 256, 256) and head.shape[0] == 3 * 32 * 5
