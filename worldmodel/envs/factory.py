"""Building the CarRacing-v3 environment and turning its frames into model inputs.

The environment is Gymnasium's CarRacing with continuous actions (steer in [-1, 1], gas and brake
in [0, 1]) and 96x96 RGB observations, wrapped in a TimeLimit like `gym.make("CarRacing-v3")`.
Rules inherited from Gymnasium (<= 1.4) that later steps rely on:

- Reward is -0.1 per step plus 1000/N for each of the track's N tiles on first visit.
- `lap_complete_percent` is effectively ignored (Gymnasium issue #1269): the lap check only runs
  on a tile's first visit and the car starts on tile 0, so it never fires. An episode is thus
  *terminated* when every tile has been visited or when the car leaves the playfield (that
  step's reward is then -100), and *truncated* at `max_steps`.
- The first ~ZOOM_FRAMES observations are a camera zoom-in animation: the view starts far out
  and reaches its normal scale after one simulated second (50 steps at 50 FPS).
- The bottom HUD_ROWS rows of every frame are the dashboard: score, speed, ABS, steering, gyro.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import gymnasium
import numpy as np
from gymnasium.envs.box2d.car_racing import CarRacing
from gymnasium.wrappers import TimeLimit

from worldmodel.config import at_least, one_of, require
from worldmodel.envs.fast_car_racing import FastCarRacing
from worldmodel.envs.lowres_car_racing import LowResCarRacing

FRAME_SIZE = 96  # CarRacing observations are FRAME_SIZE x FRAME_SIZE x 3 uint8
HUD_ROWS = 12  # the dashboard strip: 100 of the 800 window rows, i.e. 12 of the 96 frame rows
ZOOM_FRAMES = 50  # the first observations (reset's included) that can show the zoom-in
RENDERERS = {"fast": FastCarRacing, "stock": CarRacing, "lowres": LowResCarRacing}
# Renderers whose frames are Gymnasium's, bit for bit: the only ones that may score.
IDENTICAL = ("fast", "stock")
# Renderers whose observations are already the models' frames (no preprocess).
DRAWS_MODEL_FRAMES = ("lowres",)
SOLVED = 900.0  # CarRacing-v0's "solved" threshold (mean over 100 episodes), the paper's bar


@dataclass
class EnvConfig:
    """CarRacing-v3 options (the `env` config group)."""

    # "fast" (FastCarRacing: bit-identical frames, over 2x the steps/s), "stock" (Gymnasium's),
    # or "lowres" (LowResCarRacing: draws the model frame directly, not identical; it trains,
    # and scoring always switches to "fast": see `scoring_env`).
    renderer: str = "fast"
    # New random road, background and grass colours at every reset.
    domain_randomize: bool = False
    # Passed to CarRacing; has no practical effect in Gymnasium <= 1.4 (see module docstring).
    lap_complete_percent: float = 0.95
    # Episode cap: `truncated` becomes True at this step, as with gym.make("CarRacing-v3").
    max_steps: int = 1000
    # Drop the 12-row dashboard before resizing, as the original World Models code did
    # (frame[0:84] then resize to 64x64). The dashboard's digits and bars are small, precise
    # details that a 32-dim VAE would spend capacity on, and the score is not something the
    # agent needs to see; speed and heading changes are recoverable by the RNN from frame
    # sequences. Turn off to keep the dashboard visible to the models.
    crop_hud: bool = True
    # Side of the square frames the models see.
    frame_size: int = 64
    # Simulated frames per agent step: each action is held this many frames and only the last
    # frame is observed (its rewards are summed). Drawing is nearly all of a CarRacing step and
    # FastCarRacing skips the frames nobody sees, so the agent loop runs 3.8x the simulated
    # frames/s at 4 (scripts/bench.py, docs/benchmarks.md). Episode lengths (env.max_steps,
    # collect.max_steps, controller.max_steps, controller.early_stop_steps) stay in frames, the
    # game's clock; positions in stored episodes (vae.skip_frames, mdrnn.seq_len, dream_start)
    # count agent steps. 1 is the original's agent, acting on every frame.
    action_repeat: int = 1

    def __post_init__(self) -> None:
        require([*renderer_problems("env.renderer", self.renderer, self),
                 *at_least("env", self, ("max_steps", "frame_size", "action_repeat"))])


def renderer_problems(key: str, renderer: str, cfg: EnvConfig) -> list[str]:
    """What stops `renderer` (set by `key`) from drawing cfg's frames."""
    problems = one_of(key, renderer, RENDERERS)
    if renderer in DRAWS_MODEL_FRAMES and not (cfg.crop_hud and cfg.frame_size < FRAME_SIZE):
        problems.append(f"{key}={renderer} draws the dashboard-free view at the models' size: "
                        f"it needs env.crop_hud=true and env.frame_size < {FRAME_SIZE} (got "
                        f"{cfg.crop_hud}, {cfg.frame_size}); use {key}=fast for other frames")
    return problems


def scoring_env(cfg: EnvConfig) -> EnvConfig:
    """The environment that scores: `cfg` itself if its frames are Gymnasium's, else the same
    game on the identical "fast" renderer. A training renderer never produces a score."""
    return cfg if cfg.renderer in IDENTICAL else replace(cfg, renderer="fast")


def car_racing(renderer: str = "fast", **options: Any) -> CarRacing:
    """A bare CarRacing of the named renderer (no wrappers); `options` are CarRacing's, plus
    `frame_size` for a renderer that draws model frames. The entry point that Gymnasium's
    registry builds "worldmodel/CarRacing-v3" with (registration.py)."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer={renderer!r} is not one of {', '.join(RENDERERS)}")
    if renderer not in DRAWS_MODEL_FRAMES and "frame_size" in options:
        raise ValueError(f"frame_size is for the renderers that draw model frames "
                         f"({', '.join(DRAWS_MODEL_FRAMES)}), not {renderer!r}")
    return RENDERERS[renderer](**options)


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gymnasium.Env:
    """Build CarRacing (continuous actions) with the chosen renderer and a `max_steps` TimeLimit.

    `render_mode` is CarRacing's: None, "rgb_array" (600x400 frames from `render()`),
    "state_pixels" or "human". Observations are the 96x96 state frames, or the models'
    frames with a renderer that draws them (`to_model_frames` takes either).
    """
    options = {"frame_size": cfg.frame_size} if cfg.renderer in DRAWS_MODEL_FRAMES else {}
    env = car_racing(
        cfg.renderer,
        render_mode=render_mode,
        lap_complete_percent=cfg.lap_complete_percent,
        domain_randomize=cfg.domain_randomize,
        continuous=True,
        **options,
    )
    return ActionRepeat(TimeLimit(env, max_episode_steps=cfg.max_steps), cfg.action_repeat)


class ActionRepeat(gymnasium.Wrapper):
    """Hold each action for `repeat` frames; observe the last one, sum the rewards.

    `step` stops early at termination or truncation and reports the frames it simulated in
    `info["frames"]` (also with repeat 1), so callers count episode length in frames. With
    FastCarRacing the frames in between are not drawn (`skip_state_frame`); drawing has no effect
    on the simulation, so the returned frames and rewards are those of drawing every frame, which
    the stock renderer does.
    """

    def __init__(self, env: gymnasium.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat
        self.can_skip = isinstance(env.unwrapped, FastCarRacing)  # stock draws every frame

    def step(self, action):
        base = self.env.unwrapped
        total_reward = 0.0
        for frame in range(1, self.repeat + 1):
            if self.can_skip:
                base.skip_state_frame = frame < self.repeat
            try:
                observation, reward, terminated, truncated, info = self.env.step(action)
            finally:
                if self.can_skip:
                    base.skip_state_frame = False
            total_reward += float(reward)
            if terminated or truncated:
                break
        if observation is None:  # the episode ended on a frame that was not drawn
            observation = base.state = base.state_frame()
        info["frames"] = frame
        return observation, total_reward, terminated, truncated, info


@lru_cache(maxsize=16)
def area_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix that resizes one axis by exact area averaging.

    Output pixel i covers the input interval [i * s, (i + 1) * s) with s = in_size / out_size;
    each input pixel is weighted by how much of it falls inside, so every row sums to 1.
    Read-only because it is shared through the cache.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = in_size / out_size
    starts = np.arange(out_size)[:, None] * scale
    ends = starts + scale
    pixel = np.arange(in_size)[None, :]
    overlap = np.clip(np.minimum(ends, pixel + 1) - np.maximum(starts, pixel), 0.0, None)
    weights = (overlap / scale).astype(np.float32)
    weights.setflags(write=False)
    return weights


def preprocess(frames: np.ndarray, crop_hud: bool, size: int = 64) -> np.ndarray:
    """Crop (optionally) and area-resize CarRacing frames: (..., 96, 96, 3) -> (..., size, size, 3).

    Works on a single frame or any batch shape; uint8 in, uint8 out (rounded to nearest).
    With `crop_hud` the bottom HUD_ROWS rows are dropped first, so 84x96 is squeezed to a
    square, as in the original World Models preprocessing.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.shape[-3:] != (FRAME_SIZE, FRAME_SIZE, 3):
        raise ValueError(
            f"expected uint8 frames of shape (..., {FRAME_SIZE}, {FRAME_SIZE}, 3), "
            f"got {frames.dtype} {frames.shape}"
        )
    if crop_hud:
        frames = frames[..., : FRAME_SIZE - HUD_ROWS, :, :]
    batch_shape = frames.shape[:-3]
    height, width, channels = frames.shape[-3:]
    rows = area_weights(height, size)
    cols = area_weights(width, size)
    pixels = frames.reshape(-1, height, width * channels).astype(np.float32)
    # Rows: one (size, height) @ (height, width * channels) product per frame.
    row_resized = np.matmul(rows, pixels).reshape(-1, size, width, channels)
    # Columns: tensordot makes this a single large matrix product over the whole batch.
    resized = np.tensordot(row_resized, cols, axes=([2], [1])).transpose(0, 1, 3, 2)
    resized = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return resized.reshape(batch_shape + (size, size, channels))


def to_model_frames(observations: np.ndarray, cfg: EnvConfig) -> np.ndarray:
    """What the models see of observations of `make_env(cfg)`: (..., 96, 96, 3) state frames
    preprocessed, or the frames themselves where the renderer draws model frames."""
    if cfg.renderer not in DRAWS_MODEL_FRAMES:
        return preprocess(observations, cfg.crop_hud, cfg.frame_size)
    frames = np.asarray(observations)
    if frames.dtype != np.uint8 or frames.shape[-3:] != (cfg.frame_size, cfg.frame_size, 3):
        raise ValueError(f"expected uint8 model frames of shape (..., {cfg.frame_size}, "
                         f"{cfg.frame_size}, 3) from env.renderer={cfg.renderer}, got "
                         f"{frames.dtype} {frames.shape}")
    return frames
