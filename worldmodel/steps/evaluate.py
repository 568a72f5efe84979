"""evaluate: the agent's score on tracks it never saw (paper section 3.3: the average return
over 100 random trials; CarRacing counts as solved at 900).

Inputs: vae (model.pt), mdrnn (model.pt), controller (controller.json and the controller
evaluate.controller names: controller.pt, the kept one, or es_mean.pt, CMA-ES's final mean).
Outputs, in the step's directory:

    returns.json                    every episode (track seed, return, steps, lap finished)
                                    and the summary: mean, std, min, max, fraction >= 900
    returns.png                     histogram of the returns
    best_episode.mp4, median_episode.mp4, worst_episode.mp4
                                    the best, the median and the worst episode as the 600x400
                                    picture CarRacing renders (GIF, smaller, when
                                    imageio-ffmpeg is not installed): the worst shows how the
                                    agent fails

Rules. The stock CarRacing-v3 episode: up to env.max_steps (1000) frames, no early stop,
terminated when every tile is visited or the car leaves the playfield. Episode i drives track
eval_track(seed, i), from a range that collection and training never use. C sees z as it was
trained to (controller.json's z); with z = sample, episode i's noise comes from
(seed, "evaluate", "z", i). Episodes run in parallel, a few per worker, and the results do not
depend on the number of workers.

Videos. Nothing is stored while the episodes run; the best, the median and the worst episode
are driven again afterwards, deterministically, with rendering on.

Resume. Finished episodes are appended to episodes.jsonl as they come in; a killed run drives
only the others. A result whose returns.json is intact redraws only what else is missing (a
damaged video is driven again alone); one without it drives every episode again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from worldmodel import durable, layout, seeding
from worldmodel.config import at_least, one_of, require
from worldmodel.envs import SOLVED, EnvConfig, scoring_env
from worldmodel.figures import evaluate as evaluate_figures
from worldmodel.pool import run_tasks, task_deadline
from worldmodel.rollout import (
    Agent,
    AgentFiles,
    DriveSettings,
    Job,
    Rollout,
    drive,
    drive_jobs,
    init_worker,
    kept_controller,
    one_torch_thread,
    stored_agent,
    worker_agent,
)

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

FILES = layout.EVALUATE
PROGRESS = "episodes.jsonl"  # only while driving: the episodes a killed run finished
EPISODES_PER_TASK = 4  # episodes a worker drives together (one batch through V)
STOCK_MAX_STEPS = 1000  # CarRacing-v3's TimeLimit
# evaluate.controller: which of the controller step's controllers drives the evaluation.
CONTROLLERS = {"kept": layout.CONTROLLER.MODEL, "final_mean": layout.CONTROLLER.MEAN_MODEL}


@dataclass
class EvaluateParams:
    """The `evaluate` config group (episodes come from the `data` preset)."""

    episodes: int = 100
    """Episodes, each on its own unseen track (100 in the paper)."""
    video_fps: int = 50
    """Simulated frames per second of video (CarRacing simulates 50): a video shows one picture
    per agent step, video_fps / env.action_repeat of them per second, so 50 is real time."""
    controller: str = "kept"
    """The controller evaluated: kept (controller.pt, the best of the periodic scorings) |
    final_mean (es_mean.pt, CMA-ES's mean where the search ended, the original's choice)."""


@dataclass
class EvaluateConfig:
    seed: int
    env: EnvConfig = field(default_factory=EnvConfig)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)

    def __post_init__(self) -> None:
        require(at_least("evaluate", self.evaluate, ("episodes", "video_fps"))
                + one_of("evaluate.controller", self.evaluate.controller, CONTROLLERS))


def episode_tracks(seed: int, episodes: int) -> list[int]:
    """The evaluation tracks, in EVAL_TRACKS: never a collection or training track."""
    return [seeding.eval_track(seed, i) for i in range(episodes)]


def noise_seeds(seed: int, episodes: int) -> list[int]:
    return [seeding.derive_seed(seed, "evaluate", "z", i) for i in range(episodes)]


# --- videos ------------------------------------------------------------------------------------


def mp4_available() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True


class VideoWriter:
    """uint8 RGB frames (H, W, 3) to an MP4 (imageio-ffmpeg) or a GIF (pillow), streamed.

    The GIF keeps every second frame at half size (a full episode at 600x400 and 50 frames
    per second would be a GIF of hundreds of MB); the MP4 keeps everything. The file appears
    under its name only when complete.
    """

    def __init__(self, path: Path, fps: int):
        self.path, self.fps = Path(path), fps
        self.tmp = durable.tmp_path(self.path)
        self.gif = self.path.suffix.lower() == ".gif"
        if not self.gif and self.path.suffix.lower() != ".mp4":
            raise ValueError(f"video files are .mp4 or .gif, not {self.path.name}")
        if not self.gif and not mp4_available():
            raise RuntimeError("writing MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg); "
                               "or write a .gif")
        self.frames: list = []
        self.count = 0
        self.encoder = None

    def add(self, frame: np.ndarray) -> None:
        self.count += 1
        if self.gif:
            if self.count % 2 == 1:
                from PIL import Image

                image = Image.fromarray(frame[::2, ::2])  # half size, by decimation
                self.frames.append(image.quantize(colors=255, dither=Image.Dither.NONE))
            return
        if self.encoder is None:
            import imageio_ffmpeg

            height, width = frame.shape[:2]
            # 8 divides 600 and 400: the frames keep their size (ffmpeg's blocks are 8 or 16).
            self.encoder = imageio_ffmpeg.write_frames(str(self.tmp), (width, height),
                                                       fps=self.fps, macro_block_size=8)
            self.encoder.send(None)
        self.encoder.send(np.ascontiguousarray(frame))

    def close(self) -> Path:
        if self.gif:
            if not self.frames:
                raise ValueError(f"no frames for {self.path}")
            self.frames[0].save(self.tmp, format="GIF", save_all=True,
                                append_images=self.frames[1:], duration=2000 / self.fps, loop=0)
        elif self.encoder is not None:
            self.encoder.close()
        durable.replace_durably(self.tmp, self.path)
        return self.path


def record_episode(agent: Agent, params: np.ndarray, track: int, settings: DriveSettings,
                   noise_seed: int, path: Path, fps: int) -> Rollout:
    """Drive one episode with rendering on and write its frames to `path` (.mp4 or .gif)."""
    writer = VideoWriter(path, fps)
    [rollout] = drive(agent, params[None], [track], settings, [noise_seed],
                      render_mode="rgb_array", on_frame=lambda _, frame: writer.add(frame))
    writer.close()
    return rollout


def record_task(episode: int, params: np.ndarray, track: int, settings: DriveSettings,
                noise_seed: int, path: str, fps: int) -> Rollout:
    """One pool task: `record_episode` with the worker's models (`episode`: bookkeeping)."""
    with one_torch_thread():
        return record_episode(worker_agent(), params, track, settings, noise_seed, Path(path),
                              fps)


# --- the step ----------------------------------------------------------------------------------


def load_progress(path: Path, tracks: list[int]) -> dict[int, dict]:
    """Episodes a killed run finished (a torn last line is dropped; rows of other tracks are
    ignored)."""
    done: dict[int, dict] = {}
    for row in durable.read_jsonl(path):
        index = row.get("episode")
        if isinstance(index, int) and 0 <= index < len(tracks) \
                and row.get("track") == tracks[index]:
            done[index] = row
    return done


def stored_results(path: Path, tracks: list[int]) -> dict[int, dict]:
    """The episodes of a returns.json an earlier run of this step wrote (a step whose videos
    were damaged redoes only those); {} if there is none or it does not match the tracks."""
    try:
        rows = durable.read_json(path)["episode_results"]
    except (durable.DamagedFile, KeyError, TypeError):
        return {}
    if [row.get("track") for row in rows] != tracks:
        return {}
    return dict(enumerate(rows))


def summarize(rows: list[dict]) -> dict:
    returns = np.array([row["return"] for row in rows])
    return {
        "episodes": len(rows),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "fraction_900": float(np.mean(returns >= SOLVED)),
        "laps_finished": int(sum(row["lap_finished"] for row in rows)),
        "mean_steps": float(np.mean([row["steps"] for row in rows])),
        "returns": [float(r) for r in returns],
        "track_seeds": [row["track"] for row in rows],
    }


def pick_videos(rows: list[dict]) -> dict[str, int]:
    """Episode indices of the best, the median (the lower middle one for even N) and the worst
    return."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["return"], i))
    return {"best_episode": order[-1], "median_episode": order[(len(order) - 1) // 2],
            "worst_episode": order[0]}


def run(ctx: StepContext) -> dict:
    cfg: EvaluateConfig = ctx.config
    params = cfg.evaluate
    env = scoring_env(cfg.env)  # a training renderer (env.renderer=lowres) never scores
    if env != cfg.env:
        ctx.log.info("evaluate: driving on the identical %s renderer, not the training "
                     "renderer %s", env.renderer, cfg.env.renderer)
    files = stored_agent(ctx.input("vae").path, ctx.input("mdrnn").path, env)
    flat, z_mode = kept_controller(ctx.input("controller").path, files,
                                   CONTROLLERS[params.controller])
    if params.controller != "kept":
        ctx.log.info("evaluate: driving %s (evaluate.controller=%s), not the kept controller",
                     CONTROLLERS[params.controller], params.controller)
    if cfg.env.max_steps != STOCK_MAX_STEPS or cfg.env.domain_randomize:
        ctx.log.warning("env.max_steps=%d, env.domain_randomize=%s: not the stock CarRacing-v3 "
                        "rules, so the score does not compare with published ones",
                        cfg.env.max_steps, cfg.env.domain_randomize)

    tracks = episode_tracks(cfg.seed, params.episodes)
    noise = noise_seeds(cfg.seed, params.episodes)
    settings = DriveSettings(max_steps=cfg.env.max_steps, z=z_mode, early_stop_steps=None)
    progress = ctx.dir / PROGRESS
    done = load_progress(progress, tracks)
    done.update(stored_results(ctx.dir / FILES.RESULTS, tracks))
    if not done and any(any(ctx.dir.glob(f"{name}.*")) for name in FILES.VIDEOS):
        ctx.log.warning("%s is missing or damaged and only driving the episodes makes it: "
                        "driving them again", ctx.dir / FILES.RESULTS)
    todo = [i for i in range(params.episodes) if i not in done]
    if done:
        ctx.log.info("%d of %d episodes already driven; driving the other %d", len(done),
                     params.episodes, len(todo))
    chunks = [todo[i:i + EPISODES_PER_TASK] for i in range(0, len(todo), EPISODES_PER_TASK)]
    jobs = [Job(np.repeat(flat[None], len(c), axis=0), [tracks[i] for i in c],
                [noise[i] for i in c]) for c in chunks]
    with tqdm(total=params.episodes, initial=len(done), unit="ep", desc="evaluate") as bar:

        def finished(job: int, rollouts: list[Rollout]) -> None:
            for i, rollout in zip(chunks[job], rollouts, strict=True):
                done[i] = {"episode": i, "track": rollout.track,
                           "return": rollout.total_reward, "steps": rollout.steps,
                           "lap_finished": rollout.lap_finished}
                durable.append_jsonl(progress, done[i])
            bar.update(len(rollouts))

        drive_jobs(jobs, files, settings, ctx.hardware.workers, "evaluating the agent",
                   on_done=finished)

    rows = [done[i] for i in range(params.episodes)]
    summary = {**summarize(rows), "renderer": env.renderer, "controller": params.controller}
    picks = pick_videos(rows)
    durable.write_json(ctx.dir / FILES.RESULTS, {**summary, "z": z_mode, "videos": picks,
                                          "episode_results": rows})
    shown = ", ".join(str(t) for t in tracks[:3]) + (", ..." if len(tracks) > 3 else "")
    ctx.log.info("evaluate: %d episodes on unseen tracks, seeds %s: mean %.1f ± %.1f "
                 "(min %.1f, max %.1f), %.0f%% >= %.0f", summary["episodes"], shown,
                 summary["mean_return"], summary["std_return"], summary["min_return"],
                 summary["max_return"], 100 * summary["fraction_900"], SOLVED)
    evaluate_figures.histogram(summary["returns"], ctx.dir / FILES.HISTOGRAM,
              f"C on {len(rows)} unseen tracks: {summary['mean_return']:.0f} ± "
              f"{summary['std_return']:.0f}")
    summary["videos"] = write_videos(ctx, files, flat, settings, rows, picks, tracks, noise)
    progress.unlink(missing_ok=True)  # returns.json holds every episode now
    return summary


def write_videos(ctx: StepContext, files: AgentFiles, flat: np.ndarray,
                 settings: DriveSettings, rows: list[dict], picks: dict[str, int],
                 tracks: list[int], noise: list[int]) -> list[str]:
    """Drive the picked episodes again with rendering on, one per worker, into video files."""
    suffix = ".mp4" if mp4_available() else ".gif"
    fps = max(1, round(ctx.config.evaluate.video_fps / ctx.config.env.action_repeat))
    tasks = [(i, flat, tracks[i], settings, noise[i], str(ctx.dir / (name + suffix)), fps)
             for name, i in picks.items() if not (ctx.dir / (name + suffix)).exists()]
    workers = max(1, min(ctx.hardware.workers, len(tasks)))
    for (episode, _, track, _, _, path, _), rollout in run_tasks(
        record_task, tasks, workers, "recording videos", initializer=init_worker,
        initargs=(files,), preload=("worldmodel.rollout",),
        deadline_s=task_deadline(settings.max_steps),
    ):
        if rollout.total_reward != rows[episode]["return"]:
            ctx.log.warning("the replay of episode %d (track %d) returned %.2f, not %.2f: "
                            "rendering changed the episode", episode, track,
                            rollout.total_reward, rows[episode]["return"])
        ctx.log.info("video of episode %d (track %d, return %.1f): %s", episode, track,
                     rollout.total_reward, Path(path).name)
    return sorted(name + suffix for name in picks)
