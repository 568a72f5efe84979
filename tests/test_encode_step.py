"""The encode step, run through a real Runner after the vae step on synthetic episodes.

Covers: the latents match the episodes frame for frame (V's encoder on the same frames, the
same actions, rewards and done flags) and the index counts them; a killed encode resumes,
keeping the finished files and redoing a damaged one; a VAE of another z size is refused with
a clear error rather than a shape crash.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_vae_step import config, load_model, runner
from worldmodel import durable
from worldmodel.episodes import load_episode
from worldmodel.hardware import Hardware
from worldmodel.latents import DamagedLatents, load_latents
from worldmodel.models import VAE, CheckpointMismatchError, checkpoint, frames_to_tensor
from worldmodel.runner import StepContext
from worldmodel.steps import encode
from worldmodel.store import Artifact


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict:
    return runner(tmp_path_factory.mktemp("encode"), config(**{"vae.epochs": 1})).run("all")


def test_latents_match_the_episodes_frame_for_frame(encoded):
    episodes = sorted((Path(encoded["collect"]["path"]) / "episodes").glob("ep_*.npz"))
    latents_dir = Path(encoded["encode"]["path"]) / "latents"
    assert [p.name for p in sorted(latents_dir.iterdir())] == [p.name for p in episodes]
    model = load_model(Path(encoded["vae"]["path"]) / "model.pt").eval()
    for path in episodes:
        episode = load_episode(path)
        latents = load_latents(latents_dir / path.name, z_dim=8)
        assert latents.mu.shape == latents.logvar.shape == (len(episode.frames), 8)
        assert latents.mu.dtype == np.float16
        with torch.inference_mode():
            mu, logvar = model.encode(frames_to_tensor(episode.frames))
        np.testing.assert_allclose(latents.mu, mu.numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(latents.logvar, logvar.numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(latents.actions, episode.actions)
        np.testing.assert_array_equal(latents.rewards, episode.rewards)
        assert (latents.terminated, latents.truncated) == (episode.terminated, episode.truncated)


def test_index_counts_episodes_frames_and_bytes(encoded):
    path = Path(encoded["encode"]["path"])
    index = json.loads((path / "latents.json").read_text())
    files = sorted((path / "latents").iterdir())
    frames = sum(40 + 3 * i for i in range(4))
    assert index["episodes"] == len(files) == 4 and index["frames"] == frames
    assert index["bytes"] == sum(f.stat().st_size for f in files)
    assert index["frames_bytes"] == frames * 64 * 64 * 3 > 10 * index["bytes"]
    assert index["z_dim"] == 8 and index["dtype"] == "float16"
    assert encoded["encode"]["frames"] == frames


def test_killed_encode_resumes_and_redoes_a_damaged_file(encoded, tmp_path, monkeypatch, caplog):
    save, saved = encode.save_latents, []

    def interrupt_after_two(path, latents):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(path.name)
        return save(path, latents)

    monkeypatch.setattr(encode, "save_latents", interrupt_after_two)
    cfg = config(**{"vae.epochs": 1})
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path, cfg).run("all")
    [staging] = (tmp_path / "store" / "encode").glob(".staging-*")
    assert sorted(p.name for p in (staging / "latents").iterdir()) == saved
    damaged = staging / "latents" / saved[0]
    damaged.write_bytes(damaged.read_bytes()[:100])  # as a file cut short by a full disk
    # and a write cut short:
    durable.tmp_path(staging / "latents" / "ep_000003.npz").write_bytes(b"half")

    def record(path, latents):
        saved.append(path.name)
        return save(path, latents)

    saved.clear()
    monkeypatch.setattr(encode, "save_latents", record)
    resumed = runner(tmp_path, cfg).run("all")
    assert sorted(saved) == sorted([damaged.name, "ep_000002.npz", "ep_000003.npz"])
    assert "encoding it again" in caplog.text
    ours = Path(resumed["encode"]["path"]) / "latents"
    assert not list(ours.glob(".tmp-*"))
    reference = Path(encoded["encode"]["path"]) / "latents"
    for path in sorted(reference.iterdir()):
        a, b = load_latents(path), load_latents(ours / path.name)
        assert np.array_equal(a.mu, b.mu) and np.array_equal(a.logvar, b.logvar)


def test_a_vae_of_another_z_size_is_refused_clearly(encoded, tmp_path):
    vae_dir = tmp_path / "vae"
    vae_dir.mkdir()
    torch.save(checkpoint(VAE(z_dim=4)), vae_dir / "model.pt")
    collect = Path(encoded["collect"]["path"])
    ctx = StepContext(
        name="encode",
        config=encode.EncodeConfig(vae={"z_dim": 8}),
        dir=tmp_path / "encode",
        inputs={"collect": Artifact("collect", "k1", collect, {}),
                "vae": Artifact("vae", "k2", vae_dir, {})},
        hardware=Hardware(device=torch.device("cpu"), workers=1, threads=1),
        seed=0,
        log=logging.getLogger("test"),
    )
    ctx.dir.mkdir()
    with pytest.raises(CheckpointMismatchError, match=r"z_dim=4 but the config asks for z_dim=8"):
        encode.run(ctx)
    assert not list(ctx.dir.rglob("*.npz"))


def test_latent_files_are_validated_on_load(encoded, tmp_path):
    path = next((Path(encoded["encode"]["path"]) / "latents").iterdir())
    with pytest.raises(DamagedLatents, match="z_dim 8, expected 32"):
        load_latents(path, z_dim=32)
    cut = tmp_path / path.name
    cut.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DamagedLatents, match="damaged"):
        load_latents(cut)
