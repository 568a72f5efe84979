"""One benchmark of the whole project on this machine: every number from one run, with its settings.

    .venv/bin/python scripts/bench.py            # the full run (a few minutes on 2 CPU cores)
    .venv/bin/python scripts/bench.py --quick    # tiny sizes, seconds (what the test runs)
    .venv/bin/python scripts/bench.py --json     # JSON instead of the markdown table

Each measurement runs in its own Python process (`--only NAME`), so its peak memory is its own:
the process's peak resident set size (getrusage ru_maxrss, which includes the ~300 MB of torch
and the other imports). The worker pool's processes are not children that getrusage sees (they
are forked from a forkserver), so their peak RSS (VmHWM) is sampled from /proc while they run.

Models are untrained and paper-size: V with z = 32, M with 256 LSTM units and 5 Gaussians, C
random. Speed does not depend on the weights, except how long episodes last: untrained C never
finishes a lap, but it may leave the playfield, so an episode runs to max_steps or ends early.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from worldmodel.dream import dream_rollouts, warm_up
from worldmodel.envs import EnvConfig
from worldmodel.models import MDRNN, VAE, Controller, checkpoint
from worldmodel.pool import keep_workers
from worldmodel.rollout import AgentFiles, DriveSettings, drive, load_agent, one_torch_thread
from worldmodel.steps import mdrnn as mdrnn_step
from worldmodel.steps import vae as vae_step
from worldmodel.steps.controller import drive_mean_returns, rollout_tracks
from worldmodel.workers import ONE_THREAD_ENV

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import compare_renderers  # noqa: E402  (a script next to this one)

Z_DIM, HIDDEN = 32, 256

# Settings of each measurement: the full run, and --quick (tiny, for the test).
FULL = {
    "env": {"seeds": 4, "steps": 500, "policy": "repeat"},
    "population": {"population": 4, "rollouts": 2, "max_steps": 250, "workers": 2},
    "controller": {"population": 16, "rollouts": 2, "max_steps": 400, "workers": 2,
                   "action_repeat": 2},
    "step_time": {"max_steps": 300, "action_repeat": 2},
    "repeat": {"tracks": 2, "max_steps": 1000, "action_repeat": 4},
    "dream": {"population": 64, "rollouts": 16, "horizon": 200, "repeats": 3},
    "vae": {"batch_size": 100, "batches": 60, "warmup_batches": 3},
    "mdrnn": {"batch_size": 100, "seq_len": 100, "batches": 30, "warmup_batches": 2},
}
QUICK = {
    "env": {"seeds": 1, "steps": 40, "policy": "repeat"},
    "population": {"population": 2, "rollouts": 2, "max_steps": 30, "workers": 2},
    "controller": {"population": 4, "rollouts": 2, "max_steps": 30, "workers": 2,
                   "action_repeat": 2},
    "step_time": {"max_steps": 20, "action_repeat": 2},
    "repeat": {"tracks": 1, "max_steps": 40, "action_repeat": 4},
    "dream": {"population": 4, "rollouts": 2, "horizon": 20, "repeats": 1},
    "vae": {"batch_size": 8, "batches": 3, "warmup_batches": 1},
    "mdrnn": {"batch_size": 4, "seq_len": 10, "batches": 3, "warmup_batches": 1},
}


def peak_rss_mb() -> float:
    """This process's peak resident set size (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


class WorkerMemory:
    """Samples the peak RSS (VmHWM) of every process that is not this one but shares its
    process group, i.e. the pool's forkserver and workers, every `period` seconds (Linux)."""

    def __init__(self, period: float = 0.05) -> None:
        self.period, self.peaks, self.stop = period, {}, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        me, group = os.getpid(), os.getpgrp()
        while not self.stop.is_set():
            for entry in Path("/proc").glob("[0-9]*"):
                pid = int(entry.name)
                try:
                    if pid == me or os.getpgid(pid) != group:
                        continue
                    status = (entry / "status").read_text()
                except (OSError, ProcessLookupError):
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        kib = int(line.split()[1])
                        self.peaks[pid] = max(self.peaks.get(pid, 0), kib)
            self.stop.wait(self.period)

    def __enter__(self) -> WorkerMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# --- the measurements (each run in its own process by main) ------------------------------------


def bench_env(s: dict) -> dict:
    """Stock vs fast CarRacing, stepped side by side by bench_env.compare_renderers."""
    result = compare_renderers(s["seeds"], s["steps"], s["policy"], domain_randomize=False)
    result["timing"] = "CPU time of the stepping thread (time.thread_time)"
    return result


def write_models(directory: Path) -> AgentFiles:
    torch.manual_seed(0)
    torch.save(checkpoint(VAE(z_dim=Z_DIM)), directory / "vae.pt")
    torch.save(checkpoint(MDRNN(z_dim=Z_DIM, hidden_size=HIDDEN)), directory / "mdrnn.pt")
    return AgentFiles(str(directory / "vae.pt"), str(directory / "mdrnn.pt"), EnvConfig())


def bench_population(s: dict) -> dict:
    """One generation of real-mode CMA-ES (every candidate drives the same tracks) two ways:
    the worker pool as the controller step runs it, and a naive in-process loop."""
    population, rollouts, workers = s["population"], s["rollouts"], s["workers"]
    settings = DriveSettings(max_steps=s["max_steps"])
    rng = np.random.default_rng(0)
    candidates = rng.normal(0, 0.1, (population, Controller(Z_DIM, HIDDEN).num_params))
    tracks = rollout_tracks(0, 1, rollouts)
    noise = list(range(rollouts))  # unused with z = mean
    with tempfile.TemporaryDirectory() as tmp:
        files = write_models(Path(tmp))
        # The pool as the controller step runs it: workers kept for the whole search, so a
        # generation after the first pays no start-up. Both generations are timed.
        with WorkerMemory() as memory, keep_workers():
            timed = []
            for _ in range(2):
                started = time.perf_counter()
                pooled = drive_mean_returns(candidates, tracks, noise, files, settings,
                                            workers, rollouts, "benchmarking the pool")
                timed.append(time.perf_counter() - started)
            first_seconds, pool_seconds = timed
        # The naive loop: one environment, batch-1 V/C/M inference, in this process.
        started = time.perf_counter()
        agent = load_agent(files)
        naive_returns, naive_steps = [], 0
        with one_torch_thread():
            for x in candidates:
                episodes = [drive(agent, x[None], [track], settings)[0] for track in tracks]
                naive_returns.append(np.mean([r.total_reward for r in episodes]))
                naive_steps += sum(r.steps for r in episodes)
        naive_seconds = time.perf_counter() - started
    pool_rate = pooled.env_steps / pool_seconds
    naive_rate = naive_steps / naive_seconds
    return {
        "population": population, "rollouts": rollouts, "max_steps": s["max_steps"],
        "workers": workers, "renderer": EnvConfig().renderer,
        "pool_steps": pooled.env_steps, "naive_steps": naive_steps,
        "pool_steps_per_s": round(pool_rate, 1), "naive_steps_per_s": round(naive_rate, 1),
        "ratio": round(pool_rate / naive_rate, 3),
        "same_returns": bool(np.array_equal(pooled.returns, np.array(naive_returns))),
        "naive_torch_threads": 1,
        "first_generation_s": round(first_seconds, 2), "later_generation_s": round(pool_seconds, 2),
        "timing": "wall clock; the pool's is a later generation, workers already running",
        "worker_peak_rss_mb": round(max(memory.peaks.values(), default=0) / 1024, 1),
        "worker_processes_seen": len(memory.peaks),
    }


# The controller step's real game, three ways (name: renderer, environments per worker);
# "today" is the loop before population batches: one job per candidate, its rollouts together.
CONTROLLER_LOOPS = {"today": ("fast", None), "batched": ("fast", 16), "lowres": ("lowres", 16)}


def bench_controller(s: dict) -> dict:
    """One real-mode CMA-ES generation as the controller step drives it (`drive_mean_returns`
    with kept workers), at env.action_repeat 2: simulated env frames/s, three ways."""
    population, rollouts, workers = s["population"], s["rollouts"], s["workers"]
    settings = DriveSettings(max_steps=s["max_steps"])
    candidates = np.random.default_rng(0).normal(
        0, 0.1, (population, Controller(Z_DIM, HIDDEN).num_params))
    tracks = rollout_tracks(0, 1, rollouts)
    noise = list(range(rollouts))  # unused with z = mean
    out: dict = {"population": population, "rollouts": rollouts, "max_steps": s["max_steps"],
                 "workers": workers, "action_repeat": s["action_repeat"]}
    returns = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = write_models(Path(tmp))
        for name, (renderer, per_worker) in CONTROLLER_LOOPS.items():
            env = EnvConfig(renderer=renderer, action_repeat=s["action_repeat"])
            files = AgentFiles(models.vae, models.mdrnn, env)
            with keep_workers():
                for _ in range(2):  # the second generation is timed: workers already up
                    started = time.perf_counter()
                    result = drive_mean_returns(candidates, tracks, noise, files, settings,
                                                workers, per_worker or rollouts, "benchmark")
                    seconds = time.perf_counter() - started
            returns[name] = result.returns
            out[f"{name}_frames"] = int(result.env_steps)
            out[f"{name}_frames_per_s"] = round(result.env_steps / seconds, 1)
            out[f"{name}_envs_per_worker"] = per_worker or rollouts
    for name in CONTROLLER_LOOPS:
        out[f"{name}_frames_per_s_per_core"] = round(out[f"{name}_frames_per_s"] / workers, 1)
    out["ratio"] = round(out["lowres_frames_per_s"] / out["today_frames_per_s"], 3)
    out["batched_ratio"] = round(out["batched_frames_per_s"] / out["today_frames_per_s"], 3)
    out["batched_same_returns"] = bool(np.array_equal(returns["today"], returns["batched"]))
    out["timing"] = "wall clock of a later generation, workers kept (keep_workers)"
    return out


# Where an agent step's time goes: the functions `drive` calls, by cProfile's cumulative time.
STEP_PARTS = {"env.step (physics and drawing)": ("factory.py", "step"),
              "new envs and tracks": ("factory.py", "make_env"),
              "frames for the models": ("factory.py", "to_model_frames"),
              "V (encode)": ("rollout.py", "encode"),
              "C (act_batch)": ("controller.py", "act_batch"),
              "M's LSTM (advance)": ("mdrnn.py", "advance")}


def bench_step_time(s: dict) -> dict:
    """One worker's `drive` loop profiled, at action_repeat 2: today's 2 environments on the
    fast renderer against 16 on lowres; milliseconds per agent step of one environment."""
    import cProfile
    import pstats

    params_size = Controller(Z_DIM, HIDDEN).num_params
    settings = DriveSettings(max_steps=s["max_steps"])
    out: dict = {"max_steps": s["max_steps"], "action_repeat": s["action_repeat"]}
    with tempfile.TemporaryDirectory() as tmp:
        models = write_models(Path(tmp))
        for name, renderer, count in (("today", "fast", 2), ("lowres", "lowres", 16)):
            env = EnvConfig(renderer=renderer, action_repeat=s["action_repeat"])
            agent = load_agent(AgentFiles(models.vae, models.mdrnn, env))
            params = np.random.default_rng(0).normal(0, 0.1, (count, params_size))
            tracks = rollout_tracks(0, 2, count)
            profile = cProfile.Profile()
            with one_torch_thread():
                started = time.perf_counter()
                rollouts = drive(agent, params, tracks, settings)  # unprofiled: the total
                total = time.perf_counter() - started
                profile.runcall(drive, agent, params, tracks, settings)
            agent_steps = sum(-(-r.steps // s["action_repeat"]) for r in rollouts)
            stats = pstats.Stats(profile).stats  # {(file, line, function): (.., cumtime, ..)}
            profiled = sum(v[3] for k, v in stats.items() if k[2] == "drive")
            parts = {}
            for part, (file, function) in STEP_PARTS.items():
                seconds = sum(v[3] for k, v in stats.items()
                              if k[0].endswith(file) and k[2] == function)
                if function == "make_env":  # and the reset that generates each track
                    seconds += sum(v[3] for k, v in stats.items()
                                   if k[0].endswith("car_racing.py") and k[2] == "reset")
                parts[part] = round(1000 * total * seconds / profiled / agent_steps, 3)
            parts["the rest of the loop"] = round(
                1000 * total / agent_steps - sum(parts.values()), 3)
            out[name] = {"renderer": renderer, "envs": count, "agent_steps": agent_steps,
                         "ms_per_agent_step": round(1000 * total / agent_steps, 3),
                         "parts_ms": parts}
    out["timing"] = ("wall clock of an unprofiled run, split in the shares of a cProfile'd "
                     "second run; one process, one torch thread")
    return out


def bench_repeat(s: dict) -> dict:
    """The whole agent loop (draw, V, M, C) on one environment, acting on every frame vs every
    `action_repeat`-th frame (env.action_repeat), in simulated frames per second."""
    rng = np.random.default_rng(0)
    params = rng.normal(0, 0.1, (1, Controller(Z_DIM, HIDDEN).num_params))
    tracks = rollout_tracks(0, 1, s["tracks"])
    settings = DriveSettings(max_steps=s["max_steps"])
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_models(Path(tmp))
        with one_torch_thread():
            for repeat in (1, s["action_repeat"]):
                agent = load_agent(AgentFiles(files.vae, files.mdrnn,
                                              EnvConfig(action_repeat=repeat)))
                started = time.perf_counter()
                frames = sum(drive(agent, params, [track], settings)[0].steps
                             for track in tracks)
                rates[repeat] = frames / (time.perf_counter() - started)
    return {
        "tracks": s["tracks"], "max_steps": s["max_steps"], "action_repeat": s["action_repeat"],
        "every_frame_per_s": round(rates[1], 1),
        "repeat_frames_per_s": round(rates[s["action_repeat"]], 1),
        "ratio": round(rates[s["action_repeat"]] / rates[1], 3),
        "timing": "wall clock, one process, one torch thread",
    }


def dream_rate(s: dict, threads: int) -> dict:
    """bench_dream.py's measurement: untrained M, random C, nothing ends early."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mdrnn = MDRNN(z_dim=Z_DIM, hidden_size=HIDDEN).eval()
    with torch.no_grad():
        mdrnn.done_head.bias.fill_(-30.0)  # every agent dreams the whole horizon
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((60, Z_DIM)).astype(np.float16)
    actions = rng.uniform(-1, 1, (59, 3)).astype(np.float32)
    starts = warm_up(mdrnn, mu, actions, 50)
    agents = s["population"] * s["rollouts"]
    params = torch.as_tensor(rng.normal(0, 0.1, (agents, Controller(Z_DIM, HIDDEN).num_params)),
                             dtype=torch.float32)
    which = torch.zeros(agents, dtype=torch.int64)
    seeds = [r for _ in range(s["population"]) for r in range(s["rollouts"])]
    dream_rollouts(mdrnn, params, starts, which, seeds, 1.15, 10)  # warm the kernels up
    rates = []
    for _ in range(s["repeats"]):
        started = time.perf_counter()
        result = dream_rollouts(mdrnn, params, starts, which, seeds, 1.15, s["horizon"])
        rates.append(result.steps.sum() / (time.perf_counter() - started))
    return {"threads": threads, "agent_steps_per_s": round(float(np.median(rates)), 1)}


def bench_dream(s: dict) -> dict:
    default_threads = torch.get_num_threads()
    one = dream_rate(s, 1)
    default = dream_rate(s, default_threads)
    return {
        **s, "temperature": 1.15, "timing": f"wall clock, median of {s['repeats']}",
        "one_thread_steps_per_s": one["agent_steps_per_s"],
        "default_threads": default_threads,
        "default_threads_steps_per_s": default["agent_steps_per_s"],
    }


def timed_batches(step, batches: int, warmup: int) -> float:
    """Seconds per call of step() over `batches` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(batches):
        step()
    return (time.perf_counter() - started) / batches


def bench_vae(s: dict) -> dict:
    """V's training step (worldmodel.steps.vae.step_losses, backward, Adam) on random frames."""
    params = vae_step.VAEParams(batch_size=s["batch_size"])
    model = vae_step.new_model(params, 0).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (s["batch_size"], 64, 64, 3), dtype=np.uint8)
    generator = torch.Generator().manual_seed(0)
    device = torch.device("cpu")

    def step() -> None:
        losses = vae_step.step_losses(model, frames, params, device, generator)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()

    seconds = timed_batches(step, s["batches"], s["warmup_batches"])
    return {**s, "z_dim": Z_DIM, "threads": torch.get_num_threads(),
            "frames_per_s": round(s["batch_size"] / seconds, 1)}


def bench_mdrnn(s: dict) -> dict:
    """M's training step (worldmodel.steps.mdrnn's make_batch, batch_losses, clipping, Adam) on
    random latents, every window full length."""
    batch_size, seq_len = s["batch_size"], s["seq_len"]
    params = mdrnn_step.MDRNNParams(hidden_size=HIDDEN, batch_size=batch_size, seq_len=seq_len)
    rng = np.random.default_rng(0)
    rows = batch_size * (seq_len + 1)  # one episode per window, each seq_len transitions long
    data = mdrnn_step.LatentSet(
        names=[], mu=rng.standard_normal((rows, Z_DIM)).astype(np.float16),
        logvar=np.full((rows, Z_DIM), -4, np.float16),
        actions=rng.uniform(-1, 1, (rows, 3)).astype(np.float32),
        rewards=rng.standard_normal(rows).astype(np.float32), done=np.zeros(rows, np.float32),
        exits=np.zeros(rows, np.float32),
        offsets=np.arange(batch_size, dtype=np.int64) * (seq_len + 1),
        steps=np.full(batch_size, seq_len, dtype=np.int64),
    )
    windows = np.stack([np.arange(batch_size), np.zeros(batch_size), data.steps], axis=1)
    model = mdrnn_step.new_model(params, Z_DIM, 0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    generator = torch.Generator().manual_seed(0)
    device = torch.device("cpu")

    def step() -> None:
        batch = mdrnn_step.make_batch(data, windows.astype(np.int64), device)
        losses, _ = mdrnn_step.batch_losses(model, batch, params, generator)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        optimizer.step()

    seconds = timed_batches(step, s["batches"], s["warmup_batches"])
    return {**s, "z_dim": Z_DIM, "hidden_size": HIDDEN, "num_gaussians": params.num_gaussians,
            "threads": torch.get_num_threads(),
            "timesteps_per_s": round(batch_size * seq_len / seconds, 1)}


MEASUREMENTS = {
    "env": bench_env, "population": bench_population, "controller": bench_controller,
    "step_time": bench_step_time, "repeat": bench_repeat,
    "dream": bench_dream,
    "vae": bench_vae, "mdrnn": bench_mdrnn,
}


# --- the report --------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable, "ram_gb": ram_gb,
        "os": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }


# Measurements of what one worker does, run with a worker's thread settings: one BLAS thread
# too (numpy reads it at import). With two, the small products of the frame resizing wait on
# busy cores: on a loaded 2-core machine they took 19 of an agent step's 32 ms.
AS_A_WORKER = ("step_time",)


def run_one(name: str, quick: bool) -> dict:
    """`name` in a fresh process: its result, with that process's peak RSS and wall time."""
    command = [sys.executable, __file__, "--only", name, *(["--quick"] if quick else [])]
    env = {**os.environ, **(ONE_THREAD_ENV if name in AS_A_WORKER else {})}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def markdown(report: dict) -> str:
    m, r = report["machine"], report["results"]
    env, pop, ctrl, step, repeat, dream, vae, mdrnn = (r[k] for k in MEASUREMENTS)

    def parts(loop: dict) -> str:
        return ", ".join(f"{part} {ms:.2f}" for part, ms in loop["parts_ms"].items())

    today, lowres = step["today"], step["lowres"]
    rows = [
        ("Environment steps/s (CarRacing-v3)", f"stock {env['stock_steps_per_s']:,.0f}",
         f"fast {env['fast_steps_per_s']:,.0f}", f"{env['ratio']:.2f}×",
         f"{env['steps']} steps, seeds 0..{env['seeds'] - 1}, `{env['policy']}` policy, "
         f"CPU time of the stepping thread; identical frames/rewards/flags: "
         f"{'yes' if env['identical'] else 'NO'}", env),
        ("Training renderer steps/s", f"stock {env['stock_steps_per_s']:,.0f}",
         f"lowres {env['lowres_steps_per_s']:,.0f}", f"{env['lowres_ratio']:.2f}×",
         f"the same steps; lowres draws the 64×64 model frame directly: same rewards and "
         f"flags: {'yes' if env['lowres_same_game'] else 'NO'}; its pixels against the "
         f"preprocessed stock frames: mean {env['lowres_pixel_mean']:.2f}, 99th percentile "
         f"{env['lowres_pixel_p99']:.0f} levels (of 255)", env),
        ("Controller step, real game, env frames/s per core",
         f"today {ctrl['today_frames_per_s_per_core']:,.0f}",
         f"lowres + batches {ctrl['lowres_frames_per_s_per_core']:,.0f}", f"{ctrl['ratio']:.2f}×",
         f"one generation of {ctrl['population']} candidates × {ctrl['rollouts']} tracks × "
         f"up to {ctrl['max_steps']} frames, action_repeat {ctrl['action_repeat']}, "
         f"{ctrl['workers']} workers kept; today: fast renderer, a job per candidate "
         f"({ctrl['today_envs_per_worker']} envs); batches alone (fast renderer, "
         f"{ctrl['batched_envs_per_worker']} envs per worker): "
         f"{ctrl['batched_frames_per_s_per_core']:,.0f} ({ctrl['batched_ratio']:.2f}×), same "
         f"returns as today: {'yes' if ctrl['batched_same_returns'] else 'NO'}; lowres: "
         f"{ctrl['lowres_envs_per_worker']} envs per worker", ctrl),
        ("One agent step of one env, ms", f"today {today['ms_per_agent_step']:.2f}",
         f"lowres + batch {lowres['ms_per_agent_step']:.2f}",
         f"{today['ms_per_agent_step'] / lowres['ms_per_agent_step']:.2f}× less",
         f"`drive` in one process at action_repeat {step['action_repeat']}, up to "
         f"{step['max_steps']} frames; today ({today['envs']} envs, {today['renderer']}): "
         f"{parts(today)}; lowres ({lowres['envs']} envs): {parts(lowres)} (ms, split by "
         f"cProfile shares)", step),
        ("Population evaluation, real env agent steps/s",
         f"naive loop {pop['naive_steps_per_s']:,.0f}",
         f"pool {pop['pool_steps_per_s']:,.0f}", f"{pop['ratio']:.2f}×",
         f"{pop['population']} candidates × {pop['rollouts']} tracks × {pop['max_steps']} steps "
         f"({pop['pool_steps']} steps), {pop['renderer']} renderer; pool: `drive_mean_returns`, "
         f"{pop['workers']} workers kept between generations (`keep_workers`), wall clock of "
         f"a later generation ({pop['later_generation_s']} s; the first, starting the workers "
         f"and loading V and M: {pop['first_generation_s']} s); naive: `drive` on one env, "
         f"batch 1, {pop['naive_torch_threads']} torch thread; same returns: "
         f"{'yes' if pop['same_returns'] else 'no'}; worker peak RSS "
         f"{pop['worker_peak_rss_mb']:,.0f} MB", pop),
        ("Agent loop, simulated frames/s", f"every frame {repeat['every_frame_per_s']:,.0f}",
         f"action_repeat {repeat['action_repeat']} {repeat['repeat_frames_per_s']:,.0f}",
         f"{repeat['ratio']:.2f}×",
         f"`drive`: draw, V, M and C on one env, {repeat['tracks']} tracks × up to "
         f"{repeat['max_steps']} frames, random C, 1 torch thread; frames in between are "
         "simulated but not drawn", repeat),
        ("Dream agent-steps/s", f"1 thread {dream['one_thread_steps_per_s']:,.0f}",
         f"{dream['default_threads']} threads {dream['default_threads_steps_per_s']:,.0f}",
         f"{dream['default_threads_steps_per_s'] / dream['one_thread_steps_per_s']:.2f}×",
         f"population {dream['population']} × {dream['rollouts']} rollouts, horizon "
         f"{dream['horizon']}, τ {dream['temperature']}, median of {dream['repeats']}", dream),
        ("V training frames/s", f"{vae['frames_per_s']:,.0f}", "", "",
         f"z {vae['z_dim']}, batch {vae['batch_size']}, {vae['batches']} timed batches of "
         f"random uint8 64×64 frames, Adam, {vae['threads']} threads", vae),
        ("M training timesteps/s", f"{mdrnn['timesteps_per_s']:,.0f}", "", "",
         f"hidden {mdrnn['hidden_size']}, z {mdrnn['z_dim']}, {mdrnn['num_gaussians']} "
         f"Gaussians, seq_len {mdrnn['seq_len']}, batch {mdrnn['batch_size']}, "
         f"{mdrnn['batches']} timed batches, grad clip, Adam, {mdrnn['threads']} threads", mdrnn),
    ]
    lines = [
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
        f"{m['ram_gb']} GB RAM, {m['os']}; Python {m['python']}, torch {m['torch']} "
        f"({m['torch_threads']} threads by default), numpy {m['numpy']}.",
        "",
        "| measurement | A | B | B / A | peak RSS (MB) | seconds | settings |",
        "|---|---|---|---|---|---|---|",
    ]
    for what, a, b, ratio, settings, result in rows:
        lines.append(f"| {what} | {a} | {b} | {ratio} | {result['peak_rss_mb']:,.0f} | "
                     f"{result['seconds']} | {settings} |")
    lines += [
        "",
        "Peak RSS: ru_maxrss of the process that ran the measurement (imports included; "
        "the population row's process ran both the pool's parent and the naive loop).",
        f"Total: {report['seconds']} s.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--json", action="store_true", help="print JSON, not markdown")
    parser.add_argument("--only", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.only:  # a child process: one measurement, one JSON line
        result = MEASUREMENTS[args.only](sizes[args.only])
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return 0
    started = time.perf_counter()
    results = {}
    for name in MEASUREMENTS:
        print(f"measuring {name}...", file=sys.stderr, flush=True)
        results[name] = run_one(name, args.quick)
    report = {"quick": args.quick, "machine": machine(), "results": results,
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0 if results["env"]["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
