"""vae: trains V, the convolutional VAE, on the collected frames (paper sections 2.1 and 3.1,
step 2 of the procedure: train V to encode each frame into z).

Inputs: collect (episodes/ep_*.npz); in a round k >= 1 every round's collect so far and round
k-1's vae, whose weights V starts from and whose validation episodes stay validation
episodes. Outputs, in the step's directory:

    model.pt             checkpoint(vae): constructor arguments and weights (CPU tensors); later
                         steps rebuild V with build_from_checkpoint(VAE, ..., expect={"z_dim": ..})
    split.json           which episodes trained V and which validated it, frames used
    metrics.jsonl        per epoch: vae/loss, vae/rec, vae/kl, vae/val_* and vae/frames_per_s
    reconstructions.png  validation frames, their reconstructions, decodes of z ~ N(0, I)
    losses.png           training and validation loss per epoch (both: worldmodel/figures/vae.py)

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

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from worldmodel import durable, figures, layout
from worldmodel.config import at_least, require
from worldmodel.episodes import DamagedEpisode, episode_files, episode_steps, load_episode
from worldmodel.errors import ConfigError, StoreError
from worldmodel.figures import vae as vae_figures
from worldmodel.models import VAE, checkpoint, frames_to_tensor, vae_loss
from worldmodel.models.vae import sample_latent
from worldmodel.training import (
    TrainingDiverged,
    cpu_copy,
    finished_model,
    previous_split,
    resume,
    save_atomic,
    save_checkpoint,
    split_rounds,
    warm_start,
)

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

FILES = layout.VAE
CHECKPOINT = "checkpoint.pt"  # only while training: what a killed run resumes from
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

    def __post_init__(self) -> None:
        check_params(self.vae)


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
    problems = at_least("vae", params, ("z_dim", "batch_size", "epochs", "frame_stride",
                                        "shuffle_window"))
    problems += at_least("vae", params, ("skip_frames",), minimum=0)
    if not 0 <= params.val_fraction < 1:
        problems.append(f"vae.val_fraction={params.val_fraction} must be in [0, 1)")
    require(problems)


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



# --- the step ----------------------------------------------------------------------------------


def fit(ctx: StepContext, params: VAEParams, source: FrameSource, train: list[int],
        val: list[int]) -> VAE:
    """Train V for params.epochs, continuing from checkpoint.pt when a killed run left one."""
    device = ctx.hardware.device

    start = warm_start(ctx, VAE, {"z_dim": params.z_dim}, "vae.z_dim")

    def make() -> tuple[VAE, torch.optim.Optimizer]:
        model = new_model(params, ctx.derive_seed("init"))
        if start is not None:
            model.load_state_dict(start)
        model = model.to(device, memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=params.learning_rate)

    model, optimizer, done, rows = resume(ctx.dir, CHECKPOINT, make, device, ctx.log)
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
        rows.append(ctx.log_metrics(metrics, epoch=epoch))
        save_checkpoint(ctx.dir / CHECKPOINT, model, optimizer, epoch, rows)
        ctx.log.info("epoch %d/%d: loss %.1f (rec %.1f, kl %.2f)%s, %.0f frames/s", epoch,
                     params.epochs, metrics["loss"], metrics["rec"], metrics["kl"],
                     f", validation {metrics['val_loss']:.1f}" if "val_loss" in metrics else "",
                     metrics["frames_per_s"])
    return model


def run(ctx: StepContext) -> dict:
    params: VAEParams = ctx.config.vae
    # Every round's episodes so far (one collect input in round 0).
    episode_dirs = [a.path / layout.COLLECT.EPISODES for a in ctx.inputs_of("collect")]
    paths = episode_files(episode_dirs)
    if not paths:
        raise StoreError(f"vae: no episodes in {', '.join(map(str, episode_dirs))}")
    counts = [selected_count(episode_steps(p) + 1, params.skip_frames, params.frame_stride)
              for p in paths]
    train, val = split_rounds([p.name for p in paths], params.val_fraction, ctx.rng("split"),
                              previous_split(ctx))
    train_frames = sum(counts[i] for i in train)
    val_frames = sum(counts[i] for i in val)
    if train_frames == 0:
        raise ConfigError(f"vae: vae.skip_frames={params.skip_frames} leaves no training frames "
                          f"(the episodes have {max(counts)} frames at most)")
    durable.write_json(ctx.dir / FILES.SPLIT, {
        "train": [paths[i].name for i in train], "val": [paths[i].name for i in val],
        "train_frames": train_frames, "val_frames": val_frames,
        "skip_frames": params.skip_frames, "frame_stride": params.frame_stride,
    })

    if finished_model(ctx.dir, FILES.MODEL, params.epochs, ctx.log):
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
        save_atomic(checkpoint(cpu_copy(model)), ctx.dir / FILES.MODEL)
    # The optimizer state only served to resume; the result is model.pt (a third the size).
    (ctx.dir / CHECKPOINT).unlink(missing_ok=True)
    vae_figures.make_figures(ctx.dir, episode_dirs, ctx.dir)

    last = figures.read_metrics(ctx.dir / layout.METRICS)[-1]
    result = {name.removeprefix("vae/"): value for name, value in last.items()
              if name.startswith("vae/") and name != "vae/frames"}
    result.update(epochs=params.epochs, train_episodes=len(train), val_episodes=len(val),
                  train_frames=train_frames, val_frames=val_frames)
    return result
