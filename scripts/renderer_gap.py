"""How far the training renderer's frames are from Gymnasium's, in pixels and in a trained V's z.

Drives the identical renderer ("fast", bit for bit Gymnasium's) and the training renderer
("lowres") side by side from the same seeds with the same actions (an exploration policy fed
the identical frames), so both draw the very same states. For every state it compares the
frame the models see (the identical frame preprocessed, against the lowres frame):

- pixels: mean and 99th-percentile absolute difference per channel, in levels of 0..255;
- z: the distance between a trained V's posterior means of the two frames, set against two
  yardsticks from the identical frames alone: the distance between consecutive agent steps'
  z (how far z moves in one step) and the RMS distance of z to its mean (its spread).

    .venv/bin/python scripts/renderer_gap.py --vae outputs/store/vae/KEY/model.pt
    .venv/bin/python scripts/renderer_gap.py --vae ... --seeds 10 --steps 1000 --json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from worldmodel.envs import EnvConfig, make_env, make_policy, to_model_frames
from worldmodel.models import VAE
from worldmodel.rollout import encode, load_model


def paired_frames(seeds: int, steps: int, policy: str, action_repeat: int
                  ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Model frames of the same states from both renderers, and each episode's length."""
    configs = [EnvConfig(renderer=name, action_repeat=action_repeat, max_steps=steps)
               for name in ("fast", "lowres")]
    envs = [make_env(cfg) for cfg in configs]
    frames: list[list[np.ndarray]] = [[], []]
    lengths = []
    for seed in range(seeds):
        actor = make_policy(policy, np.random.default_rng(seed))
        observations = [env.reset(seed=seed)[0] for env in envs]
        length, done = 0, False
        while not done:
            for cfg, observation, out in zip(configs, observations, frames, strict=True):
                out.append(to_model_frames(observation, cfg))
            length += 1
            action = actor.act(observations[0])
            results = [env.step(action) for env in envs]
            if results[0][1:4] != results[1][1:4]:
                raise RuntimeError(f"seed {seed}: the renderers' games differ")
            observations = [result[0] for result in results]
            done = results[0][2] or results[0][3]
        lengths.append(length)
    for env in envs:
        env.close()
    return np.stack(frames[0]), np.stack(frames[1]), lengths


@torch.inference_mode()
def latent_means(vae: VAE, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([encode(vae, frames[i:i + batch], None).numpy()
                           for i in range(0, len(frames), batch)])


def measure(vae_path: str, seeds: int, steps: int, policy: str, action_repeat: int) -> dict:
    identical, lowres, lengths = paired_frames(seeds, steps, policy, action_repeat)
    pixels = np.abs(identical.astype(np.int16) - lowres.astype(np.int16))
    vae = load_model(VAE, vae_path, "the VAE").to(memory_format=torch.channels_last).eval()
    z_identical, z_lowres = latent_means(vae, identical), latent_means(vae, lowres)
    gap = np.linalg.norm(z_identical - z_lowres, axis=1)
    starts = np.cumsum([0, *lengths[:-1]])
    step = np.concatenate([np.linalg.norm(np.diff(z_identical[a:a + n], axis=0), axis=1)
                           for a, n in zip(starts, lengths, strict=True)])
    spread = float(np.sqrt(np.mean(np.sum((z_identical - z_identical.mean(0)) ** 2, axis=1))))
    return {
        "vae": vae_path, "seeds": seeds, "max_frames": steps, "policy": policy,
        "action_repeat": action_repeat, "states": len(identical),
        "pixel_mean": round(float(pixels.mean()), 3),
        "pixel_p99": float(np.percentile(pixels, 99)),
        "z_distance_mean": round(float(gap.mean()), 4),
        "z_distance_p99": round(float(np.percentile(gap, 99)), 4),
        "z_step_distance_mean": round(float(step.mean()), 4),
        "z_spread_rms": round(spread, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", required=True, help="a trained V: a vae step's model.pt")
    parser.add_argument("--seeds", type=int, default=5, help="episodes, tracks 0..N-1")
    parser.add_argument("--steps", type=int, default=1000, help="frames per episode at most")
    parser.add_argument("--policy", default="repeat", help="what drives (envs/policies.py)")
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = measure(args.vae, args.seeds, args.steps, args.policy, args.action_repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['states']} states ({args.seeds} tracks, `{args.policy}` policy, "
          f"action_repeat {args.action_repeat}), lowres against the preprocessed identical "
          f"frames:")
    print(f"  pixels: mean {result['pixel_mean']:.2f}, 99th percentile "
          f"{result['pixel_p99']:.0f} levels of 255")
    print(f"  V's z: distance mean {result['z_distance_mean']:.3f} "
          f"(99th percentile {result['z_distance_p99']:.3f}); one agent step moves z by "
          f"{result['z_step_distance_mean']:.3f} on average, and z spreads "
          f"{result['z_spread_rms']:.3f} (RMS) around its mean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
