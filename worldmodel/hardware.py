"""The one place that knows about devices.

`hardware=auto` picks CUDA if torch sees a GPU, else Apple's MPS, else the CPU. Asking for a
device that is missing stops the run with one line that names the fix. Numerics switches
(TF32, determinism) and thread counts are set here and nowhere else.

Nothing here enters a step's identity: a result computed on any device is the same result
in distribution. Bit for bit it is the same only on the same CPU model (or GPU), package
versions and thread count, which is why every manifest records them (`machine`).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from worldmodel import pool
from worldmodel.errors import HardwareError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class HardwareConfig:
    """The `hardware` config group."""

    device: str = "auto"
    """auto | cpu | cuda | mps. auto prefers cuda, then mps, then cpu."""
    threads: int | None = None
    """torch intra-op threads in the main process; null keeps torch's default (one per core)."""
    workers: int | None = None
    """Worker processes for environment work (collection, rollouts); null = one per CPU this
    process may use (`available_cpus`)."""
    envs_per_worker: int = 16
    """Environments one worker drives together in the real game: the rollouts of several
    CMA-ES candidates, through V, M and C in one batch. Every computation is per sample, so
    results do not depend on it; larger batches spread the models' per-call cost."""
    allow_tf32: bool = False
    """TF32 matmuls on CUDA: faster, less precise; some setups fail on it with
    CUBLAS_STATUS_NOT_INITIALIZED, hence off by default."""
    deterministic: bool = False
    """Ask torch for deterministic kernels (slower; errors on ops that have none)."""
    backend: str = "local"
    """Where worker tasks run: local (a process pool here) | ray (docs/cluster.md)."""
    ray_address: str | None = None
    """backend=ray: the cluster to join (auto, host:6379, ray://host:10001); null starts a
    local Ray instance with `workers` CPUs."""
    task_deadline_s: float | None = None
    """Seconds one worker task (an episode, a batch of rollouts, a video) may run before the
    run stops with an error naming it and its worker, its workers stopped and finished work
    kept; null = derived from the task's episode length (120 s + 0.05 s per frame,
    worldmodel.pool.task_deadline). Set it higher where honest tasks take longer than that;
    tasks run in the main process (workers=1) have no deadline."""


@dataclass(frozen=True)
class Hardware:
    """What a step gets: the resolved device, worker count and execution backend."""

    device: torch.device
    workers: int
    threads: int
    backend: str = "local"
    envs_per_worker: int = 16
    ray_address: str | None = None

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {
            "device": str(self.device),
            "workers": self.workers,
            "envs_per_worker": self.envs_per_worker,
            "threads": self.threads,
            "backend": self.backend,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            **machine(),
        }
        if self.ray_address is not None:
            info["ray_address"] = self.ray_address
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info


# The instruction-set extensions that pick torch's CPU kernels (and so the last bits of a
# float result); a virtual machine's model name alone ("Intel(R) Xeon(R) Processor") often
# does not tell two CPU generations apart.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
             "amx_int8", "neon", "asimd", "sve")


def cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (Linux); empty elsewhere."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model(fields: dict[str, str]) -> str:
    """The CPU's model name with its family/model/stepping numbers where the OS gives them."""
    name = fields.get("model name") or fields.get("Hardware") or sysctl("machdep.cpu.brand_string")
    numbers = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
    return (name or platform.processor() or "unknown") + (f" ({', '.join(numbers)})"
                                                          if numbers else "")


def cpu_flags(fields: dict[str, str]) -> list[str]:
    """Which of ISA_FLAGS the CPU has (x86 "flags" or ARM "Features" of /proc/cpuinfo)."""
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    return [flag for flag in ISA_FLAGS if flag in present]


def sysctl(query: str) -> str | None:
    try:
        return subprocess.run(["sysctl", "-n", query], capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def cpu() -> dict[str, str]:
    """This machine's CPU model and ISA flags, read once per process (they cannot change)."""
    fields = cpuinfo()
    return {"cpu_model": cpu_model(fields), "cpu_flags": " ".join(cpu_flags(fields))}


def machine() -> dict[str, object]:
    """Besides the thread count, what decides the last bits of a CPU result."""
    return {
        **cpu(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def available_cpus() -> int:
    """CPUs this process may run on: a SLURM job, taskset or a container's cpuset can allow
    fewer than the machine has, and one worker per machine core would oversubscribe them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def running_under_rosetta() -> bool:
    """True for an x86_64 Python translated by Rosetta 2 on an Apple Silicon Mac."""
    if platform.system() != "Darwin" or platform.machine() != "x86_64":
        return False
    return any(sysctl(query) == "1" for query in ("sysctl.proc_translated", "hw.optional.arm64"))


ROSETTA_WARNING = (
    "This Python is an x86_64 build running under Rosetta 2 on Apple Silicon: torch cannot "
    "use the GPU (MPS) and every step runs emulated on the CPU, several times slower. "
    "Install an arm64 Python (python.org installer or Homebrew), recreate .venv with it "
    "(rm -rf .venv; scripts/run.sh ...), and check that `python -c 'import platform; "
    "print(platform.machine())'` prints arm64."
)


def pick_device(requested: str) -> torch.device:
    """Resolve the device name to a torch.device, or explain why it is not available."""
    if requested not in DEVICES:
        raise HardwareError(
            f"hardware.device={requested!r} is not one of {', '.join(DEVICES)}; "
            "use hardware=auto"
        )
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        why = "sees no CUDA GPU" if torch.version.cuda else "is a CPU-only build"
        raise HardwareError(
            f"hardware=cuda, but torch {torch.__version__} {why}; "
            "run with hardware=cpu or hardware=auto"
        )
    if requested == "mps" and not mps_available():
        raise HardwareError(
            "hardware=mps, but torch cannot use Apple's MPS here (it needs an arm64 Python on "
            "an Apple Silicon Mac); run with hardware=cpu or hardware=auto"
        )
    return torch.device(requested)


def setup(cfg: HardwareConfig) -> Hardware:
    """Resolve `cfg` and apply its torch settings to this process."""
    if running_under_rosetta():
        log.warning("!" * 80)
        log.warning(ROSETTA_WARNING)
        log.warning("!" * 80)
    device = pick_device(cfg.device)
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise HardwareError(f"hardware.threads={cfg.threads} must be >= 1 or null")
        torch.set_num_threads(cfg.threads)
    if cfg.workers is not None and cfg.workers < 1:
        raise HardwareError(f"hardware.workers={cfg.workers} must be >= 1 or null")
    if cfg.envs_per_worker < 1:
        raise HardwareError(f"hardware.envs_per_worker={cfg.envs_per_worker} must be >= 1")
    if cfg.task_deadline_s is not None and not cfg.task_deadline_s > 0:
        raise HardwareError(f"hardware.task_deadline_s={cfg.task_deadline_s} must be > 0 "
                            "(seconds) or null")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.allow_tf32
        torch.backends.cudnn.allow_tf32 = cfg.allow_tf32
    if cfg.deterministic:
        # cuBLAS reads this when it initialises; it must be set before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Set both ways: a multirun runs its jobs in one process, one after another.
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.backends.cudnn.benchmark = False
    workers = cfg.workers or available_cpus()
    if cfg.backend not in pool.BACKENDS:
        raise HardwareError(f"hardware.backend={cfg.backend!r} is not one of "
                            f"{', '.join(pool.BACKENDS)}")
    if cfg.ray_address is not None and cfg.backend != "ray":
        log.warning("hardware.ray_address=%s is ignored: hardware.backend=%s", cfg.ray_address,
                    cfg.backend)
    # Set both ways, like the torch switches above: a multirun's jobs share this process.
    pool.use_backend(pool.Backend(cfg.backend, cfg.ray_address, cpus=workers,
                                  task_deadline_s=cfg.task_deadline_s))
    return Hardware(device=device, workers=workers, threads=torch.get_num_threads(),
                    backend=cfg.backend, ray_address=cfg.ray_address,
                    envs_per_worker=cfg.envs_per_worker)
