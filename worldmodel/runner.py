"""Runs a table of steps: works out what is stored, what must run, and records the run.

For each step of the table (in order) the runner computes its key from its config slice and
its upstream keys, then:

- a step that is asked for (`steps`), or needed by a step that must run, is looked up in the
  store; a result that passes its check is *reused*;
- otherwise it *runs* in its staging directory (resuming whatever a killed run left there)
  and is committed to the store with its manifest;
- `force=[X]` recomputes X and everything downstream of X.

After every step the run directory's `summary.json` is rewritten, so a run that dies still
says what it finished.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from worldmodel import durable, layout, seeding, tracking
from worldmodel.config import config_slice, drop_keys, typed
from worldmodel.errors import ConfigError, StoreError
from worldmodel.hardware import Hardware, cpu
from worldmodel.store import Artifact, Store, step_key

log = logging.getLogger("worldmodel")

PACKAGES = ("worldmodel", "torch", "numpy", "gymnasium", "cma", "hydra-core", "omegaconf")


@dataclass(frozen=True)
class Step:
    """One row of the pipeline table."""

    name: str
    run: Callable[[StepContext], dict[str, Any] | None]
    """Does the work in ctx.dir; returns metrics (JSON-able) for the manifest and summary."""
    inputs: tuple[str, ...] = ()
    """Upstream steps whose results this step reads."""
    reads: tuple[str, ...] = ()
    """Top-level config keys forming the step's slice (part of its identity)."""
    config: type | None = None
    """Dataclass the slice is typed into; None passes the plain dict."""
    writes: tuple[str, ...] = ()
    """Glob patterns (relative to the step's directory) that must match after it ran."""
    version: int = 1
    """Bump when a code change makes old results wrong: old keys stop matching."""
    not_in_identity: tuple[str, ...] = ()
    """Dotted keys in the slice that change speed, not results (e.g. env.renderer)."""
    added: tuple[tuple[str, Any], ...] = ()
    """(dotted key, value) pairs that stay out of the identity while the key holds that value:
    a setting added after the step's first results, at the value that computes what the step
    computed before it (results stored before it existed keep their keys); or each of several
    values that compute the same results (env.renderer fast and stock)."""
    kind: str = ""
    """The step function's own name ("vae" for the row vae_r2); "" means `name`. Steps find
    their inputs by kind (StepContext.input), so one function serves every round."""
    round: int = 0
    """Which round of the iterative procedure the row belongs to (pipeline.table)."""
    overlay: str | None = None
    """A config section merged over the slice (rounds after the first read `rounds`)."""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.name)

    def config_slice(self, cfg: DictConfig) -> dict[str, Any]:
        """The config this row reads: its `reads`, with its overlay merged over them."""
        return config_slice(cfg, self.reads, self.overlay)


@dataclass
class StepContext:
    """What a step function gets: its typed config, its directory, its inputs."""

    name: str
    config: Any
    dir: Path
    inputs: dict[str, Artifact]
    hardware: Hardware
    seed: int
    log: logging.Logger = field(repr=False)
    tracker: tracking.Tracker = field(default_factory=tracking.Tracker, repr=False)
    kinds: dict[str, str] = field(default_factory=dict)
    """Step kind of every input (by row name); an input missing here is its own kind."""
    kind: str = ""
    """This row's kind ("" means `name`): its metrics are named after it (vae/loss in every
    round), so one reader serves every round."""
    round: int = 0

    def inputs_of(self, kind: str) -> list[Artifact]:
        """Every input of this kind, in the row's order (rounds ascending)."""
        return [a for name, a in self.inputs.items() if self.kinds.get(name, name) == kind]

    def previous_round(self) -> Artifact | None:
        """This step's result in the round before, which a later round's row reads (the
        model it starts from, the search it continues); None in round 0."""
        found = self.inputs_of(self.kind or self.name)
        return found[-1] if found else None

    def input(self, kind: str) -> Artifact:
        """The input of this kind from the latest round the row reads (the only one, in most
        rows: vae_r2's "vae" input is vae_r1, the model it starts from)."""
        found = self.inputs_of(kind)
        if not found:
            raise StoreError(f"step {self.name} has no {kind} input (pipeline.py)")
        return found[-1]

    def rng(self, *path: int | str) -> np.random.Generator:
        """A random stream of this step, e.g. ctx.rng("episode", 3)."""
        return seeding.generator(self.seed, self.name, *path)

    def derive_seed(self, *path: int | str) -> int:
        return seeding.derive_seed(self.seed, self.name, *path)

    def log_metrics(self, metrics: dict[str, Any], **index: Any) -> dict[str, Any]:
        """Append one JSON line to metrics.jsonl, names prefixed with the step's kind
        (vae/loss), and the round after the first; returns the row."""
        row = dict(index)
        if self.round:
            row["round"] = self.round
        prefix = self.kind or self.name
        row.update({f"{prefix}/{k}": v for k, v in metrics.items()})
        row["time"] = time.time()
        durable.append_jsonl(self.dir / layout.METRICS, row)
        self.tracker.log_row(row)
        return row


def select_steps(table: Sequence[Step], requested: Any, what: str) -> list[str]:
    """Normalise `steps=` / `force=` ("all", a name, or a list of names) to step names."""
    names = [s.name for s in table]
    if requested is None:
        return []
    if isinstance(requested, str):
        requested = names if requested == "all" else [requested]
    requested = list(requested)
    if "all" in requested:
        return names
    unknown = [r for r in requested if r not in names]
    if unknown:
        raise ConfigError(
            f"{what}={requested}: unknown step {', '.join(map(str, unknown))}; "
            f"the steps are {', '.join(names)} (or all)"
        )
    return requested


def descendants(table: Sequence[Step], roots: list[str]) -> set[str]:
    """`roots` and every step downstream of them."""
    found = set(roots)
    for step in table:  # the table is in dependency order
        if any(up in found for up in step.inputs):
            found.add(step.name)
    return found


def check_table(table: Sequence[Step]) -> None:
    seen: set[str] = set()
    for step in table:
        if step.name in seen or step.name == "run":
            raise ValueError(f"step name {step.name!r} is reserved or used twice")
        missing = [up for up in step.inputs if up not in seen]
        if missing:
            raise ValueError(f"step {step.name!r} reads {missing}, which must come before it")
        seen.add(step.name)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The source tree's commit (with '+dirty' for local changes), if it is a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def mark_killed_runs(outputs: Path, current: Path) -> list[Path]:
    """Runs under `outputs` whose summary says "running" but whose process is gone: killed
    (SIGKILL, out of memory, a power cut) before they could say so. Their summary becomes
    "killed" and each is logged once. Runs of other hosts are left alone: their process
    cannot be looked up from here."""
    killed = []
    host = socket.gethostname()
    for path in sorted([*outputs.glob("runs/*/summary.json"),
                        *outputs.glob("multiruns/*/*/summary.json")]):
        if path.parent == current:
            continue
        try:
            summary = durable.read_json(path)
            record = summary["run"]
        except (durable.DamagedFile, KeyError, TypeError):
            continue
        pid = record.get("pid")
        if (record.get("status") != "running" or record.get("host") != host
                or not isinstance(pid, int) or process_alive(pid)):
            continue
        record["status"] = "killed"
        where = f" while computing {record['computing']}" if record.get("computing") else ""
        durable.write_json(path, summary)
        log.warning("the run in %s was killed%s (process %d is gone); what it finished is "
                    "stored, and running its command again resumes the rest", path.parent,
                    where, pid)
        killed.append(path.parent)
    return killed


class Runner:
    """Executes a step table against one composed config."""

    def __init__(
        self,
        table: Sequence[Step],
        cfg: DictConfig,
        hardware: Hardware,
        store: Store,
        run_dir: Path,
        tracker: tracking.Tracker | None = None,
    ):
        check_table(table)
        self.table = list(table)
        self.by_name = {s.name: s for s in self.table}
        self.cfg = cfg
        self.hardware = hardware
        self.store = store
        self.run_dir = Path(run_dir).absolute()
        self.tracker = tracker or tracking.Tracker()
        self.summary: dict[str, Any] = {}
        self._checked: dict[str, Artifact] = {}
        self._told_other_cpu = False

    def keys(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every step's (key, identity slice), computed from config alone, in table order."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for step in self.table:
            identity = drop_keys(step.config_slice(self.cfg), step.not_in_identity,
                                 step.added)
            inputs = {up: out[up][0] for up in step.inputs}
            out[step.name] = (step_key(step.name, step.version, identity, inputs), identity)
        return out

    def check_configs(self) -> None:
        """Type every step's config slice now: a bad value anywhere stops the run with one
        line before any step runs, not after an hour of the steps before it. An overlay
        section may only hold sections its rows read (a misspelt one would be ignored)."""
        overlays: dict[str, set[str]] = {}
        for step in self.table:
            if step.overlay:
                overlays.setdefault(step.overlay, set()).update(step.reads)
        for overlay, read in overlays.items():
            given = config_slice(self.cfg, (overlay,))[overlay] or {}
            unknown = sorted(set(given) - (read - {"seed"}))
            if unknown:
                raise ConfigError(
                    f"{overlay}.{unknown[0]}: not a config section that the steps of rounds "
                    f"after the first read; {overlay} may set {', '.join(sorted(read - {'seed'}))}")
        for step in self.table:
            if not step.config:
                continue
            try:
                typed(step.config, step.config_slice(self.cfg), f"step {step.name}")
            except ConfigError as exc:
                if not step.overlay:
                    raise
                raise ConfigError(f"{exc} [step {step.name}: {step.overlay}.<section> is merged "
                                  f"over <section> there, so the value may come from "
                                  f"{step.overlay}]") from exc

    def run(self, requested: Any = "all", force: Any = ()) -> dict[str, Any]:
        wanted = select_steps(self.table, requested, "steps")
        forced = descendants(self.table, select_steps(self.table, force, "force"))
        self.check_configs()
        # Forcing a step asks for everything downstream of it too.
        wanted = [s.name for s in self.table if s.name in set(wanted) | forced]
        keys = self.keys()
        self.summary = {"run": self._run_record(wanted, forced)}
        self._write_summary()
        started = time.perf_counter()
        try:
            self._run_wanted(wanted, forced, keys)
        except KeyboardInterrupt:
            self._finish("interrupted", started)
            log.error("interrupted; finished steps are stored and a step's partial work is kept. "
                      "Run the same command again to resume.")
            raise
        except BaseException:
            self._finish("failed", started)
            raise
        self._finish("complete", started)
        return self.summary

    def _run_wanted(self, wanted: list[str], forced: set[str], keys: dict) -> None:
        artifacts: dict[str, Artifact] = {}
        needed = self._order(wanted, forced, keys)
        upstream = self._upstream(wanted)
        for step in self.table:
            key, identity = keys[step.name]
            if step.name in needed:
                input_keys = {up: keys[up][0] for up in step.inputs}
                artifacts[step.name] = self._materialise(
                    step, key, identity, input_keys, artifacts, step.name in forced
                )
            elif step.name in upstream:
                self._record_unneeded(step.name, key)

    def _upstream(self, names: list[str]) -> set[str]:
        found: set[str] = set()
        for step in reversed(self.table):
            if step.name in names or step.name in found:
                found.update(step.inputs)
        return found

    def _record_unneeded(self, name: str, key: str) -> None:
        """Put a stored upstream result that this run did not need into the summary.

        Its files are not checked (nothing reads them in this run), so a run of the last step
        does not hash the whole dataset; the summary still shows the whole chain.
        """
        manifest = self.store.peek(name, key)
        if manifest is None:
            log.info("[%s] not stored, and not needed: what it feeds is stored", name)
            return
        path = self.store.final_dir(name, key)
        log.info("[%s] reused (not needed in this run) -> %s", name, path)
        self.summary[name] = self._summary_entry(key, path, True, 0.0, manifest)
        self._write_summary()

    def _order(self, wanted: list[str], forced: set[str], keys: dict) -> list[str]:
        """The steps to materialise: the wanted ones, plus upstream of those that must run.

        Upstream of a stored step is not materialised: a run that only needs the final
        controller must not recollect a dataset that was deleted to save disk.
        """
        needed = set(wanted)
        for step in reversed(self.table):
            if step.name not in needed:
                continue
            key, identity = keys[step.name]
            input_keys = {up: keys[up][0] for up in step.inputs}
            if step.name in forced or not self._usable(step.name, key, identity, input_keys):
                needed.update(step.inputs)
        return [s.name for s in self.table if s.name in needed]

    def _usable(self, name: str, key: str, identity: dict, input_keys: dict) -> bool:
        try:
            artifact, _ = self.store.find(name, key, identity, input_keys)
        except StoreError:
            return False  # _materialise raises it again, at the step it concerns
        if artifact is not None:
            self._checked[name] = artifact  # so its files are hashed once per run, not twice
        return artifact is not None

    def _materialise(
        self,
        step: Step,
        key: str,
        identity: dict,
        input_keys: dict[str, str],
        artifacts: dict[str, Artifact],
        force: bool,
    ) -> Artifact:
        started = time.perf_counter()

        def waiting(holder: dict | None) -> None:
            who = (f"process {holder.get('pid')} on {holder.get('host')} (since "
                   f"{holder.get('since')})" if holder else "another process")
            log.info("[%s] %s is computing %s %s; waiting for it", step.name, who, step.name,
                     key)

        with self.store.lock(step.name, key, on_wait=waiting):
            artifact = None if force else self._checked.pop(step.name, None)
            if not force and (artifact is None or not artifact.path.exists()):
                artifact, damage = self.store.find(step.name, key, identity, input_keys)
                if damage:
                    action = self.store.repair(step.name, key, damage)
                    log.warning("[%s] stored result failed its check: %s; %s.",
                                step.name, damage.message, action)
            reused = artifact is not None
            if artifact is None:
                # Every input of a step that must run was materialised before it (see _order).
                inputs = {up: artifacts[up] for up in step.inputs}
                self.summary["run"]["computing"] = step.name
                self._write_summary()
                artifact = self._compute(step, key, identity, inputs, force)
                self.summary["run"].pop("computing")
        seconds = time.perf_counter() - started
        if reused:
            self._tell_other_cpu(step.name, artifact.manifest)
        verb = "reused" if reused else f"ran in {seconds:.1f} s"
        log.info("[%s] %s -> %s", step.name, verb, artifact.path)
        self.summary[step.name] = self._summary_entry(
            key, artifact.path, reused, seconds, artifact.manifest
        )
        self._write_summary()
        self.tracker.log_result(step.name, artifact.path, artifact.metrics, reused)
        return artifact

    def _tell_other_cpu(self, name: str, manifest: dict) -> None:
        """Say once per run that a reused result was made on another CPU model: equal to what
        this machine would compute in distribution, not bit for bit (README, Reproducibility)."""
        made_on = manifest.get("hardware", {}).get("cpu_model")
        here = cpu()["cpu_model"]
        if self._told_other_cpu or made_on is None or made_on == here:
            return
        self._told_other_cpu = True
        log.info("[%s] reuses a result made on another CPU model (%s; this machine: %s): "
                 "recomputing it here would give equal results in distribution, not bit for "
                 "bit; later steps may reuse such results too", name, made_on, here)

    @staticmethod
    def _summary_entry(key: str, path: Path, reused: bool, seconds: float, manifest: dict) -> dict:
        # The runner's own fields come last: a step metric named like one never hides it.
        return {
            **manifest.get("metrics", {}),
            "key": key,
            "path": str(path),
            "reused": reused,
            "seconds": round(seconds, 3),
            "compute_seconds": manifest.get("seconds"),
        }

    def _compute(
        self, step: Step, key: str, identity: dict, inputs: dict[str, Artifact], force: bool
    ) -> Artifact:
        staging = self.store.staging_dir(step.name, key)
        if force and staging.exists():
            shutil.rmtree(staging)
        if staging.exists() and any(staging.iterdir()):
            log.info("[%s] resuming the partial result in %s", step.name, staging)
        else:
            log.info("[%s] running (key %s) in %s", step.name, key, staging)
        staging.mkdir(parents=True, exist_ok=True)
        full_slice = step.config_slice(self.cfg)
        config = typed(step.config, full_slice, f"step {step.name}") if step.config else full_slice
        ctx = StepContext(
            name=step.name,
            config=config,
            dir=staging,
            inputs=inputs,
            hardware=self.hardware,
            seed=int(self.cfg.get("seed", 0)),
            log=logging.getLogger(f"worldmodel.{step.name}"),
            tracker=self.tracker,
            kinds={up: self.by_name[up].kind for up in inputs},
            kind=step.kind,
            round=step.round,
        )
        started_at = time.time()
        started = time.perf_counter()
        metrics = step.run(ctx) or {}
        seconds = time.perf_counter() - started
        missing = [pattern for pattern in step.writes if not any(staging.glob(pattern))]
        if missing:
            raise RuntimeError(f"step {step.name} finished without writing {missing}")
        manifest = {
            "step": step.name,
            "key": key,
            "version": step.version,
            "config": identity,
            "inputs": {up: a.key for up, a in inputs.items()},
            "metrics": metrics,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started_at)),
            "seconds": round(seconds, 3),
            "hardware": self.hardware.describe(),
            "versions": package_versions(),
            "git_commit": git_commit(),
        }
        return self.store.commit(step.name, key, manifest)

    def _run_record(self, wanted: list[str], forced: set[str]) -> dict[str, Any]:
        return {
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "steps": wanted,
            "forced": sorted(forced),
            "seed": self.cfg.get("seed"),
            "store": str(self.store.root),
            "hardware": self.hardware.describe(),
            "command": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": package_versions(),
            "git_commit": git_commit(),
        }

    def _finish(self, status: str, started: float) -> None:
        self.summary["run"]["status"] = status
        self.summary["run"]["seconds"] = round(time.perf_counter() - started, 3)
        self._write_summary()

    def _write_summary(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        durable.write_json(self.run_dir / "summary.json", self.summary)
