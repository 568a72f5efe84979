"""CarRacing-v3 environments, frame preprocessing and exploration policies."""

from worldmodel.envs.factory import (
    FRAME_SIZE,
    HUD_ROWS,
    IDENTICAL,
    RENDERERS,
    SOLVED,
    ZOOM_FRAMES,
    EnvConfig,
    make_env,
    preprocess,
    renderer_problems,
    scoring_env,
    to_model_frames,
)
from worldmodel.envs.fast_car_racing import FastCarRacing
from worldmodel.envs.lowres_car_racing import LowResCarRacing
from worldmodel.envs.policies import (
    COLLECTION_DEFAULT,
    POLICIES,
    Policy,
    make_policy,
)
from worldmodel.envs.registration import ENV_ID, register_envs

__all__ = [
    "COLLECTION_DEFAULT",
    "ENV_ID",
    "FRAME_SIZE",
    "HUD_ROWS",
    "IDENTICAL",
    "POLICIES",
    "RENDERERS",
    "SOLVED",
    "ZOOM_FRAMES",
    "EnvConfig",
    "FastCarRacing",
    "LowResCarRacing",
    "Policy",
    "make_env",
    "make_policy",
    "preprocess",
    "register_envs",
    "renderer_problems",
    "scoring_env",
    "to_model_frames",
]

register_envs()  # gymnasium.make(ENV_ID, renderer=...): see registration.py
