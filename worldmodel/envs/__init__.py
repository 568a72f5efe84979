"""CarRacing-v3 environments, frame preprocessing and exploration policies."""

from worldmodel.envs.factory import (
    FRAME_SIZE,
    HUD_ROWS,
    RENDERERS,
    SOLVED,
    ZOOM_FRAMES,
    EnvConfig,
    make_env,
    preprocess,
)
from worldmodel.envs.fast_car_racing import FastCarRacing
from worldmodel.envs.policies import (
    COLLECTION_DEFAULT,
    POLICIES,
    Policy,
    make_policy,
)

__all__ = [
    "COLLECTION_DEFAULT",
    "FRAME_SIZE",
    "HUD_ROWS",
    "POLICIES",
    "RENDERERS",
    "SOLVED",
    "ZOOM_FRAMES",
    "EnvConfig",
    "FastCarRacing",
    "Policy",
    "make_env",
    "make_policy",
    "preprocess",
]
