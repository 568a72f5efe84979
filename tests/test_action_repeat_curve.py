"""scripts/action_repeat_curve.py: a miniature search per action repeat, scored every 5 gens."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_summarize import load_script
from worldmodel.models import MDRNN, VAE, checkpoint


@pytest.mark.slow  # about 20 s of real driving, for a script
def test_a_curve_per_repeat_with_the_same_tracks(tmp_path, capsys):
    for step, model in (("vae", VAE(z_dim=32)), ("mdrnn", MDRNN(z_dim=32, hidden_size=256))):
        (tmp_path / step / "key").mkdir(parents=True)
        torch.save(checkpoint(model), tmp_path / step / "key" / "model.pt")
    script = load_script("action_repeat_curve")
    out = tmp_path / "curve.json"
    assert script.main([str(tmp_path), "--repeats", "1", "3", "--generations", "5",
                        "--population", "4", "--early-stop", "10", "--score-episodes", "1",
                        "--workers", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["repeat"], r["generation"]) for r in rows] == [
        (repeat, g) for repeat in (1, 3) for g in range(1, 6)]
    assert all("es_mean_score" in r for r in rows if r["generation"] == 5)
    assert all(r["frames"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "| action_repeat | gen 5: score (s) |" in printed
    assert printed.count("\n| 1 | ") == 1 and printed.count("\n| 3 | ") == 1


def test_a_store_without_models_says_what_to_run(tmp_path):
    script = load_script("action_repeat_curve")
    with pytest.raises(SystemExit, match=r"steps=\[vae\]"):
        script.main([str(tmp_path)])
