"""The step store: finished step results, addressed by their identity.

A step's identity (its *key*) is a hash of the step's name and version, the slice of the
configuration it reads, and the keys of its upstream steps. Nothing else enters it: in
particular not `hardware`, so the same VAE trained on a CPU or a GPU is the same result.

Layout under `paths.store`::

    <step>/<key>/                 a finished result: the step's files + manifest.json
    <step>/.staging-<key>/        a result being made; kept across a kill so the step resumes
    <step>/.lock-<key>            held by the process computing <key>; others wait, then reuse
    <step>/.broken-<key>-<time>/  a finished result that failed its check, moved aside

A result becomes visible only by renaming its staging directory into place after the
manifest is written, so a directory named by a bare key is always complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldmodel import durable
from worldmodel.errors import StoreError

MANIFEST = "manifest.json"
VERIFY_MODES = ("hash", "size")
LOCK_REPORT_S = 30.0  # how often a run waiting on another run's lock says whom it waits for


def step_key(name: str, version: int, config: dict[str, Any], inputs: dict[str, str]) -> str:
    """The identity of a step result: 16 hex digits of a sha256 over what determines it."""
    identity = {"step": name, "version": version, "config": config, "inputs": inputs}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_files(root: Path, with_hash: bool = True) -> dict[str, dict[str, Any]]:
    """Every file under `root` (but the manifest) with its size and, optionally, sha256."""
    files = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name == MANIFEST:
            continue
        entry: dict[str, Any] = {"bytes": path.stat().st_size}
        if with_hash:
            entry["sha256"] = file_digest(path)
        files[path.relative_to(root).as_posix()] = entry
    return files


def describe_difference(stored: Any, current: Any, where: str = "") -> str | None:
    """The first place two JSON-like values differ, as 'a.b: stored X, now Y'."""
    if isinstance(stored, dict) and isinstance(current, dict):
        for k in sorted(set(stored) | set(current), key=str):
            here = f"{where}.{k}" if where else str(k)
            if k not in stored:
                return f"{here}: not in the stored config, now {current[k]!r}"
            if k not in current:
                return f"{here}: stored {stored[k]!r}, not in the current config"
            found = describe_difference(stored[k], current[k], here)
            if found:
                return found
        return None
    if stored != current:
        return f"{where or 'value'}: stored {stored!r}, now {current!r}"
    return None


def read_holder(lock_path: Path) -> dict[str, Any] | None:
    """What the process holding a lock wrote into it: pid, host, step, key, since."""
    try:
        holder = json.loads(lock_path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


@dataclass(frozen=True)
class Damage:
    """Why a stored result failed its check; `files` are the bad ones (None: all suspect)."""

    message: str
    files: list[str] | None = None


@dataclass(frozen=True)
class Artifact:
    """A finished step result: where its files are and what its manifest says."""

    step: str
    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})


class Store:
    """Finished and in-progress step results under one root directory."""

    def __init__(self, root: Path | str, verify: str = "hash"):
        if verify not in VERIFY_MODES:
            raise StoreError(f"verify={verify!r} is not one of {VERIFY_MODES}; use verify=hash")
        self.root = Path(root).absolute()
        self.verify = verify

    def final_dir(self, step: str, key: str) -> Path:
        return self.root / step / key

    def staging_dir(self, step: str, key: str) -> Path:
        return self.root / step / f".staging-{key}"

    @contextlib.contextmanager
    def lock(self, step: str, key: str, on_wait=None, every: float = LOCK_REPORT_S
             ) -> Iterator[None]:
        """Hold the lock on (step, key) so two processes never compute it at once.

        While another process holds it, `on_wait(holder)` is called at once and then every
        `every` seconds, with what the holder wrote into the lock file (its pid, host, step and
        since when; None if unreadable). The OS releases the lock of a killed process.
        """
        path = self.root / step / f".lock-{key}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            reported = None
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    now = time.monotonic()
                    if on_wait and (reported is None or now - reported >= every):
                        on_wait(read_holder(path))
                        reported = now
                    time.sleep(0.2)
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "step": step,
                      "key": key, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def find(
        self, step: str, key: str, config: dict[str, Any], inputs: dict[str, str]
    ) -> tuple[Artifact | None, Damage | None]:
        """The stored result for (step, key) if it passes its check.

        Returns (artifact, None) when it is usable, (None, None) when nothing is stored, and
        (None, damage) when something is stored but its files are missing or damaged.
        A manifest made from a different configuration than its key says is not a damaged
        file but a store that was edited by hand: that raises, naming the difference.
        """
        final = self.final_dir(step, key)
        if not final.exists():
            return None, None
        try:
            manifest = json.loads((final / MANIFEST).read_text())
        except FileNotFoundError:
            return None, Damage(f"{final / MANIFEST} is missing")
        except (OSError, ValueError) as exc:
            return None, Damage(f"{final / MANIFEST} is unreadable ({exc})")
        for field, current in (("config", config), ("inputs", inputs)):
            difference = describe_difference(manifest.get(field), current)
            if difference:
                raise StoreError(
                    f"the stored {step} result {final} was made with a different {field} than "
                    f"its key says ({difference}); the store was changed by hand. Delete that "
                    f"directory or run with force=[{step}] to recompute it."
                )
        damage = self._check_files(final, manifest.get("files", {}))
        if damage:
            return None, damage
        return Artifact(step, key, final, manifest), None

    def peek(self, step: str, key: str) -> dict[str, Any] | None:
        """The manifest of a finished result, without checking its files; None if absent."""
        try:
            return json.loads((self.final_dir(step, key) / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def _check_files(self, final: Path, files: dict[str, dict[str, Any]]) -> Damage | None:
        problems: dict[str, str] = {}
        for rel, entry in files.items():
            path = final / rel
            if not path.is_file():
                problems[rel] = "is missing"
            elif (size := path.stat().st_size) != entry["bytes"]:
                problems[rel] = f"has {size} bytes, the manifest says {entry['bytes']}"
            elif self.verify == "hash" and file_digest(path) != entry["sha256"]:
                problems[rel] = "does not match its sha256 in the manifest (the file was changed)"
        if not problems:
            return None
        first = next(iter(problems))
        more = f" (and {len(problems) - 1} more files)" if len(problems) > 1 else ""
        return Damage(f"{final / first} {problems[first]}{more}", files=sorted(problems))

    def repair(self, step: str, key: str, damage: Damage) -> str:
        """Get a damaged result out of the way so the step can make it again.

        When the manifest names the damaged files, only those are moved aside and the rest
        becomes the step's staging directory: the step then redoes just what is missing (a
        few episodes, not the whole dataset). Otherwise the whole result is moved aside.
        Nothing is deleted. Returns what was done, for the log.
        """
        final = self.final_dir(step, key)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = final.with_name(f".broken-{key}-{stamp}")
        staging = self.staging_dir(step, key)
        if damage.files is None or staging.exists():
            os.replace(final, aside)
            return f"moved it to {aside}; recomputing"
        for rel in damage.files:
            if (final / rel).exists():
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(final / rel, aside / rel)
        (final / MANIFEST).unlink()
        os.replace(final, staging)
        return (f"moved the damaged files to {aside}; the step redoes only what is missing "
                f"in {staging}")

    def commit(self, step: str, key: str, manifest: dict[str, Any]) -> Artifact:
        """Seal the staging directory of (step, key) and move it into place.

        The manifest lists every file with its size and sha256. If a result for the key
        already exists (a forced recompute), it is replaced only after the new one is sealed.
        """
        staging = self.staging_dir(step, key)
        durable.remove_leftovers(staging)  # temporary files of writes a kill cut short
        manifest = dict(manifest, files=list_files(staging))
        durable.write_json(staging / MANIFEST, manifest)
        final = self.final_dir(step, key)
        old = None
        if final.exists():
            old = final.with_name(f".replaced-{key}-{time.time_ns()}")
            os.replace(final, old)
        os.replace(staging, final)
        durable.fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return Artifact(step, key, final, manifest)
