"""Exploration policies that generate CarRacing actions for data collection.

Every policy draws all its randomness from the `numpy.random.Generator` it is given, so the same
generator seed (and the same observations) gives the same actions. A new policy is ready for its
first episode; call `reset()` before each further one. `act(observation)` returns float32
[steer, gas, brake] inside CarRacing's bounds ([-1, 1], [0, 1], [0, 1]).

- "repeat": a random action held for `hold_steps` steps: steer U[-1, 1], gas U[0, 1], and brake
  U[0, 1] only with probability `brake_probability` (else 0). With uniform brake the brake
  averages 0.5 and overpowers the gas: the car crawls at ~4 units/s (measured: 3.7) and every
  frame looks alike. Holding lets a choice play out into a visible turn or speed change.
- "brownian": a random walk from a uniform random action, each step adding N(0, step_std^2) per
  dimension, clipped to the bounds; step_std = sqrt(1/50) makes it unit Brownian motion sampled
  at the 50 FPS step. The brake wanders above 0 about half the time, so the car stays slow.
- "random_controller": the original World Models collection policy, an untrained model driving.
  A fixed random projection of the preprocessed frame stands in for the untrained VAE's latent z
  and a random linear layer, redrawn every episode with the original's tiny weight scale, maps
  it to actions with the original's squashing: steer = tanh(a0), gas = (tanh(a1) + 1) / 2,
  brake = clip(tanh(a2), 0, 1). The actions stay near (0, 0.5, 0): straight ahead, half gas.

Measured on the real environment with default options, seeds 0-4 and 300 steps each
(`PYTHONPATH=. python scripts/bench_env.py --policies --seeds 5 --steps 300`): mean return,
fraction of the track's tiles visited, fraction of steps with a wheel on the road, mean hull
speed, fraction of episodes that ended by leaving the playfield (-100).

    policy             return  tiles  road  speed  left
    repeat               18.6  0.049  0.29   33.5  0.00
    brownian              5.9  0.036  0.72    8.2  0.00
    random_controller   -37.4  0.068  0.37   68.3  0.80

Full-length episodes (seeds 0-2, `--seeds 3 --steps 1000`):

    repeat              -73.4  0.038  0.10   24.1  0.33
    brownian            -70.2  0.030  0.31    5.8  0.00
    random_controller   -69.9  0.062  0.29   74.0  1.00

COLLECTION_DEFAULT is "repeat": it is the only policy that both moves at speed and varies all
three actions, which the MDN-RNN needs in order to learn what steering, gas and brake do;
random_controller's near-constant actions teach it almost nothing about steering and its
episodes end early off the playfield, while brownian mostly crawls. Its cost: the car soon
leaves the road (29% of steps on it in the first 300, 10% over 1000), so most frames are grass;
shorter episodes keep more road in the data. (hold_steps=1 measured about the same as 4:
return 20.4, tiles 0.050, road 0.39, speed 25.2.)
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np

from worldmodel.envs.factory import FRAME_SIZE, preprocess

ACTION_LOW = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
ACTION_HIGH = np.array([1.0, 1.0, 1.0], dtype=np.float32)

COLLECTION_DEFAULT = "repeat"


class Policy(abc.ABC):
    """Produces one action per observation; `reset()` starts a new episode."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def reset(self) -> None:  # noqa: B027 - most policies have nothing to reset
        """Start a new episode."""

    @abc.abstractmethod
    def act(self, observation: np.ndarray) -> np.ndarray:
        """The action for this observation: float32 [steer, gas, brake] within bounds."""


class RepeatPolicy(Policy):
    """A random action (steer U[-1, 1], gas U[0, 1], rare brake) held for `hold_steps` steps."""

    def __init__(
        self, rng: np.random.Generator, hold_steps: int = 4, brake_probability: float = 0.1
    ) -> None:
        super().__init__(rng)
        if hold_steps < 1:
            raise ValueError(f"hold_steps must be at least 1, got {hold_steps}")
        if not 0.0 <= brake_probability <= 1.0:
            raise ValueError(f"brake_probability must be in [0, 1], got {brake_probability}")
        self.hold_steps = hold_steps
        self.brake_probability = brake_probability
        self._action = np.zeros(3, dtype=np.float32)
        self._steps_left = 0

    def reset(self) -> None:
        self._steps_left = 0

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self._steps_left == 0:
            steer = self.rng.uniform(-1.0, 1.0)
            gas = self.rng.uniform(0.0, 1.0)
            brake = self.rng.uniform(0.0, 1.0)
            if self.rng.uniform() >= self.brake_probability:
                brake = 0.0
            self._action = np.array([steer, gas, brake], dtype=np.float32)
            self._steps_left = self.hold_steps
        self._steps_left -= 1
        return self._action.copy()


class BrownianPolicy(Policy):
    """Actions follow a random walk clipped to the action bounds, from a uniform random start."""

    def __init__(self, rng: np.random.Generator, step_std: float = math.sqrt(1 / 50)) -> None:
        super().__init__(rng)
        if step_std < 0:
            raise ValueError(f"step_std must be non-negative, got {step_std}")
        self.step_std = step_std
        self._action: np.ndarray | None = None

    def reset(self) -> None:
        self._action = None

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self._action is None:
            action = self.rng.uniform(ACTION_LOW, ACTION_HIGH)
        else:
            action = self._action + self.rng.normal(0.0, self.step_std, size=3)
        self._action = np.clip(action, ACTION_LOW, ACTION_HIGH).astype(np.float32)
        return self._action.copy()


class RandomControllerPolicy(Policy):
    """An untrained encoder and a random linear controller, as in the original data collection.

    The encoder is a fixed Gaussian projection of the preprocessed frame (pixels scaled to
    [-1, 1]) to `latent_size` features, drawn once. At every `reset()` the controller's weights
    and biases are redrawn from N(0, std^2) with std ~ U[0, max_weight_std], the original's
    `init_random_model_params(stdev=np.random.rand() * 0.01)`. Such small weights keep the
    actions near (0, 0.5, 0): the car drives almost straight at half throttle.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        latent_size: int = 32,
        max_weight_std: float = 0.01,
        crop_hud: bool = True,
        frame_size: int = 64,
    ) -> None:
        super().__init__(rng)
        if latent_size < 1:
            raise ValueError(f"latent_size must be at least 1, got {latent_size}")
        if max_weight_std < 0:
            raise ValueError(f"max_weight_std must be non-negative, got {max_weight_std}")
        self.max_weight_std = max_weight_std
        self.crop_hud = crop_hud
        self.frame_size = frame_size
        pixel_count = frame_size * frame_size * 3
        # Scaled so that each feature has at most unit variance, like a latent under its prior.
        self._projection = (
            rng.standard_normal((pixel_count, latent_size)) / math.sqrt(pixel_count)
        ).astype(np.float32)
        self._weights = np.zeros((latent_size, 3), dtype=np.float32)
        self._bias = np.zeros(3, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        latent_size = self._projection.shape[1]
        weight_std = self.rng.uniform(0.0, self.max_weight_std)
        self._weights = self.rng.normal(0.0, weight_std, (latent_size, 3)).astype(np.float32)
        self._bias = self.rng.normal(0.0, weight_std, 3).astype(np.float32)

    def encode(self, observation: np.ndarray) -> np.ndarray:
        """The untrained-encoder features of one uint8 frame: a 96x96x3 state frame, or one
        that a renderer drew at the models' size (env.renderer=lowres, frame_size < 96)."""
        model_shape = (self.frame_size, self.frame_size, 3)
        if observation.shape == model_shape and model_shape[0] < FRAME_SIZE:
            frame = observation
        else:
            frame = preprocess(observation, self.crop_hud, self.frame_size)
        pixels = frame.reshape(-1).astype(np.float32) / 127.5 - 1.0
        return pixels @ self._projection

    def act(self, observation: np.ndarray) -> np.ndarray:
        raw = np.tanh(self.encode(observation) @ self._weights + self._bias)
        steer = raw[0]
        gas = (raw[1] + 1.0) / 2.0
        brake = np.clip(raw[2], 0.0, 1.0)
        return np.array([steer, gas, brake], dtype=np.float32)


POLICIES: dict[str, type[Policy]] = {
    "repeat": RepeatPolicy,
    "brownian": BrownianPolicy,
    "random_controller": RandomControllerPolicy,
}


def make_policy(name: str, rng: np.random.Generator, **options: Any) -> Policy:
    """Build the exploration policy called `name`; `options` go to its constructor."""
    policy_class = POLICIES.get(name)
    if policy_class is None:
        valid = ", ".join(repr(known) for known in POLICIES)
        raise ValueError(f"unknown exploration policy {name!r}; valid choices: {valid}")
    return policy_class(rng, **options)


def collection_policy(name: str, rng: np.random.Generator, crop_hud: bool, frame_size: int
                      ) -> Policy:
    """`make_policy` for driving an environment with these frame settings (env.crop_hud,
    env.frame_size): the policies that look at frames see them as the models do."""
    options = ({"crop_hud": crop_hud, "frame_size": frame_size}
               if POLICIES.get(name) is RandomControllerPolicy else {})
    return make_policy(name, rng, **options)


def measure_policy(
    name: str, seeds: list[int], steps: int, renderer: str = "fast", **options: Any
) -> dict[str, float]:
    """Drive the real environment with policy `name` for up to `steps` steps from each seed.

    Returns averages over the episodes: return, fraction of the track's tiles visited, fraction
    of steps with a wheel on the road, hull speed, and the fraction of episodes that ended by
    leaving the playfield.
    """
    # Imported here so that using the policies does not build environments.
    from worldmodel.envs.factory import EnvConfig, make_env

    env = make_env(EnvConfig(renderer=renderer, max_steps=steps))
    returns, tiles, on_road, speeds, left = [], [], [], [], []
    for seed in seeds:
        policy = make_policy(name, np.random.default_rng(seed), **options)
        policy.reset()
        observation, _ = env.reset(seed=seed)
        car_racing = env.unwrapped
        episode_return = 0.0
        left_playfield = False
        for _ in range(steps):
            observation, reward, terminated, truncated, info = env.step(policy.act(observation))
            episode_return += float(reward)
            on_road.append(any(wheel.tiles for wheel in car_racing.car.wheels))
            speeds.append(float(np.hypot(*car_racing.car.hull.linearVelocity)))
            if terminated or truncated:
                left_playfield = terminated and not info.get("lap_finished", False)
                break
        returns.append(episode_return)
        tiles.append(car_racing.tile_visited_count / len(car_racing.track))
        left.append(left_playfield)
    env.close()
    return {
        "mean_return": float(np.mean(returns)),
        "tiles_visited": float(np.mean(tiles)),
        "on_road": float(np.mean(on_road)),
        "mean_speed": float(np.mean(speeds)),
        "left_playfield": float(np.mean(left)),
    }
