"""vae: trains V, the convolutional VAE, on the collected frames (paper sections 2.1 and 3.1,
step 2 of the procedure: train V to encode each frame into z).

Inputs: collect (episodes/ep_*.npz). Outputs, in the step's directory:

    model.pt             checkpoint(vae): constructor arguments and weights (CPU tensors); later
                         steps rebuild V with build_from_checkpoint(VAE, ..., expect={"z_dim": ..})
    split.json           which episodes trained V and which validated it, frames used
    metrics.jsonl        per epoch: vae/loss, vae/rec, vae/kl, vae/val_* and vae/frames_per_s
    reconstructions.png  validation frames, their reconstructions, decodes of z ~ N(0, I)
    losses.png           training and validation loss per epoch

Data. Frames stay uint8 until a batch is formed. Each epoch shuffles the training episodes,
cuts them into windows of `shuffle_window` episodes and yields batches of frames shuffled
within a window. Datasets up to `in_memory_gb` are read once and held in memory; larger ones
are read from disk one window at a time. Both paths yield the same batches, so the choice
changes speed only, never the trained model.

Resume. After every epoch the model and optimizer are saved (atomically) to checkpoint.pt, which
is deleted once model.pt is written: it only serves to resume. An epoch's randomness (its
shuffle and its z samples) is seeded from (seed, "vae", "epoch", e), so no random state needs
saving: a run killed at any point and started again continues from its last completed epoch
and ends with the weights an uninterrupted run gets (bit for bit on a CPU with the same
number of threads; GPU kernels may differ in the last bits unless hardware.deterministic).
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from worldmodel import figures
from worldmodel.episodes import DamagedEpisode, load_episode
from worldmodel.errors import ConfigError, StoreError
from worldmodel.models import VAE, build_from_checkpoint, checkpoint, frames_to_tensor, vae_loss
from worldmodel.models.vae import sample_latent
from worldmodel.store import write_json_atomic
from worldmodel.training import (
    TrainingDiverged,
    cpu_copy,
    keep_metrics_up_to,
    load_checkpoint,
    save_atomic,
    save_checkpoint,
    split_episodes,
)

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
SPLIT = "split.json"
METRICS = "metrics.jsonl"
RECONSTRUCTIONS = "reconstructions.png"
LOSSES = "losses.png"
FRAME_BYTES = 64 * 64 * 3  # one frame as V takes it: 64x64 RGB, uint8


@dataclass
class VAEParams:
    """The `vae` config group (epochs come from the `data` preset)."""

    z_dim: int = 32
    """Size of the latent z (32 in the paper)."""
    kl_tolerance: float = 0.5
    """Each image's KL is floored at kl_tolerance * z_dim nats ("free bits", 0.5 originally)."""
    learning_rate: float = 1e-3
    """Adam's learning rate."""
    batch_size: int = 100
    """Frames per gradient step."""
    epochs: int = 10
    """Passes over the training frames."""
    frame_stride: int = 1
    """Train on every n-th frame of each episode (consecutive frames are near duplicates)."""
    skip_frames: int = 0
    """Leave out the first frames of each episode; 50 leaves out CarRacing's opening zoom-in
    (its first simulated second at 50 frames per second)."""
    val_fraction: float = 0.05
    """Fraction of the episodes (whole episodes, at least one when there are two or more)
    held out to measure the loss on frames V did not train on."""
    shuffle_window: int = 32
    """Episodes whose frames are shuffled together into batches. Also what streaming from disk
    holds in memory: about shuffle_window * 12 MB for 1000-step episodes."""
    in_memory_gb: float = 4.0
    """Hold the selected frames (uint8) in memory when they take at most this many GB; else
    stream them from disk. Changes speed only: both paths yield the same batches."""


@dataclass
class VAEStepConfig:
    seed: int
    vae: VAEParams


def stored_steps(path: Path) -> int:
    """Steps of an episode file, reading only its small rewards array (not the frames)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return len(data["rewards"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DamagedEpisode(f"episode file {path} is damaged ({exc})") from exc


def selected_count(frames: int, skip: int, stride: int) -> int:
    """How many of an episode's `frames` frames[skip::stride] keeps."""
    return len(range(skip, frames, stride))


class FrameSource:
    """The selected frames (frames[skip::stride]) of a list of episode files, by position.

    `window(ids)` returns (array, indices): the frames of episodes `ids` are array[indices],
    in episode order. In memory, `array` is one preallocated uint8 array holding every
    episode, filled once; streaming, it is the window's episodes freshly read from disk.
    """

    def __init__(self, paths: list[Path], counts: list[int], skip: int, stride: int,
                 in_memory: bool, log=None):
        self.paths, self.counts, self.skip, self.stride = paths, counts, skip, stride
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.frames: np.ndarray | None = None
        if in_memory:
            self.frames = self._read_all(log)

    def load(self, i: int) -> np.ndarray:
        frames = load_episode(self.paths[i]).frames[self.skip :: self.stride]
        if len(frames) != self.counts[i]:
            raise DamagedEpisode(f"episode file {self.paths[i]} changed while training")
        return frames

    def _read_all(self, log) -> np.ndarray:
        total = int(self.offsets[-1])
        array = None
        for i in tqdm(range(len(self.paths)), desc="vae: reading frames", unit="ep",
                      disable=len(self.paths) < 20):
            frames = self.load(i)
            if array is None:
                # Allocated once at its final size: never two copies of the dataset at a time.
                array = np.empty((total, *frames.shape[1:]), dtype=np.uint8)
            array[self.offsets[i] : self.offsets[i + 1]] = frames
        if log:
            log.info("holding %d frames in memory (%.2f GB)", total, array.nbytes / 1e9)
        return array

    def window(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        if self.frames is not None:
            ranges = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in ids]
            return self.frames, np.concatenate(ranges)
        loaded = np.concatenate([self.load(i) for i in ids])
        return loaded, np.arange(len(loaded))


def batches(
    source: FrameSource,
    ids: list[int],
    batch_size: int,
    window: int,
    rng: np.random.Generator | None = None,
) -> Iterator[np.ndarray]:
    """uint8 batches (B, H, W, C) of every selected frame of episodes `ids`, each once.

    With `rng`: the episodes are shuffled, cut into windows of about `window` episodes, and each
    window's frames shuffled; a batch may span two windows. Without: episode and frame order.
    Only the last batch may be smaller than batch_size.
    """
    ids = list(ids)
    if rng is not None:
        ids = [ids[j] for j in rng.permutation(len(ids))]
    carry = None  # the frames a window left over, less than a batch
    for chunk in np.array_split(np.array(ids, dtype=np.int64), math.ceil(len(ids) / window)):
        array, indices = source.window(chunk.tolist())
        if rng is not None:
            indices = indices[rng.permutation(len(indices))]
        start = 0
        if carry is not None:
            start = min(batch_size - len(carry), len(indices))
            carry = np.concatenate([carry, array[indices[:start]]])
            if len(carry) < batch_size:
                continue
            yield carry
            carry = None
        while start + batch_size <= len(indices):
            yield array[indices[start : start + batch_size]]
            start += batch_size
        if start < len(indices):
            carry = array[indices[start:]]
    if carry is not None:
        yield carry


# --- training ----------------------------------------------------------------------------------


def check_params(params: VAEParams) -> None:
    problems = []
    for name in ("z_dim", "batch_size", "epochs", "frame_stride", "shuffle_window"):
        if getattr(params, name) < 1:
            problems.append(f"vae.{name}={getattr(params, name)} must be >= 1")
    if params.skip_frames < 0:
        problems.append(f"vae.skip_frames={params.skip_frames} must be >= 0")
    if not 0 <= params.val_fraction < 1:
        problems.append(f"vae.val_fraction={params.val_fraction} must be in [0, 1)")
    if problems:
        raise ConfigError("; ".join(problems))


def new_model(params: VAEParams, seed: int) -> VAE:
    """V with its initial weights drawn from `seed` alone, on the CPU (the same on any device)."""
    with torch.random.fork_rng(devices=[]):  # leaves the caller's global torch RNG untouched
        torch.manual_seed(seed)
        return VAE(z_dim=params.z_dim)


def step_losses(
    model: VAE, batch: np.ndarray, params: VAEParams, device: torch.device,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    # channels_last keeps the frames' own NHWC layout: no transpose, and faster CPU convolutions.
    x = frames_to_tensor(batch, device, channels_last=True)
    mu, logvar = model.encode(x)
    # z is drawn from our own generator, not torch's global one, so epochs are reproducible.
    x_hat = model.decode(sample_latent(mu, logvar, generator))
    return vae_loss(x, x_hat, mu, logvar, params.kl_tolerance)


LOGGED = ("loss", "rec", "kl")


def evaluate(
    model: VAE, source: FrameSource, ids: list[int], params: VAEParams,
    device: torch.device, seed: int,
) -> dict[str, float]:
    """Mean loss terms per frame over the validation episodes (the same z noise every epoch)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    sums, frames = dict.fromkeys(LOGGED, 0.0), 0
    model.eval()
    with torch.inference_mode():
        for batch in batches(source, ids, params.batch_size, params.shuffle_window):
            losses = step_losses(model, batch, params, device, generator)
            for name in LOGGED:
                sums[name] += losses[name].item() * len(batch)
            frames += len(batch)
    if not frames:  # skip_frames left nothing of the validation episodes
        return {}
    return {f"val_{name}": value / frames for name, value in sums.items()}


def train_epoch(
    model: VAE, optimizer: torch.optim.Optimizer, source: FrameSource, ids: list[int],
    params: VAEParams, device: torch.device, epoch: int, ctx: StepContext, frames_total: int,
) -> dict[str, float]:
    """One pass over the training frames; returns the mean loss terms per frame and speed."""
    rng = ctx.rng("epoch", epoch)
    generator = torch.Generator(device=device).manual_seed(ctx.derive_seed("epoch", epoch, "z"))
    sums, frames = dict.fromkeys(LOGGED, 0.0), 0
    model.train()
    started = time.perf_counter()
    bar = tqdm(total=frames_total, unit="frame", desc=f"vae epoch {epoch}/{params.epochs}",
               leave=False)
    with bar:
        for number, batch in enumerate(
            batches(source, ids, params.batch_size, params.shuffle_window, rng), start=1
        ):
            losses = step_losses(model, batch, params, device, generator)
            values = {name: losses[name].item() for name in LOGGED}
            if not math.isfinite(values["loss"]):
                kept = (f"the last good checkpoint (epoch {epoch - 1}) is kept in "
                        f"{ctx.dir / CHECKPOINT}" if epoch > 1 else "no epoch was completed")
                raise TrainingDiverged(
                    f"vae: the loss became {values['loss']} at epoch {epoch}, batch "
                    f"{number}; {kept}. Lower vae.learning_rate (now "
                    f"{params.learning_rate}) and run again"
                )
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            for name in LOGGED:
                sums[name] += values[name] * len(batch)
            frames += len(batch)
            bar.update(len(batch))
            bar.set_postfix({name: f"{value:.1f}" for name, value in values.items()},
                            refresh=False)
    seconds = time.perf_counter() - started
    out = {name: value / frames for name, value in sums.items()}
    out.update(frames=frames, seconds=seconds, frames_per_s=frames / seconds)
    return out


# --- figures -----------------------------------------------------------------------------------


def make_figures(step_dir: Path, episodes_dir: Path, out_dir: Path, count: int = 8) -> list[Path]:
    """Draw reconstructions.png and losses.png from a vae result's stored files alone.

    `step_dir` holds model.pt, split.json and metrics.jsonl; `episodes_dir` the collect step's
    episodes. Frames come from the validation episodes (training ones if there are none),
    spread evenly over them; the samples use a fixed seed, so the figures are reproducible.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    split = json.loads((step_dir / SPLIT).read_text())
    model = build_from_checkpoint(VAE, torch.load(step_dir / MODEL, weights_only=True))
    model.eval()
    names = (split["val"] or split["train"])[:count]
    frames = []
    for name in names:
        episode = load_episode(episodes_dir / name).frames[split["skip_frames"] :]
        picks = np.linspace(0, len(episode) - 1, min(math.ceil(count / len(names)), len(episode)))
        frames.extend(episode[picks.round().astype(int)])
    if not frames:
        raise StoreError(f"vae: no frames to draw in {names} after skip_frames")
    real = np.stack(frames[:count])
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        mu, _ = model.encode(frames_to_tensor(real))
        rows = [("real", real), ("reconstructed", to_uint8(model.decode(mu)))]
        z = torch.randn(len(real), model.z_dim, generator=generator)
        rows.append(("z ~ N(0, I)", to_uint8(model.decode(z))))
    which = "validation" if split["val"] else "training"
    grid = figures.image_rows(rows, out_dir / RECONSTRUCTIONS,
                              title=f"V (z_dim={model.z_dim}) on {which} frames: mean of q(z|x)")
    metrics = figures.read_metrics(step_dir / METRICS)
    epochs = [row["epoch"] for row in metrics]
    series = {"train": (epochs, [row.get("vae/loss") for row in metrics]),
              "validation": (epochs, [row.get("vae/val_loss") for row in metrics])}
    losses = figures.curves(series, out_dir / LOSSES, "epoch", "loss per frame (rec + KL)",
                            title="V: loss per epoch")
    return [grid, losses]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images (N, C, H, W) in [0, 1] -> uint8 (N, H, W, C)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --- the step ----------------------------------------------------------------------------------


def fit(ctx: StepContext, params: VAEParams, source: FrameSource, train: list[int],
        val: list[int]) -> VAE:
    """Train V for params.epochs, continuing from checkpoint.pt when a killed run left one."""
    device = ctx.hardware.device
    model = new_model(params, ctx.derive_seed("init")).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    done = load_checkpoint(ctx.dir / CHECKPOINT, model, optimizer, device)
    keep_metrics_up_to(ctx.dir / METRICS, done)
    if done:
        ctx.log.info("resuming after epoch %d of %d", done, params.epochs)
    ctx.log.info("training on %s with %d torch threads", device, torch.get_num_threads())
    train_frames = sum(source.counts[i] for i in train)
    for epoch in range(done + 1, params.epochs + 1):
        metrics = train_epoch(model, optimizer, source, train, params, device, epoch, ctx,
                              train_frames)
        if val:
            metrics.update(evaluate(model, source, val, params, device, ctx.derive_seed("val")))
        # Logged before the checkpoint: a resume drops the rows of epochs after its own.
        ctx.log_metrics(metrics, epoch=epoch)
        save_checkpoint(ctx.dir / CHECKPOINT, model, optimizer, epoch)
        ctx.log.info("epoch %d/%d: loss %.1f (rec %.1f, kl %.2f)%s, %.0f frames/s", epoch,
                     params.epochs, metrics["loss"], metrics["rec"], metrics["kl"],
                     f", validation {metrics['val_loss']:.1f}" if "val_loss" in metrics else "",
                     metrics["frames_per_s"])
    return model


def run(ctx: StepContext) -> dict:
    params: VAEParams = ctx.config.vae
    check_params(params)
    episodes_dir = ctx.inputs["collect"].path / "episodes"
    paths = sorted(episodes_dir.glob("ep_*.npz"))
    if not paths:
        raise StoreError(f"vae: no episodes in {episodes_dir}")
    counts = [selected_count(stored_steps(p) + 1, params.skip_frames, params.frame_stride)
              for p in paths]
    train, val = split_episodes(len(paths), params.val_fraction, ctx.rng("split"))
    train_frames = sum(counts[i] for i in train)
    val_frames = sum(counts[i] for i in val)
    if train_frames == 0:
        raise ConfigError(f"vae: vae.skip_frames={params.skip_frames} leaves no training frames "
                          f"(the episodes have {max(counts)} frames at most)")
    write_json_atomic(ctx.dir / SPLIT, {
        "train": [paths[i].name for i in train], "val": [paths[i].name for i in val],
        "train_frames": train_frames, "val_frames": val_frames,
        "skip_frames": params.skip_frames, "frame_stride": params.frame_stride,
    })

    if (ctx.dir / MODEL).exists():
        ctx.log.info("training finished in an earlier run; drawing the figures")
    else:
        gigabytes = (train_frames + val_frames) * FRAME_BYTES / 1e9
        in_memory = gigabytes <= params.in_memory_gb
        ctx.log.info("training on %d frames of %d episodes, validating on %d frames of %d; "
                     "%.2f GB of frames, %s", train_frames, len(train), val_frames, len(val),
                     gigabytes, "held in memory" if in_memory else "streamed from disk")
        source = FrameSource(paths, counts, params.skip_frames, params.frame_stride, in_memory,
                             ctx.log)
        model = fit(ctx, params, source, train, val)
        save_atomic(checkpoint(cpu_copy(model)), ctx.dir / MODEL)
        # The optimizer state only served to resume; the result is model.pt (a third the size).
        (ctx.dir / CHECKPOINT).unlink()
    make_figures(ctx.dir, episodes_dir, ctx.dir)

    last = figures.read_metrics(ctx.dir / METRICS)[-1]
    result = {name.removeprefix("vae/"): value for name, value in last.items()
              if name.startswith("vae/") and name != "vae/frames"}
    result.update(epochs=params.epochs, train_episodes=len(train), val_episodes=len(val),
                  train_frames=train_frames, val_frames=val_frames)
    return result
