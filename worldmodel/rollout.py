"""The agent in the real CarRacing-v3: V sees, C acts, M remembers (paper sections 2.3 and 3.2).

One step of the loop, for a batch of environments at once:

    frame  -> model frame -> V's encoder -> z      (q(z|x)'s mean, or a sample: controller.z)
    a      =  C([z, h])                           (steer tanh, gas (tanh + 1) / 2,
                                                   brake clip(tanh, 0, 1), as the original)
    h      <- M's LSTM after reading (z, a)       (M's predictions are not used here)
    frame, reward <- env.step(a)

Batching. A worker drives several environments together (the rollouts of a CMA-ES candidate,
a chunk of evaluation episodes) and encodes their frames in one batch. Every environment has
its own controller parameters, track and noise stream, and every computation is done per
sample (see `encode`), so an episode's result does not depend on which episodes shared its
batch: the batched loop returns what a one-environment-at-a-time loop returns, and results do
not depend on the number of workers. Rollouts always run on the CPU with one torch thread: the
batches are a few frames, for which a GPU round trip costs more than it saves.

Workers load V and M once, in the pool's initializer (`init_worker`); a task then carries only
controller parameters and track seeds (`drive_jobs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from worldmodel import durable, layout
from worldmodel.envs import EnvConfig, make_env, to_model_frames
from worldmodel.errors import ConfigError, StoreError
from worldmodel.models import (
    MDRNN,
    VAE,
    Controller,
    act_batch,
    build_from_checkpoint,
    controller_size,
    frames_to_tensor,
)
from worldmodel.pool import run_tasks, task_deadline

Z_MODES = ("mean", "sample")


@dataclass(frozen=True)
class DriveSettings:
    """How episodes are driven (the same for every environment of a batch)."""

    max_steps: int
    """Frames per episode at most (the environment's own TimeLimit may stop it sooner)."""
    z: str = "mean"
    """What C sees of V's posterior: its mean, or a sample drawn from the episode's noise seed."""
    early_stop_steps: int | None = None
    """Stop an episode after this many frames in a row without a positive reward (no new tile);
    the return so far counts. Only for training rollouts; None drives full episodes."""


class Rollout(NamedTuple):
    """What one episode gave."""

    track: int
    total_reward: float
    steps: int
    """Simulated frames (agent steps times env.action_repeat, less where the episode ended)."""
    lap_finished: bool
    early_stopped: bool


class StepRecord(NamedTuple):
    """One step of one episode, as `drive` passes it to on_step."""

    observation: np.ndarray
    """The frame after the step (after the reset, for the first record)."""
    action: np.ndarray | None
    """The action that led to it; None for the first record."""
    reward: float
    terminated: bool
    truncated: bool
    info: dict


@dataclass
class Agent:
    """V and M, ready for inference on the CPU, and the frames they expect."""

    vae: VAE
    mdrnn: MDRNN
    env: EnvConfig

    @property
    def controller_size(self) -> dict[str, int]:
        """Controller constructor arguments that fit these models."""
        return {"z_dim": self.vae.z_dim, "hidden_size": self.mdrnn.hidden_size}


@dataclass(frozen=True)
class AgentFiles:
    """Where V and M are stored, and the environment they were made for (pickled to workers)."""

    vae: str
    mdrnn: str
    env: EnvConfig


def load_model(cls: type[nn.Module], path: Path | str, what: str) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{what}: {path} is missing")
    return build_from_checkpoint(cls, torch.load(path, map_location="cpu", weights_only=True))


def load_agent(files: AgentFiles) -> Agent:
    vae = load_model(VAE, files.vae, "the trained VAE")
    mdrnn = load_model(MDRNN, files.mdrnn, "the trained MDN-RNN")
    if mdrnn.z_dim != vae.z_dim or mdrnn.action_dim != Controller.action_dim:
        raise ConfigError(
            f"M (z_dim={mdrnn.z_dim}, action_dim={mdrnn.action_dim}) does not fit V "
            f"(z_dim={vae.z_dim}) and CarRacing's {Controller.action_dim} actions; "
            "retrain it (force=[mdrnn])"
        )
    vae = vae.to(memory_format=torch.channels_last).eval()
    return Agent(vae=vae, mdrnn=mdrnn.eval(), env=files.env)


def stored_agent(vae_dir: Path, mdrnn_dir: Path, env: EnvConfig) -> AgentFiles:
    """The agent of stored vae and mdrnn results: their model.pt files."""
    return AgentFiles(str(vae_dir / layout.VAE.MODEL), str(mdrnn_dir / layout.MDRNN.MODEL), env)


def kept_controller(controller_dir: Path, files: AgentFiles,
                    model: str = layout.CONTROLLER.MODEL) -> tuple[np.ndarray, str]:
    """A controller result's kept controller (or its other checkpoint `model`, es_mean.pt) as
    flat parameters (refused if made for another V or M than `files`), and what it sees of V's
    posterior (controller.json's z)."""
    info_path = controller_dir / layout.CONTROLLER.SUMMARY
    if not info_path.is_file():
        raise StoreError(f"{info_path} is missing; recompute the controller "
                         "(force=[controller])")
    z_mode = durable.read_json(info_path)["z"]
    flat = load_controller(controller_dir / model, expect=controller_size(
        Path(files.vae), Path(files.mdrnn))).get_flat()
    return flat, z_mode


def load_controller(path: Path | str, expect: dict[str, int] | None = None) -> Controller:
    """C from a checkpoint; `expect` (Agent.controller_size) refuses one made for other V or M
    sizes, naming both."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"the trained controller {path} is missing")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return build_from_checkpoint(Controller, ckpt, expect=expect)


# --- the loop ----------------------------------------------------------------------------------


def per_sample_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x) computed as one small product per row of x.

    nn.Linear multiplies the whole batch at once, and the CPU kernels round differently for
    different batch sizes (seen with torch 2.13 on x86: a 1e-8 difference between batch 1 and
    batch 16), so an episode's z would depend on how many episodes share its batch. A batched
    matrix product computes each row alone, the same way for any batch size.
    """
    weight = layer.weight.t().expand(len(x), -1, -1)
    bias = layer.bias.expand(len(x), 1, -1)
    return torch.baddbmm(bias, x.unsqueeze(1), weight).squeeze(1)


def encode(
    vae: VAE, frames: np.ndarray, noise: Sequence[np.random.Generator] | None
) -> torch.Tensor:
    """z (B, z_dim) for uint8 frames (B, H, W, 3): q(z|x)'s mean, or with `noise` (one
    generator per frame) a sample mu + sigma * eps."""
    features = vae.encoder(frames_to_tensor(frames, channels_last=True))
    mu = per_sample_linear(vae.to_mu, features)
    if noise is None:
        return mu
    logvar = per_sample_linear(vae.to_logvar, features)
    eps = np.stack([g.standard_normal(vae.z_dim, dtype=np.float32) for g in noise])
    return mu + torch.exp(0.5 * logvar) * torch.from_numpy(eps)


@torch.inference_mode()
def drive(
    agent: Agent,
    params: np.ndarray,
    tracks: Sequence[int],
    settings: DriveSettings,
    noise_seeds: Sequence[int] | None = None,
    render_mode: str | None = None,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
    on_step: Callable[[int, StepRecord], None] | None = None,
) -> list[Rollout]:
    """Drive len(tracks) episodes at once; episode i uses controller params[i] on tracks[i].

    params: (E, n_params) flat controller vectors (`Controller.get_flat`'s layout).
    noise_seeds: one per episode, for z = sample (V's noise is drawn from it alone).
    render_mode: CarRacing's; with "rgb_array", on_frame(i, frame) receives episode i's
        600x400 picture after the reset and after every step ("human" draws a window).
    on_step: on_step(i, record) receives episode i's observation after the reset (action
        None) and after every step, with the action taken and what the step returned (the
        collect step records episodes so).
    """
    params = torch.as_tensor(np.asarray(params, dtype=np.float32))
    count = len(tracks)
    if params.dim() != 2 or len(params) != count:
        raise ValueError(f"need one parameter row per track, got {tuple(params.shape)} "
                         f"for {count} tracks")
    if settings.z not in Z_MODES:
        raise ConfigError(f"controller.z={settings.z!r} must be one of {', '.join(Z_MODES)}")
    if on_frame is not None and render_mode != "rgb_array":
        raise ValueError("on_frame needs render_mode='rgb_array'")
    noise = None
    if settings.z == "sample":
        if noise_seeds is None or len(noise_seeds) != count:
            raise ValueError("z = sample needs one noise seed per episode")
        noise = [np.random.default_rng(seed) for seed in noise_seeds]

    envs = [make_env(agent.env, render_mode) for _ in range(count)]
    try:
        observations = [env.reset(seed=int(track))[0] for env, track in zip(envs, tracks,
                                                                            strict=True)]
        if on_frame is not None:
            for i, env in enumerate(envs):
                on_frame(i, env.render())
        if on_step is not None:
            for i, observation in enumerate(observations):
                on_step(i, StepRecord(observation, None, 0.0, False, False, {}))
        h, c = agent.mdrnn.initial_state(count)
        returns = np.zeros(count)
        steps = np.zeros(count, dtype=np.int64)
        stalled = np.zeros(count, dtype=np.int64)  # steps since the last positive reward
        lap_finished = np.zeros(count, dtype=bool)
        early_stopped = np.zeros(count, dtype=bool)
        live = list(range(count))
        while live:
            frames = to_model_frames(np.stack([observations[i] for i in live]), agent.env)
            z = encode(agent.vae, frames, None if noise is None else [noise[i] for i in live])
            state = (h[:, live], c[:, live])
            zh = torch.cat([z, state[0][0]], dim=-1).unsqueeze(1)
            actions = act_batch(params[live], zh).squeeze(1)
            h_next, c_next = agent.mdrnn.advance(z, actions, state)
            h[:, live], c[:, live] = h_next, c_next
            still = []
            for i, action in zip(live, actions.numpy(), strict=True):
                observations[i], reward, terminated, truncated, info = envs[i].step(action)
                if on_frame is not None:
                    on_frame(i, envs[i].render())
                if on_step is not None:
                    on_step(i, StepRecord(observations[i], action, float(reward),
                                          bool(terminated), bool(truncated), info))
                returns[i] += reward
                steps[i] += info["frames"]
                stalled[i] = 0 if reward > 0 else stalled[i] + info["frames"]
                lap_finished[i] = bool(info.get("lap_finished", False))
                stop = settings.early_stop_steps is not None and (
                    stalled[i] >= settings.early_stop_steps)
                early_stopped[i] = stop and not (terminated or truncated)
                if not (terminated or truncated or stop or steps[i] >= settings.max_steps):
                    still.append(i)
            live = still
    finally:
        for env in envs:
            env.close()
    return [Rollout(int(tracks[i]), float(returns[i]), int(steps[i]), bool(lap_finished[i]),
                    bool(early_stopped[i])) for i in range(count)]


# --- in worker processes -----------------------------------------------------------------------

_agent: Agent | None = None
_agent_files: AgentFiles | None = None


def init_worker(files: AgentFiles) -> None:
    """The pool's initializer: load V and M once per worker process (or once in this one)."""
    global _agent, _agent_files
    if _agent is None or _agent_files != files:
        _agent, _agent_files = load_agent(files), files


def worker_agent() -> Agent:
    if _agent is None:
        raise RuntimeError("init_worker was not called in this process")
    return _agent


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Workers use one thread; so does a rollout run in this process, so the rounding of its
    products, and hence its returns, are the same for any number of workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def drive_task(job: int, params: np.ndarray, tracks: list[int], settings: DriveSettings,
               noise_seeds: list[int] | None, env: EnvConfig | None = None) -> list[Rollout]:
    """One pool task: `drive` with the worker's models, in their environment or in `env`.
    `job` is the caller's bookkeeping."""
    agent = worker_agent()
    if env is not None and env != agent.env:
        agent = replace(agent, env=env)
    with one_torch_thread():
        return drive(agent, params, tracks, settings, noise_seeds)


class Job(NamedTuple):
    """Episodes driven together by one worker: one parameter row, track and noise seed each."""

    params: np.ndarray
    tracks: list[int]
    noise_seeds: list[int]


def drive_jobs(jobs: Sequence[Job], files: AgentFiles, settings: DriveSettings, workers: int,
               what: str, on_done: Callable[[int, list[Rollout]], None] | None = None,
               env: EnvConfig | None = None) -> list[list[Rollout]]:
    """Run `jobs` on up to `workers` processes; returns each job's rollouts, in job order.

    on_done(job index, rollouts) is called as jobs finish (progress, saving partial work).
    `env` drives them in another environment than `files.env` (the identical renderer that
    scores, or the search's controller.renderer) with the same workers and loaded models.
    A worker that dies raises WorkerDied (worldmodel.pool) instead of hanging.
    """
    results: list[list[Rollout] | None] = [None] * len(jobs)
    tasks = ((index, job.params, job.tracks, settings, job.noise_seeds, env)
             for index, job in enumerate(jobs))
    workers = max(1, min(workers, len(jobs)))
    for task, rollouts in run_tasks(drive_task, tasks, workers, what, initializer=init_worker,
                                    initargs=(files,), preload=(__name__,),
                                    deadline_s=task_deadline(settings.max_steps * max(
                                        (len(job.tracks) for job in jobs), default=0))):
        results[task[0]] = rollouts
        if on_done is not None:
            on_done(task[0], rollouts)
    return results  # type: ignore[return-value]
