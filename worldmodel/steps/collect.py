"""collect: episodes of an exploration policy in the real CarRacing-v3 (paper section 3, step 1).

Inputs: none. Outputs, in the step's directory:

    episodes/ep_000000.npz ...   one file per episode (worldmodel/episodes.py)
    dataset.json                 episodes, frames, bytes on disk, returns

Episode i's track and actions derive from (seed, "collect", i) alone, so the dataset is the
same for any number of workers. Episodes are written atomically by the workers; a killed
collection resumes by skipping the episodes on disk, and a damaged file is collected again.
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
from worldmodel.envs import POLICIES, EnvConfig, make_env, make_policy, preprocess
from worldmodel.episodes import (
    DamagedEpisode,
    Episode,
    episode_index,
    episode_path,
    load_episode,
    save_episode,
)
from worldmodel.pool import run_tasks, task_deadline

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


@dataclass
class CollectConfig:
    seed: int
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectParams = field(default_factory=CollectParams)

    def __post_init__(self) -> None:
        require([*at_least("collect", self.collect, ("episodes", "max_steps")),
                 *one_of("collect.policy", self.collect.policy, POLICIES)])


def collect_episode(
    index: int, seed: int, env_cfg: EnvConfig, params: CollectParams, directory: str
) -> dict:
    """Drive one episode with the exploration policy and write it; runs in a worker."""
    env = make_env(env_cfg)
    try:
        policy = make_policy(params.policy, seeding.generator(seed, "collect", index, "policy"))
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
        frames=preprocess(np.stack(frames), env_cfg.crop_hud, env_cfg.frame_size),
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=bool(terminated),
        truncated=bool(truncated),
        lap_finished=lap_finished,
    )
    size = save_episode(episode_path(Path(directory), index), episode)
    return {"index": index, "steps": episode.steps, "return": episode.total_reward,
            "bytes": size, "lap_finished": lap_finished}


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


def run(ctx: StepContext) -> dict:
    cfg: CollectConfig = ctx.config
    params = cfg.collect
    directory = ctx.dir / layout.COLLECT.EPISODES
    directory.mkdir(exist_ok=True)
    done = finished_episodes(directory, ctx.log)
    todo = [i for i in range(params.episodes) if i not in done]
    if done:
        ctx.log.info("%d of %d episodes already on disk; collecting the other %d",
                     len(done), params.episodes, len(todo))
    stats = dict(done)  # and the episodes collected below
    workers = min(ctx.hardware.workers, max(len(todo), 1))
    ctx.log.info("collecting %d episodes of up to %d frames with policy '%s' on %d workers",
                 len(todo), params.max_steps, params.policy, workers)
    tasks = ((i, cfg.seed, cfg.env, params, str(directory)) for i in todo)
    started, frames = time.perf_counter(), 0
    with tqdm(total=params.episodes, initial=len(done), unit="ep", desc="collect") as bar:
        for _, result in run_tasks(collect_episode, tasks, workers, "collecting episodes",
                                   preload=(__name__,),
                                   deadline_s=task_deadline(params.max_steps)):
            stats[result["index"]] = result
            frames += result["steps"]
            bar.set_postfix(frames_per_s=f"{frames / (time.perf_counter() - started):.0f}")
            bar.update()
    summary = summarize(stats, params)
    durable.write_json(ctx.dir / layout.COLLECT.DATASET, summary)
    ctx.log.info("dataset: %d episodes, %d frames, %.1f MB on disk, return %.1f ± %.1f",
                 summary["episodes"], summary["frames"], summary["bytes"] / 1e6,
                 summary["mean_return"], summary["std_return"])
    return {k: summary[k] for k in ("episodes", "frames", "bytes", "mean_return", "std_return",
                                    "mean_steps", "laps_finished")}


def summarize(stats: dict[int, dict], params: CollectParams) -> dict:
    ordered = [stats[i] for i in sorted(stats)]
    returns = np.array([s["return"] for s in ordered])
    steps = np.array([s["steps"] for s in ordered])
    return {
        "episodes": len(ordered),
        "frames": int(steps.sum() + len(ordered)),  # T+1 frames per episode of T steps
        "bytes": int(sum(s["bytes"] for s in ordered)),
        "policy": params.policy,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "mean_steps": float(steps.mean()),
        "laps_finished": int(sum(s["lap_finished"] for s in ordered)),
        "returns": [round(float(r), 2) for r in returns],
    }
