"""Episode files: one compressed .npz per episode, written and read through worldmodel.durable.

An episode of T steps holds

    frames      (T+1, S, S, 3) uint8   observation before each action, and the last one
    actions     (T, 3) float32         steer, gas, brake
    rewards     (T,) float32           reward after each action
    terminated  ()  bool               the episode ended (all tiles visited, or off the playfield)
    truncated   ()  bool               the episode was cut at its step limit
    lap_finished () bool               every tile was visited

One file per episode lets later steps stream a dataset far larger than memory, and lets a
killed collection resume by skipping the files that exist.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodel import durable

FIELDS = ("frames", "actions", "rewards", "terminated", "truncated", "lap_finished")


class DamagedEpisode(durable.DamagedFile):
    """An episode file that is truncated, corrupted or inconsistent."""


@dataclass
class Episode:
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool
    truncated: bool
    lap_finished: bool

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))


def episode_files(directories: list[Path]) -> list[Path]:
    """Every episode file in `directories`, sorted by name. Names are unique across them: a
    later round's collect numbers its episodes after the earlier rounds' (pipeline.py)."""
    paths = sorted((p for d in directories for p in d.glob("ep_*.npz")), key=lambda p: p.name)
    twice = sorted(name for name, n in Counter(p.name for p in paths).items() if n > 1)
    if twice:
        raise DamagedEpisode(f"episode files {', '.join(twice[:3])} appear in more than one of "
                             f"{', '.join(map(str, directories))}")
    return paths


def episode_path(directory: Path, index: int) -> Path:
    return directory / f"ep_{index:06d}.npz"


def episode_index(path: Path) -> int:
    return int(path.stem.split("_")[1])


def save_episode(path: Path, episode: Episode) -> int:
    """Write `episode` to `path` atomically; returns the file's size in bytes."""
    check_episode(episode, path)
    return durable.save_arrays(path, {
        "frames": episode.frames,
        "actions": episode.actions,
        "rewards": episode.rewards,
        "terminated": np.bool_(episode.terminated),
        "truncated": np.bool_(episode.truncated),
        "lap_finished": np.bool_(episode.lap_finished),
    }, compress=True)


def load_episode(path: Path) -> Episode:
    """Read and validate one episode; a damaged file raises DamagedEpisode naming it."""
    try:
        arrays = durable.load_arrays(path, FIELDS, "episode file")
    except durable.DamagedFile as exc:
        raise DamagedEpisode(str(exc)) from exc
    episode = Episode(
        frames=arrays["frames"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        terminated=bool(arrays["terminated"]),
        truncated=bool(arrays["truncated"]),
        lap_finished=bool(arrays["lap_finished"]),
    )
    check_episode(episode, path)
    return episode


def check_episode(episode: Episode, path: Path) -> None:
    t = len(episode.actions)
    problems = []
    if episode.frames.dtype != np.uint8 or episode.frames.ndim != 4:
        problems.append(f"frames are {episode.frames.dtype} {episode.frames.shape}")
    elif len(episode.frames) != t + 1:
        problems.append(f"{len(episode.frames)} frames for {t} actions (expected {t + 1})")
    if episode.actions.shape != (t, 3):
        problems.append(f"actions have shape {episode.actions.shape}")
    if episode.rewards.shape != (t,):
        problems.append(f"rewards have shape {episode.rewards.shape} for {t} actions")
    if problems:
        raise DamagedEpisode(f"episode file {path} is inconsistent: {'; '.join(problems)}")


def episode_steps(path: Path) -> int:
    """Steps of an episode file, reading only its small rewards array (not the frames)."""
    try:
        return len(durable.read_array(path, "rewards", "episode file"))
    except durable.DamagedFile as exc:
        raise DamagedEpisode(str(exc)) from exc
