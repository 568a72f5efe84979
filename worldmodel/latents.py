"""Latent files: V's encoding of one episode per .npz, written and read through
worldmodel.durable.

The encode step turns episode i (worldmodel/episodes.py) of T steps into latents/ep_<i>.npz:

    mu          (T+1, z_dim) float16   mean of q(z | frame) for every frame
    logvar      (T+1, z_dim) float16   log-variance of q(z | frame)
    actions     (T, 3) float32         copied from the episode
    rewards     (T,) float32           copied from the episode
    terminated  () bool                copied from the episode
    truncated   () bool                copied from the episode

float16 halves the files at no cost that matters: M samples z from N(mu, exp(logvar)), whose
spread is far larger than float16's rounding (3 significant digits). The files are stored
uncompressed because half-precision noise hardly compresses, and they load faster so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodel import durable

FIELDS = ("mu", "logvar", "actions", "rewards", "terminated", "truncated")
LATENT_DTYPE = np.float16


class DamagedLatents(durable.DamagedFile):
    """A latent file that is truncated, corrupted or inconsistent."""


@dataclass
class Latents:
    mu: np.ndarray
    logvar: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool
    truncated: bool

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def z_dim(self) -> int:
        return self.mu.shape[1]


def latent_path(directory: Path, index: int) -> Path:
    """Same name as the episode it encodes: latents/ep_000007.npz for episodes/ep_000007.npz."""
    return directory / f"ep_{index:06d}.npz"


def save_latents(path: Path, latents: Latents) -> int:
    """Write `latents` to `path` atomically; returns the file's size in bytes."""
    check_latents(latents, path)
    return durable.save_arrays(path, {
        "mu": latents.mu,
        "logvar": latents.logvar,
        "actions": latents.actions,
        "rewards": latents.rewards,
        "terminated": np.bool_(latents.terminated),
        "truncated": np.bool_(latents.truncated),
    }, compress=False)


def load_latents(path: Path, z_dim: int | None = None) -> Latents:
    """Read and validate one latent file; a damaged file raises DamagedLatents naming it.

    With `z_dim`, a file of another latent size is refused too.
    """
    try:
        arrays = durable.load_arrays(path, FIELDS, "latent file")
    except durable.DamagedFile as exc:
        raise DamagedLatents(str(exc)) from exc
    latents = Latents(
        mu=arrays["mu"],
        logvar=arrays["logvar"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        terminated=bool(arrays["terminated"]),
        truncated=bool(arrays["truncated"]),
    )
    check_latents(latents, path, z_dim)
    return latents


def check_latents(latents: Latents, path: Path, z_dim: int | None = None) -> None:
    t = len(latents.actions)
    problems = []
    for name in ("mu", "logvar"):
        array = getattr(latents, name)
        if array.dtype != LATENT_DTYPE or array.ndim != 2:
            problems.append(f"{name} is {array.dtype} {array.shape}")
        elif len(array) != t + 1:
            problems.append(f"{name} has {len(array)} rows for {t} actions (expected {t + 1})")
        elif z_dim is not None and array.shape[1] != z_dim:
            problems.append(f"{name} has z_dim {array.shape[1]}, expected {z_dim}")
        elif not np.isfinite(array).all():
            problems.append(f"{name} is not finite everywhere")
    if not problems and latents.mu.shape != latents.logvar.shape:
        problems.append(f"mu {latents.mu.shape} and logvar {latents.logvar.shape} differ")
    if latents.actions.shape != (t, 3):
        problems.append(f"actions have shape {latents.actions.shape}")
    if latents.rewards.shape != (t,):
        problems.append(f"rewards have shape {latents.rewards.shape} for {t} actions")
    if problems:
        raise DamagedLatents(f"latent file {path} is inconsistent: {'; '.join(problems)}")


def latent_steps(path: Path) -> int:
    """Transitions of a latent file, reading only its small rewards array."""
    try:
        return len(durable.read_array(path, "rewards", "latent file"))
    except durable.DamagedFile as exc:
        raise DamagedLatents(str(exc)) from exc
