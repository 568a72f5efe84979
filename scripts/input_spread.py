"""The spread of C's inputs [z, h] over a run's collected episodes: per input dimension, the
standard deviation of V's posterior mean z and of M's LSTM output h as C would read them.

C is linear on [z, h] and CMA-ES perturbs all 867 weights with one step size, so an input
with a wide spread moves the actions far more than a narrow one for the same weight change.
This prints how wide the spreads are (the lever "per-coordinate step sizes" in
docs/ablations.md). h at step t is M's output after reading (z, a) of steps 0..t-1, from a
zero state, as in worldmodel/rollout.py; z is the stored posterior mean and a the episode's
recorded action.

    .venv/bin/python scripts/input_spread.py outputs/runs/<run>
    .venv/bin/python scripts/input_spread.py outputs/runs/<run> --json spread.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from worldmodel import durable, layout
from worldmodel.latents import load_latents
from worldmodel.models import MDRNN
from worldmodel.report import last_round
from worldmodel.rollout import load_model

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def step_dir(run: Path, summary: dict, kind: str) -> Path:
    """The result directory of the run's (last round's) step of `kind`."""
    entry = last_round(summary, kind)
    if entry is None or "path" not in entry:
        sys.exit(f"{run / 'summary.json'} lists no {kind} result; run the chain up to mdrnn "
                 "first (worldmodel steps=[mdrnn])")
    return Path(entry["path"])


def inputs(latent_files: list[Path], mdrnn: MDRNN) -> tuple[np.ndarray, np.ndarray]:
    """(z, h) as C reads them, stacked over every step of every episode."""
    zs, hs = [], []
    for path in latent_files:
        latents = load_latents(path)
        z = torch.as_tensor(latents.mu[:-1].astype(np.float32))  # the frames C acts on
        a = torch.as_tensor(latents.actions)
        with torch.no_grad():
            out, _ = mdrnn.lstm(torch.cat([z, a], dim=-1).unsqueeze(0))
        h = torch.cat([torch.zeros(1, mdrnn.hidden_size), out[0, :-1]])
        zs.append(z.numpy())
        hs.append(h.numpy())
    return np.concatenate(zs), np.concatenate(hs)


def spread(values: np.ndarray) -> dict[str, object]:
    at = np.quantile(values.std(axis=0), QUANTILES).tolist()
    names = [f"q{round(100 * q)}" for q in QUANTILES]
    return {"dims": int(values.shape[1]), "std_quantiles": dict(zip(names, at, strict=True))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory (with summary.json)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    summary = durable.read_json(args.run / "summary.json")
    latents_dir = step_dir(args.run, summary, "encode") / layout.ENCODE.LATENTS
    mdrnn = load_model(MDRNN, step_dir(args.run, summary, "mdrnn") / layout.MDRNN.MODEL, "M")
    files = sorted(latents_dir.glob("ep_*.npz"))
    if not files:
        sys.exit(f"{latents_dir} holds no latent files; run the encode step again "
                 "(force=[encode])")
    z, h = inputs(files, mdrnn)
    result = {"episodes": len(files), "steps": len(z), "z": spread(z), "h": spread(h)}
    print(f"{len(files)} episodes, {len(z)} steps; std per input dimension at quantiles "
          + " / ".join(f"{round(100 * q)}%" for q in QUANTILES))
    for name in ("z", "h"):
        values = result[name]["std_quantiles"].values()
        print(f"  {name} ({result[name]['dims']} dims): " + " / ".join(f"{v:.3f}" for v in values))
    if args.json:
        durable.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
