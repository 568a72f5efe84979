"""FastCarRacing must produce exactly the stock CarRacing frames, rewards and episode ends.

Stock and fast run side by side in this process on the same seeds and actions: comparing against
stored frames would not work because `smoothscale` output depends on the CPU's SIMD path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pygame
import pytest
from gymnasium.envs.box2d.car_dynamics import Car
from gymnasium.envs.box2d.car_racing import CarRacing

from worldmodel.envs.fast_car_racing import FastCarRacing, rotate_like_pygame, stack_quads

ActionSource = Callable[[np.random.Generator, int], np.ndarray]


def random_driving(rng: np.random.Generator, step: int) -> np.ndarray:
    """Uniform random actions, including the brake: the car jerks around near the start."""
    return rng.uniform([-1.0, 0.0, 0.0], [1.0, 1.0, 1.0]).astype(np.float32)


def forward_driving(rng: np.random.Generator, step: int) -> np.ndarray:
    """Mostly gas with gentle steering: the car covers distance, visits and recolours tiles."""
    return np.array([rng.uniform(-0.3, 0.3), rng.uniform(0.5, 1.0), 0.0], dtype=np.float32)


def assert_same_episode(
    stock: CarRacing,
    fast: FastCarRacing,
    seed: int,
    steps: int,
    actions: ActionSource,
    reset_options: dict | None = None,
) -> int:
    """Reset both envs with `seed`, step them with the same actions, compare every output.

    Returns the number of steps taken (the episode may end early).
    """
    stock_obs, _ = stock.reset(seed=seed, options=reset_options)
    fast_obs, _ = fast.reset(seed=seed, options=reset_options)
    np.testing.assert_array_equal(fast_obs, stock_obs, err_msg=f"seed {seed}: reset frame")
    rng = np.random.default_rng(seed)
    for step in range(steps):
        action = actions(rng, step)
        stock_obs, stock_reward, stock_term, stock_trunc, _ = stock.step(action)
        fast_obs, fast_reward, fast_term, fast_trunc, _ = fast.step(action)
        assert fast_obs.shape == stock_obs.shape and fast_obs.dtype == stock_obs.dtype
        if not np.array_equal(fast_obs, stock_obs):
            differing = int(np.any(fast_obs != stock_obs, axis=-1).sum())
            pytest.fail(f"seed {seed}, step {step}: {differing} pixels differ")
        assert (fast_reward, fast_term, fast_trunc) == (stock_reward, stock_term, stock_trunc)
        if stock_term or stock_trunc:
            return step + 1
    return steps


def test_rotation_matches_pygame_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-600.0, 600.0, size=(2, 500))
    quarter_turns = [k * math.pi / 2 for k in range(-8, 9)]
    # Within 1e-6 of a quarter turn pygame-ce skips sin/cos; just outside it must not.
    near_quarter_turns = [a + d for a in quarter_turns for d in (-9e-7, -1e-9, 1e-9, 9e-7, 2e-6)]
    angles = [0.0, -0.0, *quarter_turns, *near_quarter_turns, *rng.uniform(-40.0, 40.0, 50)]
    for angle in angles:
        rotated = rotate_like_pygame(points, angle)
        expected = np.array(
            [tuple(pygame.math.Vector2(p).rotate_rad(angle)) for p in points.T.tolist()]
        ).T
        assert rotated.view(np.uint64).tolist() == expected.view(np.uint64).tolist(), angle


def test_stack_quads_layout() -> None:
    quads = [[(0.0, 1.0), (2.0, 3.0), (4.0, 5.0), (6.0, 7.0)], [(8.0, 9.0)] * 4]
    stacked = stack_quads(quads)
    assert stacked.shape == (2, 4, 2)
    assert stacked[:, 2, 0].tolist() == [4.0, 5.0]  # vertex 2 of quad 0 as (x, y)
    assert stack_quads([]).shape == (2, 4, 0)


@pytest.mark.parametrize(
    ("domain_randomize", "actions", "seeds"),
    [
        (False, random_driving, [0, 1]),
        (False, forward_driving, [2, 3]),
        (True, forward_driving, [4, 5]),
        (True, random_driving, [6]),
    ],
)
def test_identical_to_stock(
    domain_randomize: bool, actions: ActionSource, seeds: list[int]
) -> None:
    # One env pair for all seeds: later episodes check that reset() rebuilds the cached track.
    stock = CarRacing(domain_randomize=domain_randomize)
    fast = FastCarRacing(domain_randomize=domain_randomize)
    for seed in seeds:
        assert_same_episode(stock, fast, seed, steps=300, actions=actions)


def test_identical_after_reset_keeping_randomized_colours() -> None:
    stock = CarRacing(domain_randomize=True)
    fast = FastCarRacing(domain_randomize=True)
    assert_same_episode(stock, fast, seed=7, steps=60, actions=forward_driving)
    options = {"randomize": False}
    assert_same_episode(
        stock, fast, seed=8, steps=60, actions=forward_driving, reset_options=options
    )


def test_identical_when_leaving_the_playfield() -> None:
    # Half gas straight ahead leaves the playfield after ~270 steps (full gas just spins the
    # wheels): the -100 termination must match too.
    stock, fast = CarRacing(), FastCarRacing()

    def half_gas(rng: np.random.Generator, step: int) -> np.ndarray:
        return np.array([0.0, 0.5, 0.0], dtype=np.float32)

    taken = assert_same_episode(stock, fast, seed=3, steps=400, actions=half_gas)
    assert taken < 400, "expected the car to leave the playfield"


def test_identical_with_discrete_actions() -> None:
    stock, fast = CarRacing(continuous=False), FastCarRacing(continuous=False)

    def discrete(rng: np.random.Generator, step: int) -> int:
        return int(rng.choice(5, p=[0.1, 0.2, 0.2, 0.4, 0.1]))

    assert_same_episode(stock, fast, seed=9, steps=100, actions=discrete)


def place_car_at_angle(env: CarRacing, angle: float) -> None:
    """Replace the car by one at rest on the start tile, turned rigidly to `angle`.

    `Car(world, angle, ...)` places the wheels as if the angle were 0, which twists the car on
    the first physics step; building it at 0 and then turning every body keeps it still.
    """
    env.car.destroy()
    env.car = Car(env.world, 0.0, *env.track[0][2:4])
    pivot_x, pivot_y = env.car.hull.position
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    for body in [env.car.hull, *env.car.wheels]:
        dx, dy = body.position[0] - pivot_x, body.position[1] - pivot_y
        body.position = (pivot_x + cos_a * dx - sin_a * dy, pivot_y + sin_a * dx + cos_a * dy)
        body.angle = angle


@pytest.mark.parametrize("quarter_turns", [-1, 0, 1, 2, 3, 4])
def test_identical_at_exact_quarter_turn_angles(quarter_turns: int) -> None:
    # Start angles are never multiples of pi/2 on real tracks, so place the car by hand.
    stock, fast = CarRacing(), FastCarRacing()
    for env in (stock, fast):
        env.reset(seed=5)
        place_car_at_angle(env, quarter_turns * math.pi / 2)
    idle = np.zeros(3, dtype=np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(fast.step(idle)[0], stock.step(idle)[0])
        # The car sits still: the rendering angle is inside pygame's exact-rotation window.
        assert abs(math.remainder(stock.car.hull.angle, math.pi / 2)) < 1e-6


def test_rgb_array_render_identical() -> None:
    # rgb_array renders 600x400 frames and draws the car's skid particles: another code path.
    stock = CarRacing(render_mode="rgb_array")
    fast = FastCarRacing(render_mode="rgb_array")
    for env in (stock, fast):
        env.reset(seed=11)
    rng = np.random.default_rng(11)
    for _ in range(40):
        action = np.array([rng.uniform(-1, 1), 1.0, rng.uniform(0, 1)], dtype=np.float32)
        stock.step(action)
        fast.step(action)
        stock_frame, fast_frame = stock.render(), fast.render()
        assert fast_frame.shape == (400, 600, 3)
        np.testing.assert_array_equal(fast_frame, stock_frame)


def test_same_spaces_and_contiguous_observations() -> None:
    stock, fast = CarRacing(), FastCarRacing()
    assert fast.action_space == stock.action_space
    assert fast.observation_space == stock.observation_space
    observation, _ = fast.reset(seed=0)
    assert observation.flags.c_contiguous
    assert fast.observation_space.contains(observation)
