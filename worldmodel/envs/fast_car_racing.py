"""FastCarRacing: Gymnasium's CarRacing with the same pixels, rendered with less Python overhead.

Stock CarRacing spends about three quarters of every step in `_render_road`, which walks ~800
polygons (400 grass squares and every road tile) one vertex at a time in Python, only to cull all
but the ~50-90 that are on screen. It also loads the HUD font from disk and re-rasterises the score
text on every frame. This subclass keeps physics, rewards, termination and every drawing call
unchanged and removes only that overhead:

- the road and grass polygons are stacked into numpy arrays once per track, and each frame rotates,
  scales and culls all of them at once, using the exact floating-point arithmetic of pygame-ce's
  `Vector2.rotate_rad` (see `rotate_like_pygame`) so the surviving polygons get the very same
  coordinates;
- the survivors are drawn in the original order with the same gfxdraw calls, reading tile colours
  at draw time, because the contact listener recolours tiles in place;
- the font is loaded once and the score text is re-rendered only when its string changes;
- the vertical flip copies into a surface kept across frames instead of a new one each frame.

Observations are therefore bit-identical to the stock environment for the same seed and actions,
which `tests/test_fast_car_racing.py` and `scripts/bench_env.py` check by running both side by
side (never against stored frames: `smoothscale` output depends on the CPU's SIMD path).

On an idle 2-core machine this runs 2.32x the stock steps/s (`scripts/bench_env.py`: 350 vs
151 steps/s; the ratio depends on how many road tiles are in view). What remains of a step is
mostly pixel work that stock does too and that is bound by memory bandwidth: the new 1000x800
surface, the background polygon, the flip and the smoothscale to 96x96, about 1.5 ms of the
~2.8 ms. (Tried and left out: the background polygon as a plain `fill` where it covers the
window, and reusing the canvas with `fill(0)`: identical pixels, no faster.)
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import pygame
from gymnasium.envs.box2d.car_racing import (
    GRASS_DIM,
    MAX_SHAPE_DIM,
    PLAYFIELD,
    SCALE,
    STATE_H,
    STATE_W,
    VIDEO_H,
    VIDEO_W,
    WINDOW_H,
    WINDOW_W,
    ZOOM,
    CarRacing,
)
from pygame import gfxdraw

# pygame-ce's Vector2 treats angles within this distance of a multiple of pi/2 as exact quarter
# turns (its default `epsilon`); reproducing that keeps coordinates bit-identical.
PYGAME_VECTOR_EPSILON = 1e-6

# The culling box of the stock `_draw_colored_polygon`, as (x, y) bounds broadcast over (2, 4, N).
CULL_LOW = np.array([-MAX_SHAPE_DIM, -MAX_SHAPE_DIM]).reshape(2, 1, 1)
CULL_HIGH = np.array([WINDOW_W + MAX_SHAPE_DIM, WINDOW_H + MAX_SHAPE_DIM]).reshape(2, 1, 1)

# The background polygon: the whole playfield.
PLAYFIELD_CORNERS = [(PLAYFIELD, PLAYFIELD), (PLAYFIELD, -PLAYFIELD), (-PLAYFIELD, -PLAYFIELD),
                     (-PLAYFIELD, PLAYFIELD)]

HUD_FONT_SIZE = 42
HUD_TEXT_COLOR = (255, 255, 255)
HUD_TEXT_BACKGROUND = (0, 0, 0)


def rotate_like_pygame(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate points by `angle` radians exactly as pygame-ce's `Vector2.rotate_rad` does.

    `points` has shape (2, ...): x coordinates in points[0], y in points[1].

    pygame-ce first reduces the angle into [0, 2*pi) with C `fmod`, then returns exact quarter
    turns (no trigonometry) when the angle is within 1e-6 of a multiple of pi/2, and otherwise
    computes cos*x - sin*y, sin*x + cos*y in double precision. `math.fmod`, `math.sin` and
    `math.cos` are the same libm calls, and numpy's float64 elementwise products and sums round
    exactly like C doubles, so every result matches `Vector2(p).rotate_rad(angle)` bit for bit.
    """
    x, y = points[0], points[1]
    angle = math.fmod(angle, 2 * math.pi)
    if angle < 0:
        angle += 2 * math.pi
    quarter_turn = math.pi / 2
    if math.fmod(angle + PYGAME_VECTOR_EPSILON, quarter_turn) < 2 * PYGAME_VECTOR_EPSILON:
        quarter_turns = int((angle + PYGAME_VECTOR_EPSILON) / quarter_turn)
        if quarter_turns in (0, 4):
            return np.stack([x, y])
        if quarter_turns == 1:
            return np.stack([-y, x])
        if quarter_turns == 2:
            return np.stack([-x, -y])
        return np.stack([y, -x])
    times_cos = math.cos(angle) * points
    times_sin = math.sin(angle) * points
    rotated = np.empty_like(points)
    np.subtract(times_cos[0], times_sin[1], out=rotated[0])
    np.add(times_sin[0], times_cos[1], out=rotated[1])
    return rotated


def stack_quads(quads: list) -> np.ndarray:
    """Turn N quadrilaterals [(x, y) * 4] into one float64 array of shape (2, 4, N).

    Indexed [coordinate, vertex, quad] so that whole-array operations cover every vertex and
    "any vertex of the quad" is an OR of four contiguous rows.
    """
    vertices = np.array(quads, dtype=np.float64).reshape(-1, 4, 2)
    return np.ascontiguousarray(vertices.transpose(2, 1, 0))


def grass_quads() -> list[list[tuple[float, float]]]:
    """The 400 grass squares of the stock `_render_road`, in its drawing order.

    Built with the same Python float expressions as the stock code so the vertices are identical.
    """
    squares = []
    for x in range(-20, 20, 2):
        for y in range(-20, 20, 2):
            squares.append(
                [
                    (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + 0),
                    (GRASS_DIM * x + 0, GRASS_DIM * y + 0),
                    (GRASS_DIM * x + 0, GRASS_DIM * y + GRASS_DIM),
                    (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + GRASS_DIM),
                ]
            )
    return squares


def visible_screen_quads(
    quads: np.ndarray, zoom: float, translation: tuple[float, float], angle: float,
    low: np.ndarray = CULL_LOW, high: np.ndarray = CULL_HIGH,
) -> tuple[list[int], list[list[list[float]]]]:
    """Transform (2, 4, N) world quads to screen space and cull them as the stock code does.

    A quad is kept when any of its vertices lies in the window grown by MAX_SHAPE_DIM on every
    side, tested on the rotated, zoomed and translated coordinates like `_draw_colored_polygon`
    (`low` and `high` give the box for a surface of another size). Returns the kept indices
    (ascending, i.e. drawing order) and their screen vertices as Python floats, the form the
    stock code hands to gfxdraw.
    """
    screen = rotate_like_pygame(quads, angle) * zoom
    screen[0] += translation[0]
    screen[1] += translation[1]
    inside = (screen >= low) & (screen <= high)
    vertex_inside = inside[0] & inside[1]
    kept = np.flatnonzero(vertex_inside[0] | vertex_inside[1] | vertex_inside[2] | vertex_inside[3])
    return kept.tolist(), screen[:, :, kept].transpose(2, 1, 0).tolist()


class FastCarRacing(CarRacing):
    """Drop-in replacement for `gymnasium.envs.box2d.car_racing.CarRacing` with faster rendering.

    Same constructor, spaces, dynamics, rewards and termination; observations are bit-identical.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._grass_quads = grass_quads()
        # Grass squares then road quads (tiles and kerbs), in the stock drawing order.
        self._quads = stack_quads(self._grass_quads)
        self._road_colors: list[Any] = []
        self._hud_font: pygame.font.Font | None = None
        self._hud_label: str | None = None
        self._hud_text: pygame.Surface | None = None
        self._flipped: pygame.Surface | None = None
        # Set by ActionRepeat for the frames between observations: step() then leaves
        # self.state None instead of drawing a frame nobody looks at.
        self.skip_state_frame = False

    def _create_track(self) -> bool:
        created = super()._create_track()
        if created:
            # reset() renders its first frame right after this, so the arrays must exist now.
            road_quads = [quad for quad, _ in self.road_poly]
            self._quads = stack_quads(self._grass_quads + road_quads)
            # Keep references, not copies: tile colours are numpy arrays that the contact
            # listener overwrites in place when a tile is touched.
            self._road_colors = [color for _, color in self.road_poly]
        return created

    def _camera(self) -> tuple[float, tuple[float, float], float]:
        """Stock's view of the car: zoom (zooming in during the first simulated second),
        translation and angle, in window pixels."""
        assert self.car is not None
        angle = -self.car.hull.angle
        zoom = 0.1 * SCALE * max(1 - self.t, 0) + ZOOM * SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        return zoom, (WINDOW_W / 2 + trans[0], WINDOW_H / 4 + trans[1]), angle

    def _draw_background(self, surface: pygame.Surface, zoom: float,
                         translation: tuple[float, float], angle: float) -> None:
        # One polygon that is never culled: the stock per-vertex path is cheap.
        self._draw_colored_polygon(surface, PLAYFIELD_CORNERS, self.bg_color, zoom, translation,
                                   angle, clip=False)

    def _road_polygons(self, zoom: float, translation: tuple[float, float], angle: float,
                       low: np.ndarray = CULL_LOW, high: np.ndarray = CULL_HIGH,
                       ) -> list[tuple[list[list[float]], Any]]:
        """(screen quad, colour) of every visible grass square and road quad, in the stock
        drawing order; `low` and `high` cull for a surface of another size. Tile colours are
        read now: the contact listener recolours a tile in place when it is touched."""
        grass_count = len(self._grass_quads)
        kept, quads = visible_screen_quads(self._quads, zoom, translation, angle, low, high)
        visible_grass = bisect.bisect_left(kept, grass_count)
        road_colors = [self._road_colors[i - grass_count] for i in kept[visible_grass:]]
        if road_colors:
            # Stock draws road quads in int(channel) colours; astype truncates the same way.
            road_colors = np.array(road_colors).astype(np.int64).tolist()
        colors = [self.grass_color] * visible_grass + road_colors
        return list(zip(quads, colors, strict=True))

    def _render_road(self, zoom: float, translation: tuple[float, float], angle: float) -> None:
        self._draw_background(self.surf, zoom, translation, angle)
        for quad, color in self._road_polygons(zoom, translation, angle):
            gfxdraw.aapolygon(self.surf, quad, color)
            gfxdraw.filled_polygon(self.surf, quad, color)

    def _render_hud_text(self) -> pygame.Surface:
        """The score text, re-rasterised only when the displayed string changes."""
        label = f"{self.reward:04.0f}"
        if self._hud_font is None:
            self._hud_font = pygame.font.Font(pygame.font.get_default_font(), HUD_FONT_SIZE)
            self._hud_text = None
        if self._hud_text is None or label != self._hud_label:
            self._hud_text = self._hud_font.render(label, True, HUD_TEXT_COLOR, HUD_TEXT_BACKGROUND)
            self._hud_label = label
        return self._hud_text

    def state_frame(self) -> np.ndarray:
        """The observation of the current state (what step() returns when it draws)."""
        return self._render("state_pixels")

    def _render(self, mode: str) -> Any:
        assert mode in self.metadata["render_modes"]
        if mode == "state_pixels" and self.skip_state_frame:
            return None

        if not pygame.font.get_init():
            # A pygame.quit() (e.g. closing a human-mode window) invalidates loaded fonts.
            pygame.font.init()
            self._hud_font = None
        if self.screen is None and mode == "human":
            pygame.display.init()
            self.screen = pygame.display.set_mode((WINDOW_W, WINDOW_H))
        if self.clock is None:
            self.clock = pygame.time.Clock()

        if "t" not in self.__dict__:
            return None  # reset() not called yet

        # A fresh surface, as stock: measured faster than clearing a kept one with fill().
        self.surf = pygame.Surface((WINDOW_W, WINDOW_H))

        zoom, trans, angle = self._camera()
        self._render_road(zoom, trans, angle)
        self.car.draw(
            self.surf, zoom, trans, angle, mode not in ["state_pixels_list", "state_pixels"]
        )

        self.surf = self._flip_vertically(self.surf)

        self._render_indicators(WINDOW_W, WINDOW_H)

        text = self._render_hud_text()
        text_rect = text.get_rect()
        text_rect.center = (60, WINDOW_H - WINDOW_H * 2.5 / 40.0)
        self.surf.blit(text, text_rect)

        if mode == "human":
            pygame.event.pump()
            self.clock.tick(self.metadata["render_fps"])
            assert self.screen is not None
            self.screen.fill(0)
            self.screen.blit(self.surf, (0, 0))
            pygame.display.flip()
            return None
        if mode == "rgb_array":
            return self._create_image_array(self.surf, (VIDEO_W, VIDEO_H))
        if mode == "state_pixels":
            return self._create_image_array(self.surf, (STATE_W, STATE_H))
        return self.isopen

    def _flip_vertically(self, canvas: pygame.Surface) -> pygame.Surface:
        """The same pixels as `pygame.transform.flip(canvas, False, True)`, into a kept surface.

        A numpy copy with reversed columns into a surface allocated once saves ~4% of a step
        over transform.flip's new 3.2 MB surface per frame. Only for 32-bit pixels, which is
        what pygame gives a window-sized surface; anything else takes the stock path.
        """
        if canvas.get_bytesize() != 4:
            return pygame.transform.flip(canvas, False, True)
        if self._flipped is None or self._flipped.get_size() != canvas.get_size():
            self._flipped = pygame.Surface(canvas.get_size(), 0, canvas)
        source = pygame.surfarray.pixels2d(canvas)
        target = pygame.surfarray.pixels2d(self._flipped)
        np.copyto(target, source[:, ::-1])
        del source, target  # unlock both surfaces before anything draws on them
        return self._flipped

    def _create_image_array(self, screen: pygame.Surface, size: tuple[int, int]) -> np.ndarray:
        scaled = pygame.transform.smoothscale(screen, size)
        # The same pixels as stock's transposed pixels3d copy, fetched row-major in one call.
        rgb = np.frombuffer(pygame.image.tobytes(scaled, "RGB"), dtype=np.uint8)
        return rgb.reshape(size[1], size[0], 3).copy()

    def close(self) -> None:
        super().close()
        self._hud_font = None
        self._hud_text = None
