"""Watch the trained agent drive CarRacing-v3: in a window, or into a video file.

    python scripts/watch.py outputs/runs/2026-01-01_12-00-00              # 3 episodes, window
    python scripts/watch.py RUN_DIR --episodes 10
    python scripts/watch.py RUN_DIR --record drive.mp4 --track 1234       # any track, to a file
    python scripts/watch.py RUN_DIR --record drive.gif --episode 7        # evaluation episode 7
    python scripts/watch.py --vae STORE/vae/KEY --mdrnn STORE/mdrnn/KEY \\
        --controller STORE/controller/KEY                                 # explicit results

RUN_DIR is a directory `worldmodel` wrote (outputs/runs/<date_time>, or a multirun job's): its
summary.json holds the paths of the vae, mdrnn and controller results the run used. --vae,
--mdrnn and --controller name stored result directories directly (and override the run's).

Episodes are the evaluate step's: episode i drives the track eval_track(seed, i) with its z
noise, under the environment settings the controller was trained with, so its return is the
one in the evaluate result's returns.json. --track drives any track seed instead. MP4 needs
imageio-ffmpeg (pip install imageio-ffmpeg); GIF needs nothing more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pygame

from worldmodel import layout, seeding
from worldmodel.envs import IDENTICAL, EnvConfig
from worldmodel.errors import WorldModelError
from worldmodel.rollout import (
    Agent,
    AgentFiles,
    DriveSettings,
    Rollout,
    drive,
    load_agent,
    load_controller,
)
from worldmodel.steps import evaluate as evaluate_step

NEEDED = {"vae": (layout.VAE.MODEL,), "mdrnn": (layout.MDRNN.MODEL,),
          "controller": (layout.CONTROLLER.MODEL, layout.CONTROLLER.SUMMARY)}


class Missing(WorldModelError):
    """A result the agent needs cannot be found."""


def find_results(run_dir: Path | None, explicit: dict[str, str | None]) -> dict[str, Path]:
    """The directory of each needed result, from the run's summary.json or the flags."""
    paths: dict[str, Path] = {}
    if run_dir is not None:
        summary_path = run_dir / "summary.json"
        if not summary_path.is_file():
            raise Missing(f"{run_dir} has no summary.json: is it a directory that worldmodel "
                          "wrote (outputs/runs/<date_time>)?")
        summary = json.loads(summary_path.read_text())
        for step in NEEDED:
            if isinstance(summary.get(step), dict) and "path" in summary[step]:
                paths[step] = Path(summary[step]["path"])
    for step, path in explicit.items():
        if path:
            paths[step] = Path(path)
    for step, files in NEEDED.items():
        if step not in paths:
            where = f"{run_dir}/summary.json lists no {step} result (the run stopped before " \
                    f"it? `worldmodel steps=[{step}]` makes it)" if run_dir else "no run given"
            raise Missing(f"the {step} result is needed: {where}; or pass --{step} DIR")
        for name in files:
            if not (paths[step] / name).is_file():
                raise Missing(f"the {step} result {paths[step]} has no {name} (deleted, or "
                              f"not a {step} result? running the pipeline again recomputes it)")
    return paths


def trained_settings(controller_dir: Path) -> tuple[EnvConfig, str, int]:
    """The env settings, z mode and seed the controller was trained with."""
    info = json.loads((controller_dir / layout.CONTROLLER.SUMMARY).read_text())
    manifest_path = controller_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    config = manifest.get("config", {})
    if "env" not in config:
        print(f"warning: {manifest_path} has no env settings; using the defaults",
              file=sys.stderr)
    env = EnvConfig(**config.get("env", {}))
    return env, info["z"], int(config.get("seed", 0))


def episodes_to_drive(args: argparse.Namespace, seed: int) -> list[tuple[str, int, int]]:
    """(label, track seed, z noise seed) of each episode to drive."""
    if args.track is not None:
        return [(f"track {args.track}", args.track, seeding.derive_seed(seed, "watch",
                                                                        args.track))]
    first = args.episode if args.episode is not None else 0
    count = 1 if args.episode is not None or args.record else args.episodes
    indices = range(first, first + count)
    tracks = evaluate_step.episode_tracks(seed, first + count)
    noise = evaluate_step.noise_seeds(seed, first + count)
    return [(f"evaluation episode {i} (track {tracks[i]})", tracks[i], noise[i])
            for i in indices]


def record(agent: Agent, params: np.ndarray, track: int, settings: DriveSettings, noise: int,
           path: Path) -> Rollout:
    """Drive one episode with rendering on, into a video file."""
    writer = evaluate_step.VideoWriter(path, fps=50)
    [result] = drive(agent, params, [track], settings, [noise], render_mode="rgb_array",
                     on_frame=lambda _, frame: writer.add(frame))
    writer.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run directory (summary.json)")
    for step in NEEDED:
        parser.add_argument(f"--{step}", metavar="DIR", help=f"a stored {step} result")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to watch (window)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--episode", type=int, help="drive evaluation episode I only")
    which.add_argument("--track", type=int, help="drive this track seed only")
    parser.add_argument("--record", type=Path, help="write the episode to a .mp4 or .gif")
    parser.add_argument("--max-steps", type=int, help="stop episodes sooner")
    parser.add_argument("--renderer", choices=IDENTICAL, default="fast",
                        help="identical renderers only: the episode is the evaluated one")
    args = parser.parse_args(argv)
    if args.run_dir is None and not all(getattr(args, step) for step in NEEDED):
        parser.error("give a run directory, or --vae, --mdrnn and --controller")
    try:
        paths = find_results(args.run_dir, {step: getattr(args, step) for step in NEEDED})
        env, z_mode, seed = trained_settings(paths["controller"])
        env = replace(env, renderer=args.renderer)
        files = AgentFiles(str(paths["vae"] / "model.pt"), str(paths["mdrnn"] / "model.pt"),
                           env)
        agent = load_agent(files)
        controller = load_controller(paths["controller"] / layout.CONTROLLER.MODEL,
                                     expect=agent.controller_size)
        settings = DriveSettings(max_steps=args.max_steps or env.max_steps, z=z_mode)
        params = controller.get_flat()[None]
        for label, track, noise in episodes_to_drive(args, seed):
            if args.record:
                result = record(agent, params, track, settings, noise, args.record)
            else:
                [result] = drive(agent, params, [track], settings, [noise], render_mode="human")
            lap = ", lap finished" if result.lap_finished else ""
            print(f"{label}: return {result.total_reward:.1f} in {result.steps} steps{lap}")
        if args.record:
            print(f"video: {args.record}")
    except pygame.error as exc:  # before RuntimeError, which it subclasses
        display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        print(f"error: cannot open a window ({exc}; display: {display or 'none'}); record "
              "a video instead: --record out.mp4 (or .gif)", file=sys.stderr)
        return 2
    except (WorldModelError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
