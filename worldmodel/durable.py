"""Durable files: the one place that writes and reads what a step leaves on disk.

Every file a step writes goes through here, so a kill, a full disk or a power cut leaves either
the old file or the new one, never half of one:

- `atomic_write` writes a temporary file beside the target (`.tmp-<name>`, a name no step's
  glob matches), flushes and fsyncs it, renames it over the target and fsyncs the directory,
  so the rename itself is on disk. Durability against a power cut holds only where the file
  system honours fsync; against a killed process it always holds.
- `append_jsonl` appends one JSON line and fsyncs it. `read_jsonl` drops a torn last line (a
  write cut short) with a warning instead of failing every later resume on it.
- `save_arrays` / `load_arrays` are the one schema for the .npz files of episodes and
  latents: named arrays, every one read in full on load, so zip's CRC-32 of each member is
  checked. A damaged file raises `DamagedFile`, naming it, never a raw BadZipFile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from worldmodel.errors import StoreError

log = logging.getLogger("worldmodel")

TMP_PREFIX = ".tmp-"


class DamagedFile(StoreError):
    """A stored file that is truncated, corrupted or inconsistent."""


def tmp_path(path: Path) -> Path:
    """Where `atomic_write` writes `path` before renaming it: same directory and suffix."""
    return path.with_name(TMP_PREFIX + path.name)


def remove_leftovers(directory: Path) -> int:
    """Delete the temporary files that writes cut short left under `directory`."""
    count = 0
    for leftover in directory.rglob(TMP_PREFIX + "*"):
        if leftover.is_file():
            leftover.unlink()
            count += 1
    return count


def set_aside(path: Path) -> Path:
    """Move a file that cannot be used out of its step's directory, next to it in the store
    (`.damaged-<directory>-<name>-<time>`): never deleted, and never part of the result."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.parent.parent / f".damaged-{path.parent.name}-{path.name}-{stamp}"
    os.replace(path, aside)
    return aside


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory
    finally:
        os.close(fd)


def replace_durably(tmp: Path, path: Path) -> None:
    """Move a finished temporary file (written by us or by another program) into place."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open `path` for writing so that readers see the old file or the whole new one."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: Path, data: Any) -> None:
    write_text(path, to_json(data))


def read_json(path: Path) -> Any:
    """A JSON file; a missing or damaged one raises DamagedFile naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DamagedFile(f"{path} cannot be read ({exc})") from exc


# --- JSON lines --------------------------------------------------------------------------------


def jsonl_line(row: dict) -> str:
    return json.dumps(row, default=float) + "\n"


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline (a write cut short), so an append starts clean."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    log.warning("%s ended in a torn line (%d bytes); dropped it", path, size - keep)


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line and fsync it: a kill loses at most the line being written."""
    path = Path(path)
    if path.exists():
        _drop_torn_tail(path)
    with open(path, "a") as f:
        f.write(jsonl_line(row))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file ([] if it does not exist), up to the first bad line.

    A last line that does not parse is a write cut short; a bad line before it is damage. Either
    way the rows from there on are dropped with a warning, and the caller sees which rows it
    has: a resumed step redoes what they lack.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            what = "its last line is torn" if number == len(lines) else (
                f"line {number} of {len(lines)} is damaged; ignoring it and the lines after it")
            log.warning("%s: %s (%s)", path, what, exc)
            break
        rows.append(row)
    return rows


def rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(jsonl_line(row) for row in rows))


# --- arrays (episodes, latents) ----------------------------------------------------------------


def save_arrays(path: Path, arrays: dict[str, np.ndarray], compress: bool) -> int:
    """Write named arrays to an .npz atomically; returns the file's size in bytes."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    return path.stat().st_size


def load_arrays(path: Path, fields: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """Read `fields` of an .npz in full (so every member's CRC-32 is checked).

    A file that is missing a field, cut short or changed raises DamagedFile naming it.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in fields if name not in data.files]
            if missing:
                raise DamagedFile(f"{what} {path} lacks {missing}")
            return {name: data[name] for name in fields}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DamagedFile(f"{what} {path} is damaged ({exc})") from exc


def read_array(path: Path, name: str, what: str) -> np.ndarray:
    """One member of an .npz (cheap for a small one such as rewards), CRC-checked."""
    return load_arrays(path, (name,), what)[name]
