"""encode: every collected frame -> V's posterior (mu, logvar), the training data of M (paper
section 3.1, between steps 2 and 3 of the procedure: M is trained on the frames' z, not pixels).

Inputs: collect (episodes/ep_*.npz) and vae (model.pt). Outputs, in the step's directory:

    latents/ep_000000.npz ...   one file per episode, same names as the episodes
                                (worldmodel/latents.py): mu, logvar (float16), actions, rewards,
                                terminated, truncated
    latents.json                episodes, frames, z_dim, bytes of the latent files against the
                                bytes of the frames they encode, per-episode counts

Storing (mu, logvar) rather than one sampled z lets M's training draw a fresh z every epoch,
as the original does. Latent files are written atomically; a killed encode resumes by keeping
the files that load and validate, and encoding the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from worldmodel import durable, layout
from worldmodel.config import at_least, require
from worldmodel.episodes import episode_files, episode_index, load_episode
from worldmodel.errors import StoreError
from worldmodel.latents import (
    LATENT_DTYPE,
    DamagedLatents,
    Latents,
    latent_path,
    load_latents,
    save_latents,
)
from worldmodel.models import VAE, build_from_checkpoint, frames_to_tensor

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

FRAME_BYTES = 64 * 64 * 3  # one frame as V takes it: 64x64 RGB, uint8


@dataclass
class EncodeParams:
    """The `encode` config group."""

    batch_size: int = 1000
    """Frames per forward pass of V's encoder (memory, not results: any size gives the same)."""


@dataclass
class EncodeConfig:
    vae: dict[str, Any] = field(default_factory=lambda: {"z_dim": 32})
    """The vae group, as read: encode needs V's z_dim (the vae step checks the rest)."""
    encode: EncodeParams = field(default_factory=EncodeParams)

    def __post_init__(self) -> None:
        require(at_least("encode", self.encode, ("batch_size",)))


def load_vae(path: Path, z_dim: int, device: torch.device) -> VAE:
    """The trained V from its model.pt, on `device`, ready for inference.

    A checkpoint of another z size than the config's vae.z_dim is refused with a message that
    names both sizes (CheckpointMismatchError), not a shape error deep inside torch.
    """
    if not path.is_file():
        raise StoreError(f"encode: the trained VAE {path} is missing")
    model = build_from_checkpoint(VAE, torch.load(path, map_location="cpu", weights_only=True),
                                  expect={"z_dim": z_dim})
    return model.to(device, memory_format=torch.channels_last).eval()


@torch.inference_mode()
def encode_frames(
    model: VAE, frames: np.ndarray, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) of q(z | frame), each (N, z_dim) float16, for uint8 frames (N, H, W, 3)."""
    mus, logvars = [], []
    for start in range(0, len(frames), batch_size):
        x = frames_to_tensor(frames[start : start + batch_size], device, channels_last=True)
        mu, logvar = model.encode(x)
        mus.append(mu.float().cpu().numpy())
        logvars.append(logvar.float().cpu().numpy())
    return (np.concatenate(mus).astype(LATENT_DTYPE),
            np.concatenate(logvars).astype(LATENT_DTYPE))


def finished_latents(directory: Path, z_dim: int, log) -> dict[int, Path]:
    """Latent files a previous (killed) run completed; damaged ones are removed to be redone."""
    done = {}
    durable.remove_leftovers(directory)
    for path in sorted(directory.glob("ep_*.npz")):
        try:
            load_latents(path, z_dim)
        except DamagedLatents as exc:
            log.warning("%s; encoding it again", exc)
            path.unlink()
            continue
        done[episode_index(path)] = path
    return done


def latent_stats(path: Path, episode: Path) -> dict:
    frames = len(durable.read_array(path, "mu", "latent file"))
    return {"index": episode_index(path), "frames": frames, "bytes": path.stat().st_size,
            "episode_bytes": episode.stat().st_size}


def run(ctx: StepContext) -> dict:
    cfg: EncodeConfig = ctx.config
    z_dim = cfg.vae["z_dim"]
    device = ctx.hardware.device
    model = load_vae(ctx.input("vae").path / layout.VAE.MODEL, z_dim, device)
    # Every round's episodes so far (one collect input in round 0).
    episode_dirs = [a.path / layout.COLLECT.EPISODES for a in ctx.inputs_of("collect")]
    episodes = episode_files(episode_dirs)
    if not episodes:
        raise StoreError(f"encode: no episodes in {', '.join(map(str, episode_dirs))}")
    directory = ctx.dir / "latents"
    directory.mkdir(exist_ok=True)
    done = finished_latents(directory, z_dim, ctx.log)
    todo = [p for p in episodes if episode_index(p) not in done]
    if done:
        ctx.log.info("%d of %d episodes already encoded; encoding the other %d",
                     len(episodes) - len(todo), len(episodes), len(todo))
    started, frames = time.perf_counter(), 0
    with tqdm(total=len(episodes), initial=len(episodes) - len(todo), unit="ep",
              desc="encode") as bar:
        for path in todo:
            episode = load_episode(path)
            mu, logvar = encode_frames(model, episode.frames, cfg.encode.batch_size, device)
            save_latents(latent_path(directory, episode_index(path)), Latents(
                mu=mu, logvar=logvar, actions=episode.actions, rewards=episode.rewards,
                terminated=episode.terminated, truncated=episode.truncated,
            ))
            frames += len(episode.frames)
            bar.set_postfix(frames_per_s=f"{frames / (time.perf_counter() - started):.0f}")
            bar.update()
    seconds = time.perf_counter() - started

    stats = [latent_stats(latent_path(directory, episode_index(p)), p) for p in episodes]
    total_frames = sum(s["frames"] for s in stats)
    summary = {
        "episodes": len(stats),
        "frames": total_frames,
        "z_dim": z_dim,
        "dtype": np.dtype(LATENT_DTYPE).name,
        "bytes": sum(s["bytes"] for s in stats),
        # What the latents replace: the frames as uint8 arrays, and their compressed files.
        "frames_bytes": total_frames * FRAME_BYTES,
        "episode_files_bytes": sum(s["episode_bytes"] for s in stats),
        "files": stats,
    }
    durable.write_json(ctx.dir / layout.ENCODE.INDEX, summary)
    ctx.log.info("encoded %d episodes, %d frames: %.1f MB of latents for %.1f MB of frames "
                 "(%.1f MB compressed)", summary["episodes"], total_frames, summary["bytes"] / 1e6,
                 summary["frames_bytes"] / 1e6, summary["episode_files_bytes"] / 1e6)
    result = {k: summary[k] for k in ("episodes", "frames", "bytes", "frames_bytes",
                                      "episode_files_bytes")}
    if frames:
        result["frames_per_s"] = frames / seconds
    return result
