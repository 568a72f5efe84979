"""What the training steps (vae, mdrnn) share: atomic checkpoints, resumable metrics, splits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from worldmodel import figures
from worldmodel.errors import WorldModelError


class TrainingDiverged(WorldModelError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def split_episodes(count: int, val_fraction: float, rng: np.random.Generator) -> tuple[list, list]:
    """Positions of the training and validation episodes: whole episodes, chosen at random."""
    if count >= 2 and val_fraction > 0:
        n_val = min(count - 1, max(1, round(val_fraction * count)))
    else:
        n_val = 0
    val = sorted(rng.choice(count, size=n_val, replace=False).tolist())
    train = [i for i in range(count) if i not in set(val)]
    return train, val


def save_atomic(data: dict, path: Path) -> None:
    """torch.save so that a kill leaves the previous file (or none), never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def keep_metrics_up_to(path: Path, epoch: int) -> None:
    """Drop metric rows of epochs after `epoch`: those a killed run logged but did not save."""
    if not path.exists():
        return
    rows = [row for row in figures.read_metrics(path) if row.get("epoch", 0) <= epoch]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, path)
