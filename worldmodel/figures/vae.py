"""The vae step's figures, drawn from its stored files alone.

    reconstructions.png  validation frames, their reconstructions, decodes of z ~ N(0, I)
    losses.png           training and validation loss per epoch
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from worldmodel import figures, layout
from worldmodel.episodes import episode_files, load_episode
from worldmodel.errors import StoreError
from worldmodel.models import VAE, build_from_checkpoint, frames_to_tensor, to_uint8

FILES = layout.VAE  # what this module draws and reads


def make_figures(step_dir: Path, episode_dirs: list[Path], out_dir: Path, count: int = 8
                 ) -> list[Path]:
    """Draw reconstructions.png and losses.png from a vae result's stored files alone.

    `step_dir` holds model.pt, split.json and metrics.jsonl; `episode_dirs` the collect
    results' episodes/ folders (every round's, after the first). Frames come from the
    validation episodes (training ones if there are none), spread evenly over them; the
    samples use a fixed seed, so the figures are reproducible.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    split = json.loads((step_dir / FILES.SPLIT).read_text())
    model = build_from_checkpoint(VAE, torch.load(step_dir / FILES.MODEL, weights_only=True))
    model.eval()
    names = (split["val"] or split["train"])[:count]
    files = {p.name: p for p in episode_files(episode_dirs)}
    missing = [name for name in names if name not in files]
    if missing:
        raise StoreError(f"vae: episodes {', '.join(missing)} are not in "
                         f"{', '.join(map(str, episode_dirs))}")
    frames = []
    for name in names:
        episode = load_episode(files[name]).frames[split["skip_frames"] :]
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
    grid = figures.image_rows(rows, out_dir / FILES.RECONSTRUCTIONS,
                              title=f"V (z_dim={model.z_dim}) on {which} frames: mean of q(z|x)")
    metrics = figures.read_metrics(step_dir / layout.METRICS)
    epochs = [row["epoch"] for row in metrics]
    series = {"train": (epochs, [row.get("vae/loss") for row in metrics]),
              "validation": (epochs, [row.get("vae/val_loss") for row in metrics])}
    losses = figures.curves(series, out_dir / FILES.LOSSES, "epoch", "loss per frame (rec + KL)",
                            title="V: loss per epoch")
    return [grid, losses]
