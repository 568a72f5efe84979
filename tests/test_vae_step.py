"""The vae step, run through a real Runner on small synthetic episodes (no CarRacing needed).

Covers: a short training lowers the loss and writes model, checkpoint, metrics and figures;
the figures can be redrawn from the stored files alone; batches from memory and from disk are
the same; the validation split; resume after an interrupt ends with the same weights as an
uninterrupted run; a NaN loss stops with a clear error and keeps the last good checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_config, make_runner
from worldmodel import pipeline
from worldmodel.config import config_slice, typed
from worldmodel.episodes import Episode, episode_path, save_episode
from worldmodel.figures import vae as vae_figures
from worldmodel.models import VAE, build_from_checkpoint
from worldmodel.runner import Runner, Step, StepContext
from worldmodel.steps import encode
from worldmodel.steps import vae as vae_step

# --- a synthetic collect step and a small pipeline, shared with test_encode_step.py -----------


def synthetic_episode(rng: np.random.Generator, steps: int) -> Episode:
    """A winding grey road on green grass, a red car and a blue ball rolling across: frames
    with structure a VAE can learn in a few gradient steps, different for every episode."""
    t = np.arange(steps + 1)[:, None, None]
    y, x = np.mgrid[0:64, 0:64]
    phase, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.3)
    road_centre = 32 + 12 * np.sin(phase + speed * t + y / 20.0)
    frames = np.empty((steps + 1, 64, 64, 3), dtype=np.uint8)
    frames[:] = (90, 200, 90)
    frames[np.broadcast_to(np.abs(x - road_centre) < 12, frames.shape[:3])] = (110, 110, 110)
    frames[:, 44:52, 29:35] = (210, 30, 30)
    ball_x = (rng.uniform(0, 64) + 2.0 * t) % 64
    ball = (x - ball_x) ** 2 + (y - 16) ** 2 < 25
    frames[ball] = (40, 60, 220)
    return Episode(
        frames=frames,
        actions=rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
        rewards=rng.normal(size=steps).astype(np.float32),
        terminated=bool(rng.integers(2)),
        truncated=False,
        lap_finished=False,
    )


@dataclass
class SynthParams:
    episodes: int = 4
    steps: int = 39


@dataclass
class SynthConfig:
    seed: int
    synth: SynthParams


def make_episodes(ctx: StepContext) -> dict:
    directory = ctx.dir / "episodes"
    directory.mkdir(exist_ok=True)
    params = ctx.config.synth
    for i in range(params.episodes):
        # Lengths differ a little, so batches cross episode boundaries unevenly.
        save_episode(episode_path(directory, i),
                     synthetic_episode(ctx.rng("episode", i), params.steps + 3 * i))
    return {"episodes": params.episodes}


# pipeline.py's own vae and encode rows, behind a synthetic collect step.
TABLE = (
    Step("collect", make_episodes, reads=("seed", "synth"), config=SynthConfig,
         writes=("episodes/ep_*.npz",)),
    *(step for step in pipeline.STEPS if step.name in ("vae", "encode")),
)


def config(**changes):
    cfg = OmegaConf.create({
        "seed": 0,
        "synth": {"episodes": 4, "steps": 39},
        "vae": {"z_dim": 8, "kl_tolerance": 0.5, "learning_rate": 1e-3, "batch_size": 16,
                "epochs": 2, "frame_stride": 1, "skip_frames": 0, "val_fraction": 0.25,
                "shuffle_window": 2, "in_memory_gb": 4.0},
        "encode": {"batch_size": 32},
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def runner(root: Path, cfg=None) -> Runner:
    return make_runner(TABLE, cfg if cfg is not None else config(), root)


def load_model(path: Path) -> VAE:
    return build_from_checkpoint(VAE, torch.load(path, weights_only=True))


# --- tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    return runner(tmp_path_factory.mktemp("vae"), config(**{"vae.epochs": 3})).run(["vae"])


def test_training_lowers_the_loss_and_writes_its_files(trained):
    path = Path(trained["vae"]["path"])
    for name in TABLE[1].writes:
        assert (path / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[-1]["vae/loss"] < rows[0]["vae/loss"]
    assert rows[-1]["vae/val_loss"] < rows[0]["vae/val_loss"]
    assert all(row["vae/frames_per_s"] > 0 for row in rows)
    split = json.loads((path / "split.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 3
    assert not set(split["val"]) & set(split["train"])
    summary = trained["vae"]
    assert summary["train_frames"] + summary["val_frames"] == sum(40 + 3 * i for i in range(4))
    assert summary["loss"] == rows[-1]["vae/loss"] and summary["epochs"] == 3
    assert load_model(path / "model.pt").z_dim == 8
    assert not (path / "checkpoint.pt").exists()  # it only served to resume


def test_figures_are_redrawn_from_stored_files_alone(trained, tmp_path):
    from matplotlib.image import imread

    path = Path(trained["vae"]["path"])
    episodes = Path(trained["collect"]["path"]) / "episodes"
    made = vae_figures.make_figures(path, [episodes], tmp_path)
    assert [p.name for p in made] == ["reconstructions.png", "losses.png"]
    for figure in made:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert np.array_equal(imread(figure), imread(path / figure.name))


def test_memory_and_disk_yield_the_same_batches(tmp_path):
    rng = np.random.default_rng(0)
    paths = [episode_path(tmp_path, i) for i in range(5)]
    for i, path in enumerate(paths):
        save_episode(path, synthetic_episode(rng, 20 + 7 * i))
    skip, stride = 3, 2
    counts = [vae_step.selected_count(21 + 7 * i, skip, stride) for i in range(5)]
    memory = vae_step.FrameSource(paths, counts, skip, stride, in_memory=True)
    disk = vae_step.FrameSource(paths, counts, skip, stride, in_memory=False)
    ids = [0, 2, 3, 4]

    def all_batches(source, seed):
        return list(vae_step.batches(source, ids, 8, 2, np.random.default_rng(seed)))

    from_memory, from_disk = all_batches(memory, 1), all_batches(disk, 1)
    assert len(from_memory) == len(from_disk)
    for a, b in zip(from_memory, from_disk, strict=True):
        assert a.dtype == np.uint8 and np.array_equal(a, b)
    # Every selected frame once; only the last batch is short.
    assert [len(b) for b in from_memory[:-1]] == [8] * (len(from_memory) - 1)
    in_order = np.concatenate(list(vae_step.batches(memory, ids, 8, 2)))
    expected = np.concatenate([memory.load(i) for i in ids])
    assert np.array_equal(in_order, expected)
    shuffled = np.concatenate(from_memory)
    assert len(shuffled) == sum(counts[i] for i in ids)
    assert sorted(map(bytes, shuffled)) == sorted(map(bytes, expected))
    assert not np.array_equal(shuffled, expected)
    assert not all(np.array_equal(a, b) for a, b in zip(from_memory, all_batches(memory, 2),
                                                        strict=False))


def test_streaming_from_disk_trains_the_same_model(trained, tmp_path):
    streamed = runner(tmp_path, config(**{"vae.epochs": 3, "vae.in_memory_gb": 0})).run(["vae"])
    assert streamed["vae"]["key"] == trained["vae"]["key"]  # a speed setting, not an identity
    ours = load_model(Path(streamed["vae"]["path"]) / "model.pt").state_dict()
    for name, tensor in load_model(Path(trained["vae"]["path"]) / "model.pt").state_dict().items():
        assert torch.equal(tensor, ours[name]), name


def test_split_holds_out_whole_episodes():
    from worldmodel.training import split_episodes

    rng = np.random.default_rng(0)
    assert split_episodes(1, 0.05, rng) == ([0], [])
    train, val = split_episodes(2, 0.05, rng)
    assert len(val) == 1 and sorted(train + val) == [0, 1]
    train, val = split_episodes(100, 0.05, rng)
    assert len(val) == 5 and len(train) == 95
    assert split_episodes(3, 0.0, rng) == ([0, 1, 2], [])
    assert len(split_episodes(3, 0.9, rng)[0]) == 1


def test_interrupted_training_resumes_to_the_same_weights(trained, tmp_path, monkeypatch):
    save = vae_step.save_checkpoint

    def interrupt_after_epoch_1(path, model, optimizer, epoch, rows):
        save(path, model, optimizer, epoch, rows)
        if epoch == 1:
            raise KeyboardInterrupt  # as a Ctrl-C right after the first epoch's checkpoint

    monkeypatch.setattr(vae_step, "save_checkpoint", interrupt_after_epoch_1)
    cfg = config(**{"vae.epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path, cfg).run(["vae"])
    [staging] = (tmp_path / "store" / "vae").glob(".staging-*")
    assert torch.load(staging / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (staging / "model.pt").exists()

    monkeypatch.setattr(vae_step, "save_checkpoint", save)
    epochs_run = []
    train_epoch = vae_step.train_epoch

    def spy(*args, **kwargs):
        epochs_run.append(args[6])  # the epoch number
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(vae_step, "train_epoch", spy)
    resumed = runner(tmp_path, cfg).run(["vae"])
    assert epochs_run == [2, 3]
    path = Path(resumed["vae"]["path"])
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    fresh = load_model(Path(trained["vae"]["path"]) / "model.pt").state_dict()
    for name, tensor in load_model(path / "model.pt").state_dict().items():
        assert torch.equal(tensor, fresh[name]), name


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    loss, train_epoch = vae_step.vae_loss, vae_step.train_epoch
    current = {}

    def epoch_spy(*args, **kwargs):
        current["epoch"] = args[6]
        return train_epoch(*args, **kwargs)

    def nan_in_epoch_2(*args, **kwargs):
        losses = loss(*args, **kwargs)
        if current["epoch"] == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(vae_step, "train_epoch", epoch_spy)
    monkeypatch.setattr(vae_step, "vae_loss", nan_in_epoch_2)
    with pytest.raises(vae_step.TrainingDiverged,
                       match=r"loss became nan at epoch 2, batch 1; the last good checkpoint "
                             r"\(epoch 1\).*vae\.learning_rate"):
        runner(tmp_path, config(**{"vae.epochs": 3})).run(["vae"])
    [staging] = (tmp_path / "store" / "vae").glob(".staging-*")
    assert torch.load(staging / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (staging / "model.pt").exists()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["run"]["status"] == "failed"


def test_the_shipped_configs_type_into_the_step_configs():
    cfg = compose_config(["data=tiny"])
    params = typed(vae_step.VAEStepConfig, config_slice(cfg, ("seed", "vae")), "vae").vae
    assert params.epochs == 1 and params.z_dim == 32
    vae_step.check_params(params)
    typed(encode.EncodeConfig, config_slice(cfg, ("vae", "encode")), "encode")


def test_bad_settings_are_named():
    from worldmodel.errors import ConfigError

    with pytest.raises(ConfigError, match=r"vae\.frame_stride=0 must be >= 1"):
        vae_step.check_params(vae_step.VAEParams(frame_stride=0))
    with pytest.raises(ConfigError, match=r"vae\.val_fraction=1\.0"):
        vae_step.check_params(vae_step.VAEParams(val_fraction=1.0))


def test_a_run_killed_after_writing_the_model_only_redraws_the_figures(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vae_figures, "make_figures", interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path, config(**{"vae.epochs": 1})).run(["vae"])
    monkeypatch.undo()
    monkeypatch.setattr(vae_step, "train_epoch", interrupt)  # training again would fail
    summary = runner(tmp_path, config(**{"vae.epochs": 1})).run(["vae"])
    assert (Path(summary["vae"]["path"]) / "reconstructions.png").stat().st_size > 0
    assert summary["vae"]["epochs"] == 1 and summary["vae"]["loss"] > 0
