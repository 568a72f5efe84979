"""Environment factory, frame preprocessing and exploration policies (worldmodel.envs)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.envs.box2d.car_racing import FPS, CarRacing
from gymnasium.wrappers import TimeLimit

from worldmodel.envs import (
    FRAME_SIZE,
    HUD_ROWS,
    POLICIES,
    ZOOM_FRAMES,
    EnvConfig,
    FastCarRacing,
    make_env,
    make_policy,
    preprocess,
)
from worldmodel.envs.factory import ActionRepeat
from worldmodel.envs.policies import ACTION_HIGH, ACTION_LOW, measure_policy
from worldmodel.errors import ConfigError


def random_frames(*batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(*batch, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)


# --- preprocess ---------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_hud", [True, False])
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_preprocess_shapes_and_dtype(crop_hud: bool, batch: tuple[int, ...]) -> None:
    out = preprocess(random_frames(*batch), crop_hud=crop_hud, size=64)
    assert out.shape == (*batch, 64, 64, 3)
    assert out.dtype == np.uint8


def test_preprocess_batch_equals_frame_by_frame() -> None:
    frames = random_frames(4)
    batched = preprocess(frames, crop_hud=True)
    for frame, expected in zip(frames, batched, strict=True):
        np.testing.assert_array_equal(preprocess(frame, crop_hud=True), expected)


@pytest.mark.parametrize("crop_hud", [True, False])
@pytest.mark.parametrize("value", [0, 1, 77, 254, 255])
def test_resizing_a_constant_image_keeps_the_constant(crop_hud: bool, value: int) -> None:
    frames = np.full((2, FRAME_SIZE, FRAME_SIZE, 3), value, dtype=np.uint8)
    for size in (64, 48, 37, 96):
        assert np.all(preprocess(frames, crop_hud=crop_hud, size=size) == value)


def test_resize_is_an_area_average() -> None:
    # Halving averages exact 2x2 blocks (ties round to even, as np.rint).
    frame = random_frames()
    expected = np.rint(frame.reshape(48, 2, 48, 2, 3).mean(axis=(1, 3))).astype(np.uint8)
    np.testing.assert_array_equal(preprocess(frame, crop_hud=False, size=48), expected)


def test_hud_crop_removes_exactly_the_dashboard_rows() -> None:
    frame = np.zeros((FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    frame[FRAME_SIZE - HUD_ROWS :] = 255  # only the dashboard is bright
    assert np.all(preprocess(frame, crop_hud=True) == 0)
    uncropped = preprocess(frame, crop_hud=False)
    assert np.all(uncropped[-HUD_ROWS // 2 :] == 255)  # the bottom 8 of 64 rows
    assert np.all(uncropped[: 64 - 8] == 0)


def test_hud_rows_are_the_dashboard_in_real_frames() -> None:
    env = make_env(EnvConfig(max_steps=100))
    frame, _ = env.reset(seed=0)
    for _ in range(ZOOM_FRAMES):
        frame, *_ = env.step(np.array([0.0, 0.5, 0.0], dtype=np.float32))
    black = np.all(frame == 0, axis=-1)
    assert black[FRAME_SIZE - HUD_ROWS :].mean() > 0.8  # black dashboard with a few gauges
    assert not black[: FRAME_SIZE - HUD_ROWS].any()  # the scene above has no pure black


def test_preprocess_rejects_wrong_frames() -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((FRAME_SIZE, FRAME_SIZE, 3), dtype=np.float32), crop_hud=True)
    with pytest.raises(ValueError, match="shape"):
        preprocess(np.zeros((64, 64, 3), dtype=np.uint8), crop_hud=True)


# --- make_env -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("renderer", "expected"), [("fast", FastCarRacing), ("stock", CarRacing)])
def test_make_env_renderer(renderer: str, expected: type) -> None:
    env = make_env(EnvConfig(renderer=renderer))
    assert isinstance(env, ActionRepeat) and isinstance(env.env, TimeLimit)
    assert type(env.unwrapped) is expected
    assert env.unwrapped.continuous
    np.testing.assert_array_equal(env.action_space.low, [-1.0, 0.0, 0.0])
    np.testing.assert_array_equal(env.action_space.high, [1.0, 1.0, 1.0])
    observation, _ = env.reset(seed=0)
    assert observation.shape == (FRAME_SIZE, FRAME_SIZE, 3) and observation.dtype == np.uint8


def test_make_env_passes_options() -> None:
    env = make_env(EnvConfig(domain_randomize=True, lap_complete_percent=0.5), "rgb_array")
    assert env.unwrapped.domain_randomize
    assert env.unwrapped.lap_complete_percent == 0.5
    assert env.render_mode == "rgb_array"


def test_env_config_rejects_bad_values_naming_key_and_fix() -> None:
    with pytest.raises(ConfigError, match="env.renderer='opengl' is not one of fast, stock"):
        EnvConfig(renderer="opengl")
    with pytest.raises(ConfigError, match=r"env.max_steps=0 must be >= 1 \(set env.max_steps"):
        EnvConfig(max_steps=0)
    with pytest.raises(ConfigError, match="env.action_repeat=0 must be >= 1"):
        EnvConfig(action_repeat=0)


def test_truncation_at_max_steps() -> None:
    env = make_env(EnvConfig(max_steps=5))
    env.reset(seed=0)
    action = np.array([0.0, 0.2, 0.0], dtype=np.float32)
    for step in range(1, 6):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated
        assert truncated == (step == 5)


def drive_with_repeat(renderer: str, repeat: int, max_steps: int, actions: np.ndarray):
    env = make_env(EnvConfig(renderer=renderer, action_repeat=repeat, max_steps=max_steps))
    observation, _ = env.reset(seed=3)
    observations, rewards, frames = [observation], [], []
    for action in actions:
        observation, reward, terminated, truncated, info = env.step(action)
        observations.append(observation)
        rewards.append(reward)
        frames.append(info["frames"])
        if terminated or truncated:
            break
    env.close()
    return np.stack(observations), np.array(rewards), frames


@pytest.mark.parametrize("repeat", [2, 3])
def test_action_repeat_skips_drawing_but_not_simulating(repeat: int) -> None:
    # 61 frames do not divide by 2 or 3: the episode is truncated in the middle of a repeat,
    # on a frame that was not drawn, and that observation must still be the true one.
    actions = np.random.default_rng(0).uniform(ACTION_LOW, ACTION_HIGH, (40, 3)).astype(np.float32)
    fast = drive_with_repeat("fast", repeat, 61, actions)
    stock = drive_with_repeat("stock", repeat, 61, actions)
    np.testing.assert_array_equal(fast[0], stock[0])
    np.testing.assert_array_equal(fast[1], stock[1])
    assert fast[2] == stock[2] and sum(fast[2]) == 61 and fast[2][-1] == 61 % repeat

    # The same as holding each action `repeat` frames by hand, every frame drawn.
    held = np.repeat(actions, repeat, axis=0)
    every = drive_with_repeat("fast", 1, 61, held)
    observed = [*range(0, 61, repeat), 61]  # reset, then each agent step's last frame
    np.testing.assert_array_equal(fast[0], every[0][observed])
    summed = [every[1][i:i + repeat].sum() for i in range(0, 61, repeat)]
    np.testing.assert_allclose(fast[1], summed, rtol=0, atol=1e-9)


def test_zoom_ends_after_zoom_frames() -> None:
    env = make_env(EnvConfig())
    env.reset(seed=0)  # the reset observation is the first rendered frame
    for _ in range(ZOOM_FRAMES - 1):
        env.step(np.zeros(3, dtype=np.float32))
    # The camera zoom is complete one simulated second (FPS frames) into the episode.
    assert env.unwrapped.t == pytest.approx(ZOOM_FRAMES / FPS)


# --- policies -----------------------------------------------------------------------------------


def run_policy(name: str, seed: int, observations: np.ndarray, **options) -> np.ndarray:
    policy = make_policy(name, np.random.default_rng(seed), **options)
    return np.stack([policy.act(observation) for observation in observations])


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_are_deterministic_and_within_bounds(name: str) -> None:
    observations = random_frames(40)
    actions = run_policy(name, 3, observations)
    np.testing.assert_array_equal(actions, run_policy(name, 3, observations))
    assert not np.array_equal(actions, run_policy(name, 4, observations))
    assert actions.shape == (40, 3) and actions.dtype == np.float32
    assert np.all(actions >= ACTION_LOW) and np.all(actions <= ACTION_HIGH)


def test_repeat_policy_holds_each_action() -> None:
    actions = run_policy("repeat", 0, random_frames(12), hold_steps=4)
    for start in (0, 4, 8):
        assert np.all(actions[start : start + 4] == actions[start])
    assert not np.array_equal(actions[0], actions[4])


def test_repeat_policy_brakes_rarely() -> None:
    actions = run_policy("repeat", 0, random_frames(400, seed=1), hold_steps=1)
    assert 0.02 < np.mean(actions[:, 2] > 0) < 0.2  # brake_probability 0.1
    assert actions[:, 0].min() < -0.9 and actions[:, 0].max() > 0.9  # full steering range


def test_brownian_policy_moves_in_small_steps() -> None:
    actions = run_policy("brownian", 0, random_frames(50))
    assert np.abs(np.diff(actions, axis=0)).max() < 1.0
    assert np.abs(np.diff(actions, axis=0)).mean() > 0.01


def test_random_controller_redraws_weights_each_episode() -> None:
    policy = make_policy("random_controller", np.random.default_rng(0), max_weight_std=1.0)
    observation = random_frames()
    first = policy.act(observation)
    np.testing.assert_array_equal(policy.act(observation), first)  # depends on the frame only
    policy.reset()
    assert not np.array_equal(policy.act(observation), first)


def test_unknown_policy_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'repeat', 'brownian', 'random_controller'"):
        make_policy("greedy", np.random.default_rng(0))


def test_measure_policy_reports_rollout_statistics() -> None:
    stats = measure_policy("repeat", seeds=[0], steps=20)
    assert set(stats) == {"mean_return", "tiles_visited", "on_road", "mean_speed", "left_playfield"}
    assert 0.0 <= stats["tiles_visited"] <= 1.0 and 0.0 <= stats["on_road"] <= 1.0
    assert stats["left_playfield"] == 0.0
