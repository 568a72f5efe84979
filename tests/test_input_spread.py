"""scripts/input_spread.py: the spread of C's inputs over a run's episodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_summarize import load_script
from worldmodel.latents import Latents, latent_path, save_latents
from worldmodel.models import MDRNN, checkpoint

STEPS = (7, 5)


def fake_run(tmp_path):
    """A run directory whose summary names an encode result of two episodes and an M."""
    rng = np.random.default_rng(0)
    encode, mdrnn_dir, run = tmp_path / "encode", tmp_path / "mdrnn", tmp_path / "run"
    for d in (encode / "latents", mdrnn_dir, run):
        d.mkdir(parents=True)
    episodes = []
    for i, steps in enumerate(STEPS):
        latents = Latents(mu=rng.normal(size=(steps + 1, 4)).astype(np.float16),
                          logvar=np.zeros((steps + 1, 4), np.float16),
                          actions=rng.uniform(-1, 1, size=(steps, 3)).astype(np.float32),
                          rewards=np.zeros(steps, np.float32), terminated=False, truncated=True)
        save_latents(latent_path(encode / "latents", i), latents)
        episodes.append(latents)
    mdrnn = MDRNN(z_dim=4, hidden_size=6)
    torch.save(checkpoint(mdrnn), mdrnn_dir / "model.pt")
    (run / "summary.json").write_text(json.dumps({"encode": {"path": str(encode)},
                                                  "mdrnn": {"path": str(mdrnn_dir)}}))
    return run, episodes, mdrnn


def test_spreads_are_those_of_z_and_h_as_the_agent_reads_them(tmp_path, capsys):
    run, episodes, mdrnn = fake_run(tmp_path)
    out = tmp_path / "spread.json"
    assert load_script("input_spread").main([str(run), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["episodes"] == 2 and result["steps"] == sum(STEPS)
    # h step by step, as the agent in the real game advances M (worldmodel/rollout.py)
    zs, hs = [], []
    for latents in episodes:
        state = mdrnn.initial_state(1)
        for t in range(latents.steps):
            z = torch.as_tensor(latents.mu[t:t + 1].astype(np.float32))
            zs.append(z[0].numpy())
            hs.append(state[0][0, 0].detach().numpy().copy())
            with torch.no_grad():
                state = mdrnn.advance(z, torch.as_tensor(latents.actions[t:t + 1]), state)
    for name, values in (("z", np.array(zs)), ("h", np.array(hs))):
        std = values.std(axis=0)
        got = result[name]["std_quantiles"]
        assert result[name]["dims"] == values.shape[1]
        assert got["q0"] == pytest.approx(std.min(), rel=1e-5)
        assert got["q100"] == pytest.approx(std.max(), rel=1e-5)
        assert got["q50"] == pytest.approx(float(np.median(std)), rel=1e-5)
    assert "z (4 dims)" in capsys.readouterr().out


def test_a_run_without_m_says_what_to_run(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"steps=\[mdrnn\]"):
        load_script("input_spread").main([str(tmp_path)])
