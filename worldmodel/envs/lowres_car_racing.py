"""LowResCarRacing: CarRacing-v3 that draws only the frame the models see, at model size.

The models see the dashboard-free top 700 of the window's 800 rows, resized to 64x64. Stock
CarRacing draws the whole 1000x800 window, dashboard included, scales it to 96x96 with
`smoothscale`, and the preprocessing then crops the dashboard and resizes again. This subclass
draws the same polygons in the same colours (background, grass, road, car) onto a small surface
at SUPERSAMPLE of the window's scale (200x140 for the 1000x700 view) and scales that to the
models' frame size once, with the same `smoothscale`. It draws no dashboard and no score text.

Physics, track generation, rewards and termination are FastCarRacing's, hence Gymnasium's: only
the pixels differ, a little (docs/benchmarks.md: `scripts/bench_env.py` and
`scripts/renderer_gap.py` measure it, in pixels and in a trained V's z). Observations are
already model frames, (frame_size, frame_size, 3) uint8, which `to_model_frames` passes
through. Because its frames are not Gymnasium's it only ever trains (collect and the
controller's search); scores are always driven on an identical renderer (`scoring_env`).

`render()` in "rgb_array" or "human" mode still draws the stock window, for videos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pygame
from gymnasium import spaces
from gymnasium.envs.box2d.car_dynamics import SIZE, WHEEL_R, WHEEL_W, WHEEL_WHITE
from gymnasium.envs.box2d.car_racing import MAX_SHAPE_DIM, WINDOW_H, WINDOW_W
from pygame import gfxdraw

from worldmodel.envs.fast_car_racing import FastCarRacing

# The window rows above the dashboard (its 100 bottom rows are 12 of the 96 frame rows).
VIEW_H = 700
# Drawing scale relative to the window. Measured with a one-off script (not kept) that stepped
# this renderer and the identical one side by side on 3 tracks of random steering, 400 agent
# steps each: mean / 99th-percentile pixel difference to the preprocessed stock frames 1.3 / 24
# levels at 0.128 (64 rows), 0.37 / 12 at 0.2, 0.29 / 9 at 0.3 for 1.6x the CPU time of 0.2.
SUPERSAMPLE = 0.2


def wheel_tread(part: Any) -> list[tuple[float, float]] | None:
    """The white mark `Car.draw` puts on a wheel to show it turning (in the wheel's own
    coordinates, by its `phase`), or None: the hull, or a wheel whose mark is out of sight."""
    if "phase" not in part.__dict__:
        return None
    c1, c2 = math.cos(part.phase), math.cos(part.phase + 1.2)
    s1, s2 = math.sin(part.phase), math.sin(part.phase + 1.2)
    if s1 > 0 and s2 > 0:
        return None
    if s1 > 0:
        c1 = float(np.sign(c1))
    if s2 > 0:
        c2 = float(np.sign(c2))
    half, radius = WHEEL_W * SIZE, WHEEL_R * SIZE
    return [(-half, radius * c1), (half, radius * c1), (half, radius * c2), (-half, radius * c2)]


def body_to_screen(points: Sequence[tuple[float, float]], body: Any, zoom: float,
                   translation: tuple[float, float], angle: float) -> list[tuple[float, float]]:
    """Points in a body's own coordinates on the screen: the body's transform, the camera's
    rotation, zoom and translation as one affine map (`Car.draw` applies them one by one)."""
    cos, sin = zoom * math.cos(angle + body.angle), zoom * math.sin(angle + body.angle)
    x, y = body.position
    dx = zoom * (math.cos(angle) * x - math.sin(angle) * y) + translation[0]
    dy = zoom * (math.sin(angle) * x + math.cos(angle) * y) + translation[1]
    return [(cos * px - sin * py + dx, sin * px + cos * py + dy) for px, py in points]


class LowResCarRacing(FastCarRacing):
    """CarRacing whose observations are the models' frames, drawn small. Same constructor as
    CarRacing, plus `frame_size` (the side of the square observation)."""

    def __init__(self, *args: Any, frame_size: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame_size = frame_size
        self.observation_space = spaces.Box(0, 255, (frame_size, frame_size, 3), np.uint8)
        width, height = round(WINDOW_W * SUPERSAMPLE), round(VIEW_H * SUPERSAMPLE)
        self._small = pygame.Surface((width, height))
        margin = MAX_SHAPE_DIM * SUPERSAMPLE  # the stock culling margin, at this scale
        self._cull = (np.array([-margin, -margin]).reshape(2, 1, 1),
                      np.array([width + margin, height + margin]).reshape(2, 1, 1))

    def _render(self, mode: str) -> Any:
        if mode != "state_pixels":
            return super()._render(mode)  # the full window, for videos and human viewing
        if self.skip_state_frame or "t" not in self.__dict__:
            return None  # a frame nobody looks at, or reset() not called yet
        surface = self._small
        surface.fill((0, 0, 0))  # beyond the playfield stays black, as on stock's new surface

        # Stock's camera, scaled to the small surface and shifted up past the 100 window rows
        # that the vertical flip puts under the view.
        zoom, (x, y), angle = self._camera()
        zoom, trans = SUPERSAMPLE * zoom, (SUPERSAMPLE * x, SUPERSAMPLE * (y - (WINDOW_H - VIEW_H)))
        self._draw_background(surface, zoom, trans, angle)
        for quad, color in self._road_polygons(zoom, trans, angle, *self._cull):
            # No anti-aliased outline: at this scale it is wider than stock's one window pixel
            # (the same one-off measurement: 0.37 mean pixel difference without, 0.41 with).
            gfxdraw.filled_polygon(surface, quad, color)
        self._draw_car(surface, zoom, trans, angle)

        size = self.frame_size
        scaled = pygame.transform.smoothscale(surface, (size, size))
        rgb = np.frombuffer(pygame.image.tobytes(scaled, "RGB"), dtype=np.uint8)
        return rgb.reshape(size, size, 3)[::-1].copy()  # flipped like stock's: y up

    def _draw_car(self, surface: pygame.Surface, zoom: float, translation: tuple[float, float],
                  angle: float) -> None:
        """What `Car.draw` draws in a state frame (no skid marks): the hull, the wheels and
        each wheel's white tread mark, the same polygons in the same colours."""
        assert self.car is not None
        for part in self.car.drawlist:
            color = [int(c * 255) for c in part.color]
            tread = wheel_tread(part)
            for fixture in part.fixtures:
                points = body_to_screen(fixture.shape.vertices, fixture.body, zoom,
                                        translation, angle)
                pygame.draw.polygon(surface, color, points)
                if tread is not None:
                    pygame.draw.polygon(surface, WHEEL_WHITE, body_to_screen(
                        tread, fixture.body, zoom, translation, angle))

    def _draw_colored_polygon(self, surface, poly, color, zoom, translation, angle, clip=True):
        # The stock method draws on self.surf, whatever `surface` it is given.
        saved, self.surf = self.surf, surface
        try:
            super()._draw_colored_polygon(surface, poly, color, zoom, translation, angle, clip)
        finally:
            self.surf = saved
