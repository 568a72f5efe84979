"""The dream: a whole CMA-ES population driving inside M at once (paper section 4, done here for
CarRacing: controller=dream trains C in M and then drives the real track).

One dream step, for every agent (candidate x rollout) of the batch together, on one device:

    a            = C([z, h])                       (act_batch, one parameter row per agent)
    out, (h, c)  = M.step(z, a, (h, c))
    z            ~ M's mixture at temperature tau   (logits / tau, sigma * sqrt(tau))
    reward       = M's reward head                  (summed while the agent is alive)
    ended        ~ Bernoulli(sigmoid(done head))    (the agent stops counting after it)

With M trained on rewards "tiles" (worldmodel/rewards.py) the reward of a step is the expected
one, time cost + P(new tile) * tile value (RewardScale, measured on the episodes dreamed from),
and the step on which the end is drawn pays CarRacing's -100 exit: the end is the car leaving
the playfield, the one event that costs it.

Start states. A dream starts from a real encoded frame of a collected episode: frame
`start_frame` (50, after CarRacing's zoom-in; the episode's last frame if it is shorter), or
one drawn from [start_frame, start_last] (states along the collected driving), with M's LSTM
warmed up on the real prefix (the episode's mu and actions before it). A single z does
not show speed or heading; the warmed-up h holds them, as it does for C when it reaches that
frame on the real track, and M's first predictions are made in the context it was trained in.

Episode end. The done head is sampled, not thresholded: M is trained on rare ends (one per
episode), so its per-step probabilities are small but add up (0.01 per step ends 63% of
dreams within 100 steps); a 0.5 threshold would almost never end a dream, and a car that left
the playfield would drive on. Sampling keeps the dream a draw from M's own model of episodes,
like the sampled z. With ends=False no end is drawn (the dream pays expected tiles only).

Randomness. Each agent's noise (component choices, Gaussian noise, end draws) comes from its
own torch.Generator, seeded by the caller and drawn on the CPU in fixed chunks of CHUNK steps,
so an agent's dream depends on its parameters, start and seed only, never on which agents
share its batch or on the device. Agents that share a seed (the same rollout of every
candidate: common random numbers) share the draws. Results of a batch equal those of one agent
at a time up to the float rounding of batched matrix products (about 1e-7).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from worldmodel import durable
from worldmodel.latents import Latents, load_latents
from worldmodel.models import MDRNN, VAE, MDNOutput, act_batch, to_uint8
from worldmodel.rewards import EXIT_REWARD, RewardScale, measure_scale

CHUNK = 64  # steps of noise drawn per generator at a time (fixed: it fixes the draws' order)
CHECK_EVERY = 8  # steps between checks that some agent is still alive (a sync on a GPU)


class Starts(NamedTuple):
    """Dream start states: z (S, z_dim) and M's state h, c (1, S, hidden), on one device."""

    z: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor


class DreamResult(NamedTuple):
    returns: np.ndarray
    """(N,) sum of predicted rewards until the dream ended or the horizon, float64."""
    steps: np.ndarray
    """(N,) steps taken, the one where the end was drawn included."""
    z: np.ndarray | None
    """(N, horizon + 1, z_dim) the dreamed latents from the start z, with record=True."""


@torch.inference_mode()
def warm_up(mdrnn: MDRNN, mu: np.ndarray, actions: np.ndarray, frame: int,
            device: torch.device | str = "cpu") -> Starts:
    """One start state: frame `frame` of an episode, M having read the frames before it."""
    frame = min(frame, len(actions))
    z = torch.from_numpy(np.asarray(mu[frame], dtype=np.float32)).to(device)[None]
    if frame == 0:
        h, c = mdrnn.initial_state(1, device)
        return Starts(z, h, c)
    prefix_z = torch.from_numpy(np.asarray(mu[:frame], dtype=np.float32)).to(device)[None]
    prefix_a = torch.from_numpy(np.asarray(actions[:frame], dtype=np.float32)).to(device)[None]
    _, (h, c) = mdrnn(prefix_z, prefix_a)
    return Starts(z, h, c)


def cat_starts(starts: Sequence[Starts]) -> Starts:
    return Starts(torch.cat([s.z for s in starts]), torch.cat([s.h for s in starts], dim=1),
                  torch.cat([s.c for s in starts], dim=1))


def sample_with_noise(out: MDNOutput, temperature: float, u: torch.Tensor,
                      eps: torch.Tensor) -> torch.Tensor:
    """z (N, z_dim) from the mixtures, with the randomness given: u (N, z_dim) uniform in [0, 1)
    picks each dimension's component by inverting the cumulative weights, eps (N, z_dim) is
    the standard normal noise. The same law as models.mdrnn.sample; tau = 0 is its mode."""
    if temperature == 0:
        chosen = out.logit_pi.argmax(dim=-1, keepdim=True)
        return out.mu.gather(-1, chosen).squeeze(-1)
    # Unnormalised weights against u * their total: softmax's law without its kernel, which is
    # slow over 5 components (it took a quarter of a dream step).
    logits = out.logit_pi / temperature
    cdf = (logits - logits.amax(dim=-1, keepdim=True)).exp().cumsum(dim=-1)
    last = out.logit_pi.shape[-1] - 1
    chosen = (cdf < (u.unsqueeze(-1) * cdf[..., last:])).sum(dim=-1, keepdim=True)
    chosen = chosen.clamp(max=last)
    mu = out.mu.gather(-1, chosen).squeeze(-1)
    sigma = out.log_sigma.gather(-1, chosen).squeeze(-1).exp()
    return mu + sigma * math.sqrt(temperature) * eps


class Noise:
    """Per-seed random streams, drawn CHUNK steps at a time on the CPU, indexed per agent."""

    def __init__(self, seeds: Sequence[int], z_dim: int, device: torch.device | str):
        unique, inverse = np.unique(np.asarray(seeds, dtype=np.int64), return_inverse=True)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in unique]
        self.agent = torch.as_tensor(inverse.reshape(-1), device=device)
        self.z_dim, self.device = z_dim, device
        self.chunk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def at(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u component (N, z_dim), eps (N, z_dim), u end (N,)) for step t; steps in order."""
        if t % CHUNK == 0:
            draws = [(torch.rand(CHUNK, self.z_dim + 1, generator=g),
                      torch.randn(CHUNK, self.z_dim, generator=g)) for g in self.generators]
            u = torch.stack([d[0] for d in draws], dim=1).to(self.device)  # (CHUNK, U, z + 1)
            eps = torch.stack([d[1] for d in draws], dim=1).to(self.device)
            self.chunk = (u[..., :-1], eps, u[..., -1])
        k = t % CHUNK
        return tuple(part[k][self.agent] for part in self.chunk)  # type: ignore[index]


def step_reward(out: MDNOutput, scale: RewardScale | None) -> torch.Tensor:
    """What a dream step pays while the agent is alive: M's reward head, or, for M with
    rewards "tiles", the expected tile reward under `scale` (the drawn end adds the exit)."""
    return out.reward if scale is None else scale.expected(torch.sigmoid(out.reward))


@torch.inference_mode()
def dream_rollouts(mdrnn: MDRNN, params: torch.Tensor, starts: Starts, which: torch.Tensor,
                   seeds: Sequence[int], temperature: float, horizon: int,
                   record: bool = False, scale: RewardScale | None = None,
                   ends: bool = True) -> DreamResult:
    """Dream N agents at once on M's device: agent i runs controller params[i] (N, n_params)
    from start state which[i] with noise seed seeds[i], for at most `horizon` steps. `scale`
    (for M with rewards "tiles") turns its tile probability into a reward. ends=False never
    draws an end: every dream runs the horizon (the noise drawn is the same either way)."""
    device = starts.z.device
    params = params.to(device, torch.float32)
    n = len(params)
    if len(which) != n or len(seeds) != n:
        raise ValueError(f"{n} agents need {n} starts and seeds, got {len(which)} and "
                         f"{len(seeds)}")
    which = torch.as_tensor(which, device=device)
    z, h, c = starts.z[which], starts.h[:, which], starts.c[:, which]
    noise = Noise(seeds, mdrnn.z_dim, device)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    returns = torch.zeros(n, dtype=torch.float64, device=device)
    steps = torch.zeros(n, dtype=torch.int64, device=device)
    path = [z] if record else None
    for t in range(horizon):
        if t % CHECK_EVERY == 0 and not bool(alive.any()):
            break
        actions = act_batch(params, torch.cat([z, h[0]], dim=-1).unsqueeze(1)).squeeze(1)
        out, (h, c) = mdrnn.step(z, actions, (h, c))
        u, eps, u_end = noise.at(t)
        z = sample_with_noise(out, temperature, u, eps)
        ended = alive & (u_end < torch.sigmoid(out.done_logit)) if ends else torch.zeros_like(alive)
        returns += torch.where(alive, step_reward(out, scale), 0.0)
        if scale is not None:
            returns += torch.where(ended, EXIT_REWARD, 0.0)
        steps += alive
        alive &= ~ended
        if path is not None:
            path.append(z)
    dreamed = torch.stack(path, dim=1).cpu().numpy() if path is not None else None
    return DreamResult(returns.cpu().numpy(), steps.cpu().numpy(), dreamed)


@dataclass
class Dreamer:
    """M on a device with the collected episodes it dreams from, for a CMA-ES population.

    A start is (episode, frame). pick_starts draws the frame from [start_frame, start_last]
    (clipped to the episode), so candidates are judged from states along the collected
    driving; with start_last None every dream starts at start_frame."""

    mdrnn: MDRNN
    episodes: list[Path]
    """Latent files (the encode step's latents/ep_*.npz)."""
    start_frame: int
    temperature: float
    horizon: int
    device: torch.device
    start_last: int | None = None
    ends: bool = True
    """Draw episode ends from M's done head (dream_rollouts)."""

    def __post_init__(self) -> None:
        self.mdrnn = self.mdrnn.to(self.device).eval()
        self._starts: dict[tuple[int, int], Starts] = {}  # warm-ups are deterministic
        self._latents: dict[int, Latents] = {}  # each episode read once (kilobytes each)
        self.scale: RewardScale | None = None
        if self.mdrnn.rewards == "tiles":
            self.scale = measure_scale([durable.read_array(p, "rewards", "latent file")
                                        for p in self.episodes])

    def pick_starts(self, rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
        """`count` starts: episodes all different while there are enough, and their frames."""
        episodes = rng.choice(len(self.episodes), count, replace=count > len(self.episodes))
        if self.start_last is None:
            return [(int(e), self.start_frame) for e in episodes]
        # One uniform per start, drawn whatever the episodes' lengths, so the draws stay put.
        u = rng.random(count)
        starts = []
        for e, ue in zip(episodes.tolist(), u.tolist(), strict=True):
            last = min(self.start_last, self.latents(e).steps - 1)
            starts.append((e, self.start_frame + int(ue * max(last - self.start_frame + 1, 1))))
        return starts

    def latents(self, episode: int) -> Latents:
        if episode not in self._latents:
            self._latents[episode] = load_latents(self.episodes[episode], self.mdrnn.z_dim)
        return self._latents[episode]

    def starts(self, starts: Sequence[tuple[int, int]]) -> Starts:
        for episode, frame in starts:
            if (episode, frame) not in self._starts:
                latents = self.latents(episode)
                self._starts[episode, frame] = warm_up(self.mdrnn, latents.mu, latents.actions,
                                                       frame, self.device)
        return cat_starts([self._starts[start] for start in starts])

    def evaluate(self, candidates: np.ndarray, starts: Sequence[tuple[int, int]],
                 seeds: Sequence[int]) -> tuple[np.ndarray, int, float]:
        """Every candidate dreams from every (start, seed); returns each candidate's mean
        return, the agent-steps dreamed and the seconds it took."""
        started = time.perf_counter()
        rollouts = len(starts)
        params = torch.as_tensor(np.asarray(candidates, dtype=np.float32))
        # Agent p * rollouts + r: candidate p on rollout r.
        params = params.repeat_interleave(rollouts, dim=0)
        which = torch.arange(rollouts).repeat(len(candidates))
        result = dream_rollouts(self.mdrnn, params, self.starts(starts), which,
                                list(seeds) * len(candidates), self.temperature, self.horizon,
                                scale=self.scale, ends=self.ends)
        means = result.returns.reshape(len(candidates), rollouts).mean(axis=1)
        return means, int(result.steps.sum()), time.perf_counter() - started

    def record(self, controller: np.ndarray, episode: int, seed: int) -> DreamResult:
        """One dream of one controller from start_frame of an episode, with its latents (to
        decode into frames)."""
        params = torch.as_tensor(np.asarray(controller, dtype=np.float32))[None]
        return dream_rollouts(self.mdrnn, params, self.starts([(episode, self.start_frame)]),
                              torch.zeros(1, dtype=torch.int64), [seed], self.temperature,
                              self.horizon, record=True, scale=self.scale, ends=self.ends)


# --- rendering ---------------------------------------------------------------------------------


@torch.inference_mode()
def decode_frames(vae: VAE, z: np.ndarray, batch: int = 256) -> np.ndarray:
    """V's decoding of latents z (T, z_dim): uint8 frames (T, 64, 64, 3)."""
    vae = vae.eval()
    device = next(vae.parameters()).device
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    return np.concatenate([to_uint8(vae.decode(z[i:i + batch].to(device)).cpu())
                           for i in range(0, len(z), batch)])


def write_gif(frames: np.ndarray, path: Path, scale: int = 2, ms_per_frame: int = 50) -> Path:
    """An animated GIF of uint8 frames (T, H, W, 3)."""
    from PIL import Image

    big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(frame) for frame in big]
    with durable.atomic_write(Path(path)) as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                       duration=ms_per_frame, loop=0)
    return path


# --- the temperature sweep ---------------------------------------------------------------------


def sweep_scores(multirun: Path) -> list[dict]:
    """Per job of a sweep (multirun/<n>/summary.json): tau and the last dream and real scores of
    the CMA-ES mean, read from the controller step's files. Jobs without a finished dream-mode
    controller are skipped."""
    import json

    from worldmodel import figures

    found = []
    for summary_path in sorted(Path(multirun).glob("*/summary.json")):
        step = json.loads(summary_path.read_text()).get("controller")
        if not step or "path" not in step:
            continue
        step_dir = Path(step["path"])
        info_path = step_dir / "controller.json"
        if not info_path.exists():
            continue
        info = json.loads(info_path.read_text())
        scored = [row for row in figures.read_metrics(step_dir / "metrics.jsonl")
                  if "controller/dream_score_mean" in row]
        if info.get("mode") != "dream" or not scored:
            continue
        found.append({"job": summary_path.parent.name, "temperature": info["temperature"],
                      "dream_score": scored[-1]["controller/dream_score_mean"],
                      "real_score": scored[-1]["controller/score_mean"],
                      "generation": scored[-1]["generation"]})
    return found


def temperature_figure(multirun: Path, path: Path) -> Path:
    """Final dream score against real score of the CMA-ES mean, per tau (means over the jobs
    that share a tau, e.g. seeds)."""
    from worldmodel import figures

    rows = sweep_scores(multirun)
    if not rows:
        raise FileNotFoundError(f"no finished controller=dream job in {multirun}/*/summary.json")
    taus = sorted({row["temperature"] for row in rows})

    def mean(key: str) -> list[float]:
        return [float(np.mean([r[key] for r in rows if r["temperature"] == tau])) for tau in taus]

    return figures.curves({"dream score (in M)": (taus, mean("dream_score")),
                           "real score (CarRacing-v3)": (taus, mean("real_score"))},
                          path, "temperature tau", "mean return of the CMA-ES mean",
                          title=f"C trained in the dream: dream vs real score per tau "
                                f"({len(rows)} jobs)")
