"""collect: episodes of an exploration policy in the real CarRacing-v3 (paper section 3, step 1;
in later rounds, step 1 of the iterative procedure of section 5).

Inputs: none in round 0. In round k >= 1: the earlier rounds' collect results (to number
episodes after theirs) and round k-1's vae, mdrnn and controller (the agent that drives).
Outputs, in the step's directory:

    episodes/ep_000000.npz ...   one file per episode (worldmodel/episodes.py)
    dataset.json                 episodes, frames, bytes on disk, returns, and who drove each
                                 episode (collected_by: the policy, and the controller's key)

Episode i's track and actions derive from (seed, "collect", i) alone, so the dataset is the
same for any number of workers. Round k's episodes are numbered after the earlier rounds', so
they drive other tracks and their files can sit beside the earlier ones. Of a round's
episodes, the first round(random_share * episodes) are driven by the exploration `policy`
(recoveries, states a good driver never visits) and the others by the previous round's kept
controller, its parameters perturbed by N(0, controller_noise^2) per episode (parameter
noise: each episode is a slightly different driver). Episodes are written atomically by the
workers; a killed collection resumes by skipping the episodes on disk, and a damaged file is
collected again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from worldmodel import durable, layout, seeding
from worldmodel.config import at_least, one_of, require
from worldmodel.envs import POLICIES, EnvConfig, make_env, to_model_frames
from worldmodel.envs.policies import collection_policy
from worldmodel.episodes import (
    DamagedEpisode,
    Episode,
    episode_index,
    episode_path,
    load_episode,
    save_episode,
)
from worldmodel.errors import ConfigError
from worldmodel.pool import run_tasks, task_deadline
from worldmodel.rollout import (
    AgentFiles,
    DriveSettings,
    StepRecord,
    drive,
    init_worker,
    kept_controller,
    one_torch_thread,
    stored_agent,
    worker_agent,
)

if TYPE_CHECKING:
    from worldmodel.runner import StepContext


@dataclass
class CollectParams:
    """The `collect` config group (sizes come from the `data` preset)."""

    episodes: int = 100
    """Number of episodes to collect."""
    max_steps: int = 1000
    """Frames per episode at most (CarRacing-v3 itself stops at env.max_steps); an episode
    stores one row per agent step, i.e. per env.action_repeat frames."""
    policy: str = "repeat"
    """Exploration policy: repeat | brownian | random_controller (worldmodel/envs/policies.py)."""
    random_share: float = 1.0
    """Share of the episodes driven by `policy`; the rest are driven by the previous round's
    controller, so below 1 only in rounds k >= 1 (the `rounds` config section sets it)."""
    controller_noise: float = 0.0
    """Standard deviation of the noise added to the controller's parameters, per episode."""


@dataclass
class CollectConfig:
    seed: int
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectParams = field(default_factory=CollectParams)

    def __post_init__(self) -> None:
        problems = [*at_least("collect", self.collect, ("episodes", "max_steps")),
                    *one_of("collect.policy", self.collect.policy, POLICIES)]
        if not 0 <= self.collect.random_share <= 1:
            problems.append(f"collect.random_share={self.collect.random_share} must be in "
                            "[0, 1]")
        if self.collect.controller_noise < 0:
            problems.append(f"collect.controller_noise={self.collect.controller_noise} must "
                            "be >= 0")
        require(problems)


def collect_episode(
    index: int, seed: int, env_cfg: EnvConfig, params: CollectParams, directory: str
) -> dict:
    """Drive one episode with the exploration policy and write it; runs in a worker."""
    env = make_env(env_cfg)
    try:
        policy = collection_policy(params.policy,
                                   seeding.generator(seed, "collect", index, "policy"),
                                   env_cfg.crop_hud, env_cfg.frame_size)
        obs, _ = env.reset(seed=seeding.train_track(seed, "collect", index))
        frames, actions, rewards = [obs], [], []
        terminated = truncated = lap_finished = False
        simulated = 0  # frames: an agent step simulates env.action_repeat of them
        while not (terminated or truncated):
            if simulated >= params.max_steps:
                truncated = True  # stopped by collect.max_steps rather than by the environment
                break
            action = np.asarray(policy.act(obs), dtype=np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            simulated += info["frames"]
            frames.append(obs)
            actions.append(action)
            rewards.append(reward)
            lap_finished = bool(info.get("lap_finished", False))
    finally:
        env.close()
    episode = Episode(
        frames=to_model_frames(np.stack(frames), env_cfg),
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=bool(terminated),
        truncated=bool(truncated),
        lap_finished=lap_finished,
    )
    size = save_episode(episode_path(Path(directory), index), episode)
    return {"index": index, "steps": episode.steps, "return": episode.total_reward,
            "bytes": size, "lap_finished": lap_finished}


def drive_episode(index: int, seed: int, flat: np.ndarray, settings: DriveSettings,
                  directory: str) -> dict:
    """Drive one episode with a controller (flat parameters, noise included) and write it;
    runs in a worker whose agent (V and M) rollout.init_worker loaded."""
    agent = worker_agent()
    frames, actions, rewards, ends = [], [], [], {}

    def record(_: int, step: StepRecord) -> None:
        frames.append(step.observation)
        if step.action is not None:
            actions.append(step.action)
            rewards.append(step.reward)
            ends.update(terminated=step.terminated,
                        lap_finished=bool(step.info.get("lap_finished", False)))

    track = seeding.train_track(seed, "collect", index)
    noise = [seeding.derive_seed(seed, "collect", index, "z")]
    with one_torch_thread():
        drive(agent, flat[None], [track], settings, noise, on_step=record)
    terminated = bool(ends.get("terminated", False))
    episode = Episode(
        frames=to_model_frames(np.stack(frames), agent.env),
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=terminated,
        truncated=not terminated,  # stopped by a step limit, as collect_episode marks it
        lap_finished=bool(ends.get("lap_finished", False)),
    )
    size = save_episode(episode_path(Path(directory), index), episode)
    return {"index": index, "steps": episode.steps, "return": episode.total_reward,
            "bytes": size, "lap_finished": episode.lap_finished}


def finished_episodes(directory: Path, log) -> dict[int, dict]:
    """The stats of episodes a previous (killed) run completed. Every file is read in full, so
    one cut short or changed fails its CRC check; it is removed, to be collected again."""
    durable.remove_leftovers(directory)
    done = {}
    for path in sorted(directory.glob("ep_*.npz")):
        try:
            episode = load_episode(path)
        except DamagedEpisode as exc:
            log.warning("%s; collecting it again", exc)
            path.unlink()
            continue
        done[episode_index(path)] = {
            "index": episode_index(path), "steps": episode.steps, "return": episode.total_reward,
            "bytes": path.stat().st_size, "lap_finished": episode.lap_finished}
    return done


@dataclass(frozen=True)
class Driver:
    """The previous round's agent, as a later round's collect drives it."""

    files: AgentFiles
    params: np.ndarray
    """The kept controller's flat parameters."""
    z: str
    key: str
    """The controller result's key: dataset.json names it for every episode it drove."""


def previous_driver(ctx: StepContext, cfg: CollectConfig) -> Driver | None:
    """Round k-1's V, M and kept controller, in rounds k >= 1; None in round 0."""
    if not ctx.inputs_of("controller"):
        return None
    trained = ctx.input("controller")
    files = stored_agent(ctx.input("vae").path, ctx.input("mdrnn").path, cfg.env)
    flat, z_mode = kept_controller(trained.path, files)
    return Driver(files, flat, z_mode, trained.key)


def first_index(ctx: StepContext) -> int:
    """Where this round's episode numbers start: after every earlier round's episodes."""
    return sum(int(durable.read_json(a.path / layout.COLLECT.DATASET)["episodes"])
               for a in ctx.inputs_of("collect"))


def run(ctx: StepContext) -> dict:
    cfg: CollectConfig = ctx.config
    params = cfg.collect
    driver = previous_driver(ctx, cfg)
    if driver is None and (params.random_share < 1 or params.controller_noise):
        raise ConfigError(f"collect.random_share={params.random_share}, collect.controller_noise="
                          f"{params.controller_noise}: they are for the episodes driven by the "
                          "previous round's controller, which round 0 does not have; set them in "
                          "rounds.collect (rounds >= 1) and keep collect.random_share=1, "
                          "collect.controller_noise=0")
    first = first_index(ctx)
    indices = list(range(first, first + params.episodes))
    explored = len(indices) if driver is None else round(params.random_share * len(indices))
    collected_by = [{"policy": params.policy} if n < explored else
                    {"policy": "controller", "controller": driver.key,
                     "controller_noise": params.controller_noise}
                    for n in range(len(indices))]
    directory = ctx.dir / layout.COLLECT.EPISODES
    directory.mkdir(exist_ok=True)
    done = finished_episodes(directory, ctx.log)
    todo = [i for i in indices if i not in done]
    if done:
        ctx.log.info("%d of %d episodes already on disk; collecting the other %d",
                     len(done), params.episodes, len(todo))
    randomly = [i for i in todo if i - first < explored]
    driven = [i for i in todo if i - first >= explored]
    stats = dict(done)  # and the episodes collected below
    workers = min(ctx.hardware.workers, max(len(todo), 1))
    ctx.log.info("collecting %d episodes (%d to go) of up to %d frames on %d workers: %d with "
                 "policy '%s'%s", params.episodes, len(todo), params.max_steps, workers, explored,
                 params.policy, "" if driver is None else
                 f", {params.episodes - explored} with the previous round's controller "
                 f"{driver.key} (parameter noise {params.controller_noise:g})")
    deadline = task_deadline(params.max_steps)
    started, frames = time.perf_counter(), 0
    with tqdm(total=params.episodes, initial=len(done), unit="ep", desc="collect") as bar:
        def count(result: dict) -> None:
            nonlocal frames
            stats[result["index"]] = result
            frames += result["steps"]
            bar.set_postfix(frames_per_s=f"{frames / (time.perf_counter() - started):.0f}")
            bar.update()

        tasks = ((i, cfg.seed, cfg.env, params, str(directory)) for i in randomly)
        for _, result in run_tasks(collect_episode, tasks, workers, "collecting episodes",
                                   preload=(__name__,), deadline_s=deadline):
            count(result)
        if driven:
            settings = DriveSettings(params.max_steps, driver.z)
            tasks = ((i, cfg.seed, driver.params + params.controller_noise * seeding.generator(
                cfg.seed, "collect", i, "policy").standard_normal(len(driver.params)).astype(
                np.float32), settings, str(directory)) for i in driven)
            for _, result in run_tasks(drive_episode, tasks, workers, "collecting episodes",
                                       initializer=init_worker, initargs=(driver.files,),
                                       preload=(__name__,), deadline_s=deadline):
                count(result)
    summary = summarize(stats, params, collected_by, cfg.env.action_repeat)
    durable.write_json(ctx.dir / layout.COLLECT.DATASET, summary)
    ctx.log.info("dataset: %d episodes (%d-%d), %d frames, %.1f MB on disk, return %.1f ± %.1f",
                 summary["episodes"], indices[0], indices[-1], summary["frames"],
                 summary["bytes"] / 1e6, summary["mean_return"], summary["std_return"])
    return {k: summary[k] for k in ("episodes", "frames", "env_frames", "bytes", "mean_return",
                                    "std_return", "mean_steps", "laps_finished")}


def summarize(stats: dict[int, dict], params: CollectParams, collected_by: list[dict],
              action_repeat: int) -> dict:
    ordered = [stats[i] for i in sorted(stats)]
    returns = np.array([s["return"] for s in ordered])
    steps = np.array([s["steps"] for s in ordered])
    return {
        "episodes": len(ordered),
        "first_episode": min(stats),
        "frames": int(steps.sum() + len(ordered)),  # T+1 frames per episode of T steps
        # What the collection cost in the real game: every agent step simulates action_repeat
        # frames (an episode that ended inside its last repeat counts it whole).
        "env_frames": int(steps.sum() * action_repeat),
        "bytes": int(sum(s["bytes"] for s in ordered)),
        "policy": params.policy,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "mean_steps": float(steps.mean()),
        "laps_finished": int(sum(s["lap_finished"] for s in ordered)),
        "returns": [round(float(r), 2) for r in returns],
        "collected_by": collected_by,
    }
