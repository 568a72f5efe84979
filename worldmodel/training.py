"""What the training steps (vae, mdrnn) share: atomic checkpoints, resumable metrics, splits."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worldmodel import figures
from worldmodel.errors import StoreError, WorldModelError
from worldmodel.models import build_from_checkpoint, checkpoint


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


def keep_metrics_up_to(path: Path, last: int, index: str = "epoch") -> None:
    """Drop metric rows whose `index` (epoch, generation) is after `last`: rows a killed run
    logged for work it did not get to save, which the resumed run logs again."""
    if not path.exists():
        return
    rows = [row for row in figures.read_metrics(path) if row.get(index, 0) <= last]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, path)


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int) -> None:
    """The state after `epoch`: what a resumed run continues from."""
    save_atomic({"epoch": epoch, "model": checkpoint(model), "optimizer": optimizer.state_dict()},
                path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device) -> int:
    """Restore model and optimizer from `path`; returns the epoch it completed (0: none)."""
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        saved = build_from_checkpoint(type(model), state["model"], expect=model.config())
        model.load_state_dict(saved.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        return int(state["epoch"])
    except (OSError, EOFError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise StoreError(
            f"the training checkpoint {path} cannot be used ({exc}); delete it to train from "
            "the start"
        ) from exc


def cpu_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on the CPU in the default memory format, for model.pt."""
    copy = type(model)(**model.config())
    copy.load_state_dict(model.state_dict())
    return copy
