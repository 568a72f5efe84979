"""What the training steps (vae, mdrnn) share: atomic checkpoints, resumable metrics, splits."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from worldmodel import durable, layout
from worldmodel.errors import ConfigError, WorldModelError
from worldmodel.models import build_from_checkpoint, checkpoint

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

# Both training steps (vae, mdrnn) name their model and their split so (layout.VAE, .MDRNN).
MODEL, SPLIT = layout.VAE.MODEL, layout.VAE.SPLIT


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


def previous_split(ctx: StepContext) -> dict | None:
    """The split.json of this step's result in the previous round; None in round 0."""
    before = ctx.previous_round()
    return None if before is None else durable.read_json(before.path / SPLIT)


def split_rounds(names: list[str], val_fraction: float, rng: np.random.Generator,
                 previous: dict | None) -> tuple[list, list]:
    """Positions of the training and validation episodes among `names`. In round 0
    (previous None) a random split (split_episodes). In a later round the previous round's
    split.json (`previous`, previous_split) is kept, and only the episodes new to this round
    are split: an episode the previous model trained on never validates the model that
    starts from it."""
    if previous is None:
        return split_episodes(len(names), val_fraction, rng)
    known = set(previous["train"]) | set(previous["val"])
    new = [i for i, name in enumerate(names) if name not in known]
    _, new_val = split_episodes(len(new), val_fraction, rng)
    val = sorted({i for i, name in enumerate(names) if name in set(previous["val"])}
                 | {new[j] for j in new_val})
    return [i for i in range(len(names)) if i not in set(val)], val


def warm_start(ctx: StepContext, cls: type[nn.Module], expect: dict, same: str) -> dict | None:
    """The weights of this step's model in the previous round (`ctx.previous_round()`, the
    model a later round starts from), or None in round 0: the model then starts from its
    seeded initialisation. `expect` are the sizes this round asks for; `same` names the
    settings that must stay the same in every round for the weights to fit."""
    previous = ctx.previous_round()
    if previous is None:
        return None
    path = previous.path / MODEL
    try:
        model = build_from_checkpoint(cls, torch.load(path, map_location="cpu",
                                                      weights_only=True), expect=expect)
    except ValueError as exc:
        raise ConfigError(f"{ctx.kind}: the previous round's model ({path}) does not fit this "
                          f"round's settings: {exc}. Keep {same} the same in every round "
                          f"(rounds.{ctx.kind} must not change them)") from exc
    ctx.log.info("starting from the previous round's model (%s)", path)
    return model.state_dict()


def save_atomic(data: dict, path: Path) -> None:
    """torch.save so that a kill leaves the previous file (or none), never half of one."""
    with durable.atomic_write(path) as f:
        torch.save(data, f)


def keep_metrics_up_to(path: Path, last: int, index: str = "epoch") -> list[dict]:
    """Drop metric rows whose `index` (epoch, generation) is after `last`: rows a killed run
    logged for work it did not get to save, which the resumed run logs again. Returns the rows
    kept."""
    rows = [row for row in durable.read_jsonl(path) if row.get(index, 0) <= last]
    if path.exists():
        durable.rewrite_jsonl(path, rows)
    return rows


def has_epochs(rows: list[dict], epochs: int) -> bool:
    """Whether metrics rows are exactly those of epochs 1..epochs, in order."""
    return [row.get("epoch") for row in rows] == list(range(1, epochs + 1))


def finished_model(step_dir: Path, model_name: str, epochs: int, log) -> bool:
    """Whether a training step's model.pt is stored with the metrics of all its epochs.

    A model.pt without them (metrics.jsonl damaged or deleted) cannot be completed: the rows
    come from training. It is removed, and the step trains again.
    """
    model, rows = step_dir / model_name, durable.read_jsonl(step_dir / layout.METRICS)
    if not model.exists():
        if rows:
            log.warning("%s is missing and only training makes it: training again", model)
        return False
    if has_epochs(rows, epochs):
        return True
    log.warning("%s lacks the rows of epochs 1-%d, which only training makes: training again",
                step_dir / layout.METRICS, epochs)
    model.unlink()
    return False


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int, rows: list[dict]) -> None:
    """The state after `epoch`, with the metrics rows so far: what a resumed run continues
    from (and how it remakes metrics.jsonl, whatever happened to that file)."""
    save_atomic({"epoch": epoch, "model": checkpoint(model), "optimizer": optimizer.state_dict(),
                 "rows": rows}, path)


def resume(step_dir: Path, checkpoint_name: str,
           make: Callable[[], tuple[nn.Module, torch.optim.Optimizer]], device: torch.device,
           log) -> tuple[nn.Module, torch.optim.Optimizer, int, list[dict]]:
    """Model and optimizer from `make()`, restored from the step's training checkpoint if a
    killed run left one, and metrics.jsonl remade from the checkpoint's rows.

    Returns (model, optimizer, epochs completed, their metrics rows). A checkpoint that cannot
    be used (damaged on disk, or without the rows of its epochs) is moved aside and training
    starts from fresh objects: nothing that a rerun cannot remake is lost.
    """
    path, metrics = step_dir / checkpoint_name, step_dir / layout.METRICS
    model, optimizer = make()
    done, rows = 0, []
    if path.exists():
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            done = int(state["epoch"])
            # Checkpoints written before the rows were kept in them: the file's rows.
            rows = state.get("rows") or keep_metrics_up_to(metrics, done)
            if not has_epochs(rows, done):
                raise ValueError(f"the metrics of epochs 1-{done} are not all there")
            saved = build_from_checkpoint(type(model), state["model"], expect=model.config())
            model.load_state_dict(saved.state_dict())
            optimizer.load_state_dict(state["optimizer"])
        except (OSError, EOFError, RuntimeError, KeyError, ValueError, TypeError,
                pickle.UnpicklingError) as exc:
            aside = durable.set_aside(path)
            log.warning("the training checkpoint %s cannot be used (%s; moved to %s): training "
                        "from the start", path, exc, aside.name)
            model, optimizer = make()
            done, rows = 0, []
    durable.rewrite_jsonl(metrics, rows)
    return model, optimizer, done, rows


def cpu_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on the CPU in the default memory format, for model.pt."""
    copy = type(model)(**model.config())
    copy.load_state_dict(model.state_dict())
    return copy
