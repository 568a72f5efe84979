"""The three models of World Models (Ha & Schmidhuber 2018, section 2) and their losses.

V (`VAE`) compresses a frame into z, M (`MDRNN`) predicts the next z, C (`Controller`) maps
[z, h] to an action. Each model's `config()` returns its constructor arguments, so a checkpoint
is saved as {"kwargs": model.config(), "state_dict": model.state_dict()} and rebuilt with
`build_from_checkpoint`, which refuses a checkpoint trained with other sizes than the
configuration asks for, with a message that says how to fix it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from worldmodel.errors import ConfigError, StoreError
from worldmodel.models.controller import Controller, act_batch, squash_actions
from worldmodel.models.mdrnn import MDRNN, MDNOutput, mdn_nll, mdrnn_loss, sample
from worldmodel.models.vae import VAE, frames_to_tensor, sample_latent, to_uint8, vae_loss

__all__ = [
    "VAE",
    "MDRNN",
    "MDNOutput",
    "Controller",
    "CheckpointMismatchError",
    "act_batch",
    "build_from_checkpoint",
    "checkpoint",
    "checkpoint_kwargs",
    "controller_size",
    "frames_to_tensor",
    "mdn_nll",
    "mdrnn_loss",
    "sample",
    "sample_latent",
    "squash_actions",
    "to_uint8",
    "vae_loss",
]

ModelT = TypeVar("ModelT", bound=nn.Module)


class CheckpointMismatchError(ConfigError, ValueError):
    """A checkpoint was trained with other constructor arguments than the configuration asks."""


def checkpoint(model: nn.Module) -> dict[str, Any]:
    """What to save for a model: its constructor arguments and its weights."""
    return {"kwargs": model.config(), "state_dict": model.state_dict()}


def build_from_checkpoint(
    cls: type[ModelT], ckpt: dict[str, Any], expect: dict[str, Any] | None = None
) -> ModelT:
    """Rebuild a model from {"kwargs": ..., "state_dict": ...} and load its weights.

    `expect` holds constructor arguments the current configuration asks for (e.g. {"z_dim": 32});
    if the checkpoint was built with different values this raises CheckpointMismatchError (a
    ValueError) naming both values, instead of failing later with a shape mismatch.
    """
    if "kwargs" not in ckpt or "state_dict" not in ckpt:
        raise StoreError(
            f"{cls.__name__} checkpoint lacks 'kwargs' or 'state_dict' (has {sorted(ckpt)})"
        )
    # An argument added after the checkpoint was written takes the constructor's default, the
    # value the model was built with then (e.g. MDRNN's rewards="regress").
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    kwargs = {**defaults, **ckpt["kwargs"]}
    mismatches = [
        (name, kwargs.get(name), wanted)
        for name, wanted in (expect or {}).items()
        if kwargs.get(name) != wanted
    ]
    if mismatches:
        section = getattr(cls, "config_section", cls.__name__.lower())
        has = ", ".join(f"{name}={got!r}" for name, got, _ in mismatches)
        asks = ", ".join(f"{name}={wanted!r}" for name, _, wanted in mismatches)
        # Sizes a model shares with another (z_dim comes from V) are set in that model's section.
        keys = getattr(cls, "config_keys", {})
        settings = " ".join(
            f"{keys.get(name, f'{section}.{name}')}={got!r}" for name, got, _ in mismatches
        )
        raise CheckpointMismatchError(
            f"{cls.__name__} checkpoint has {has} but the config asks for {asks}; "
            f"retrain (force=[{section}]) or set {settings}"
        )
    model = cls(**kwargs)
    model.load_state_dict(ckpt["state_dict"])
    return model


def checkpoint_kwargs(path: Path) -> dict[str, Any]:
    """A checkpoint's constructor arguments, without reading its weights into memory (the
    tensors are memory-mapped, and never touched)."""
    if not Path(path).is_file():
        raise StoreError(f"the checkpoint {path} is missing")
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if "kwargs" not in ckpt:
        raise StoreError(f"{path} is not a model checkpoint (it has {sorted(ckpt)})")
    return dict(ckpt["kwargs"])


def controller_size(vae_model: Path, mdrnn_model: Path) -> dict[str, int]:
    """C's constructor arguments for a V and an M: V's z size and M's hidden size."""
    return {"z_dim": checkpoint_kwargs(vae_model)["z_dim"],
            "hidden_size": checkpoint_kwargs(mdrnn_model)["hidden_size"]}
