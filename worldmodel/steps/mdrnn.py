"""mdrnn: trains M, the MDN-RNN, on the encoded episodes (paper sections 2.2 and 3.1, step 3 of
the procedure: train M to model P(z_{t+1} | a_t, z_t, h_t)).

Inputs: encode (latents/ep_*.npz) and vae (model.pt, to decode M's predictions in the figures);
in a round k >= 1 also round k-1's mdrnn, whose weights M starts from and whose validation
episodes stay validation episodes.
Outputs, in the step's directory:

    model.pt         checkpoint(mdrnn): constructor arguments and weights (CPU tensors)
    split.json       which episodes trained M and which validated it; the figures' settings
    metrics.jsonl    per epoch: mdrnn/loss, nll, reward, done, their val_* twins, val_z_mse
                     (M's most likely next z against the real one), val_copy_mse (the real z
                     copied one step on: the baseline) and mdrnn/timesteps_per_s
    evaluation.json  held-out numbers behind the figures (worldmodel/figures/mdrnn.py)
    losses.png, dream.png, dream.gif, dream_error.png, calibration.png

Data. Every episode's (mu, logvar) is held in memory as float16: about 1.3 GB for the paper's
10,000 episodes of 1000 steps, plus 0.2 GB of actions and rewards. Each epoch draws
`sequences_per_episode` windows of up to seq_len transitions at random positions in every
training episode (each transition equally likely, see random_windows) and shuffles them into
batches; M's LSTM starts from zeros at each window's first step. A window's z is drawn afresh
from N(mu, exp(logvar)) every time it is used, as the original did, so M never sees the same
latent sequence twice.
Teacher forcing: M reads the real z_t and a_t and is scored on z_{t+1}, r_{t+1} = rewards[t]
and done_{t+1} (the episode terminated right after step t). Windows cut short by an episode's
ends, or by an episode shorter than seq_len, are padded; the mask keeps the padding out of
every loss.

Resume. As in the vae step: a checkpoint after every epoch (atomic), per-epoch random streams
from (seed, "mdrnn", "epoch", e), so a killed run continues from its last completed epoch and
ends with the weights an uninterrupted run gets.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from worldmodel import durable, figures, layout, rewards
from worldmodel.config import at_least, one_of, require
from worldmodel.errors import StoreError
from worldmodel.figures import mdrnn as mdrnn_figures
from worldmodel.latents import DamagedLatents, latent_steps, load_latents
from worldmodel.models import (
    MDRNN,
    MDNOutput,
    checkpoint,
    mdrnn_loss,
    sample,
)
from worldmodel.models.vae import sample_latent
from worldmodel.training import (
    TrainingDiverged,
    cpu_copy,
    finished_model,
    previous_split,
    resume,
    save_atomic,
    save_checkpoint,
    split_rounds,
    warm_start,
)

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

FILES = layout.MDRNN
CHECKPOINT = "checkpoint.pt"  # only while training: what a killed run resumes from


@dataclass
class MDRNNParams:
    """The `mdrnn` config group (epochs and seq_len come from the `data` preset)."""

    hidden_size: int = 256
    """LSTM units (256 in the paper)."""
    num_gaussians: int = 5
    """Mixture components per latent dimension (5 in the paper)."""
    learning_rate: float = 1e-3
    """Adam's learning rate."""
    batch_size: int = 100
    """Windows (sub-sequences) per gradient step."""
    seq_len: int = 100
    """Transitions per window (fewer where an episode's ends cut it); M's LSTM starts from
    zeros at each window's first step."""
    epochs: int = 20
    """Passes over the training episodes."""
    sequences_per_episode: int | None = None
    """Windows drawn from each training episode per epoch; null: ceil((steps + seq_len - 1) /
    seq_len), so an epoch draws each transition about once."""
    grad_clip: float = 1.0
    """The gradients' global norm is clipped to this (the original clipped each element)."""
    reward_weight: float = 1.0
    """Weight of the reward MSE in the loss."""
    done_weight: float = 1.0
    """Weight of the done cross-entropy in the loss."""
    done_pos_weight: float | None = None
    """Up-weights the rare steps where an episode ends (BCE pos_weight); null: 1."""
    rewards: str = "regress"
    """What the reward and done heads learn (worldmodel/rewards.py): regress (the reward by
    squared error, done = the episode terminated) | tiles (P(new tile) and P(leaving the
    playfield), both by cross-entropy: what a dream needs)."""
    z: str = "sample"
    """What M reads and predicts of V's posterior: sample (z ~ q(z|x) afresh each time, as the
    original) | mean (its mean: the z C sees on the real track, controller.z=mean)."""
    val_fraction: float = 0.05
    """Fraction of the episodes (whole episodes) held out for validation and the figures."""
    dream_start: int = 50
    """Frame at which the dream figure lets M take over (50: after CarRacing's zoom-in);
    earlier in episodes too short for dream_steps after it."""
    dream_steps: int = 80
    """Steps M dreams in the figures."""
    dream_temperature: float = 1.0
    """tau of the dream figures' samples (mixture logits / tau, sigma * sqrt(tau))."""


@dataclass
class MDRNNStepConfig:
    seed: int
    mdrnn: MDRNNParams

    def __post_init__(self) -> None:
        check_params(self.mdrnn)


# --- data --------------------------------------------------------------------------------------


@dataclass
class LatentSet:
    """Every episode's latents in memory, one row per frame, episodes one after another.

    Row offsets[i] + t holds frame t of episode i and the transition that leaves it: action
    a_t, reward r_{t+1} and whether the episode ends at t+1. An episode's last frame has no
    transition; its action, reward and done are zero and only ever read as padding.
    """

    names: list[str]
    mu: np.ndarray  # (rows, z_dim) float16
    logvar: np.ndarray  # (rows, z_dim) float16
    actions: np.ndarray  # (rows, 3) float32
    rewards: np.ndarray  # (rows,) float32
    done: np.ndarray  # (rows,) float32, 1.0 at the last transition of a terminated episode
    exits: np.ndarray  # (rows,) float32, 1.0 at the last transition of an episode that left
    #                    the playfield (rewards.exits)
    offsets: np.ndarray  # (episodes,) int64
    steps: np.ndarray  # (episodes,) int64, transitions per episode

    @property
    def z_dim(self) -> int:
        return self.mu.shape[1]


def read_latents(paths: list[Path], log=None) -> LatentSet:
    """Load and validate every latent file into arrays allocated once at their final size, so
    the dataset is never held twice (the paper's 10,000 episodes take 1.5 GB)."""
    steps = np.array([latent_steps(p) for p in paths], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(steps + 1)[:-1]]).astype(np.int64)
    rows, z_dim = int((steps + 1).sum()), load_latents(paths[0]).z_dim
    data = LatentSet(
        names=[p.name for p in paths],
        mu=np.zeros((rows, z_dim), np.float16), logvar=np.zeros((rows, z_dim), np.float16),
        actions=np.zeros((rows, 3), np.float32), rewards=np.zeros(rows, np.float32),
        done=np.zeros(rows, np.float32), exits=np.zeros(rows, np.float32), offsets=offsets,
        steps=steps,
    )
    for i, path in enumerate(tqdm(paths, desc="mdrnn: reading latents", unit="ep",
                                  disable=len(paths) < 20)):
        e = load_latents(path, z_dim)  # a file of another z size is refused here
        if e.steps != steps[i]:
            raise DamagedLatents(f"latent file {path} changed while it was read")
        first = offsets[i]
        data.mu[first : first + e.steps + 1] = e.mu
        data.logvar[first : first + e.steps + 1] = e.logvar
        data.actions[first : first + e.steps] = e.actions
        data.rewards[first : first + e.steps] = e.rewards
        if e.terminated and e.steps:
            data.done[first + e.steps - 1] = 1.0
        data.exits[first : first + e.steps] = rewards.exits(e.rewards, e.terminated)
    if log:
        size = sum(a.nbytes for a in (data.mu, data.logvar, data.actions, data.rewards,
                                      data.done, data.exits))
        log.info("holding %d episodes, %d transitions in memory (%.2f GB)", len(paths),
                 int(steps.sum()), size / 1e9)
    return data


def random_windows(steps: np.ndarray, ids: list[int], seq_len: int, per_episode: int | None,
                   rng: np.random.Generator) -> np.ndarray:
    """(episode, start, length) rows, shuffled: windows at random positions in episodes `ids`.

    A window of seq_len transitions is placed uniformly, overhanging either end of the episode
    by up to seq_len - 1 steps, and cut to the episode. So every transition is equally likely
    to be drawn: windows kept whole inside the episode would rarely reach its first steps, and
    its last one, where a terminated episode ends and M learns `done`.
    """
    rows = []
    for i in ids:
        t = int(steps[i])
        # By default about one draw of each transition per epoch.
        count = (per_episode or math.ceil((t + seq_len - 1) / seq_len)) if t else 0
        ends = rng.integers(1, t + seq_len, size=count)  # exclusive ends, in 1 .. t + seq_len - 1
        starts = np.maximum(ends - seq_len, 0)
        rows.append(np.stack([np.full(count, i), starts, np.minimum(ends, t) - starts], axis=1))
    windows = np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), np.int64)
    return windows[rng.permutation(len(windows))]


def tiled_windows(steps: np.ndarray, ids: list[int], seq_len: int) -> np.ndarray:
    """(episode, start, length) rows covering every transition of episodes `ids` once."""
    rows = [(i, start, min(seq_len, int(steps[i]) - start))
            for i in ids for start in range(0, int(steps[i]), seq_len)]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


class Batch(NamedTuple):
    """Windows ready for teacher forcing: step t reads z_t, a_t and predicts step t+1."""

    mu: torch.Tensor  # (B, L+1, z_dim) frames t = 0..L of each window
    logvar: torch.Tensor  # (B, L+1, z_dim)
    actions: torch.Tensor  # (B, L, 3) a_t
    rewards: torch.Tensor  # (B, L) r_{t+1}; with rewards="tiles" 1.0 where t+1 is a new tile
    done: torch.Tensor  # (B, L) 1.0 where the episode ends at t+1 (tiles: by an exit)
    mask: torch.Tensor  # (B, L) False on padding


def make_batch(data: LatentSet, windows: np.ndarray, device: torch.device,
               mode: str = "regress") -> Batch:
    """The windows' rows as tensors; `mode` (mdrnn.rewards) picks the reward and done
    targets."""
    episode, start, length = windows.T
    k = np.arange(length.max() + 1)
    # A window shorter than the batch's longest repeats its last frame; the mask hides it.
    rows = data.offsets[episode][:, None] + start[:, None] + np.minimum(k, length[:, None])
    steps = rows[:, :-1]

    def tensor(array: np.ndarray) -> torch.Tensor:
        # float16 travels to the device at half the bytes, then becomes float32 there.
        return torch.from_numpy(array).to(device).float()

    tiles = mode == "tiles"
    reward = rewards.tile_events(data.rewards[steps]) if tiles else data.rewards[steps]
    return Batch(
        mu=tensor(data.mu[rows]), logvar=tensor(data.logvar[rows]),
        actions=tensor(data.actions[steps]), rewards=tensor(reward),
        done=tensor((data.exits if tiles else data.done)[steps]),
        mask=torch.from_numpy(k[None, :-1] < length[:, None]).to(device),
    )


# --- training ----------------------------------------------------------------------------------


def check_params(params: MDRNNParams) -> None:
    problems = at_least("mdrnn", params, ("hidden_size", "num_gaussians", "batch_size",
                                          "seq_len", "epochs", "dream_steps"))
    problems += one_of("mdrnn.rewards", params.rewards, rewards.MODES)
    problems += one_of("mdrnn.z", params.z, ("sample", "mean"))
    if params.sequences_per_episode is not None and params.sequences_per_episode < 1:
        problems.append(f"mdrnn.sequences_per_episode={params.sequences_per_episode} must be "
                        ">= 1 (or null)")
    for name in ("learning_rate", "grad_clip"):
        if not getattr(params, name) > 0:
            problems.append(f"mdrnn.{name}={getattr(params, name)} must be > 0")
    if params.dream_start < 0 or params.dream_temperature < 0:
        problems.append("mdrnn.dream_start and mdrnn.dream_temperature must be >= 0")
    if not 0 <= params.val_fraction < 1:
        problems.append(f"mdrnn.val_fraction={params.val_fraction} must be in [0, 1)")
    require(problems)


def new_model(params: MDRNNParams, z_dim: int, seed: int) -> MDRNN:
    """M with its initial weights drawn from `seed` alone, on the CPU (the same on any device)."""
    with torch.random.fork_rng(devices=[]):  # leaves the caller's global torch RNG untouched
        torch.manual_seed(seed)
        return MDRNN(z_dim=z_dim, hidden_size=params.hidden_size,
                     num_gaussians=params.num_gaussians, rewards=params.rewards)


def batch_losses(model: MDRNN, batch: Batch, params: MDRNNParams,
                 generator: torch.Generator) -> tuple[dict[str, torch.Tensor], MDNOutput]:
    # One z sequence per window: z_{t+1} is both step t's target and step t+1's input.
    z = batch.mu if params.z == "mean" else sample_latent(batch.mu, batch.logvar, generator)
    out, _ = model(z[:, :-1], batch.actions)
    losses = mdrnn_loss(out, z[:, 1:], batch.rewards, batch.done, params.reward_weight,
                        params.done_weight, params.done_pos_weight, batch.mask, params.rewards)
    return losses, out


LOGGED = ("loss", "nll", "reward", "done")


def check_finite(value: float, what: str, epoch: int, number: int, ctx: StepContext,
                 params: MDRNNParams) -> None:
    if math.isfinite(value):
        return
    kept = (f"the last good checkpoint (epoch {epoch - 1}) is kept in {ctx.dir / CHECKPOINT}"
            if epoch > 1 else "no epoch was completed")
    raise TrainingDiverged(
        f"mdrnn: the {what} became {value} at epoch {epoch}, batch {number}; {kept}. Lower "
        f"mdrnn.learning_rate (now {params.learning_rate}) or mdrnn.grad_clip (now "
        f"{params.grad_clip}) and run again"
    )


def train_epoch(model: MDRNN, optimizer: torch.optim.Optimizer, data: LatentSet, ids: list[int],
                params: MDRNNParams, epoch: int, ctx: StepContext) -> dict[str, float]:
    """One epoch of random windows; returns the mean loss terms per transition and speed."""
    device = ctx.hardware.device
    windows = random_windows(data.steps, ids, params.seq_len, params.sequences_per_episode,
                             ctx.rng("epoch", epoch))
    generator = torch.Generator(device=device).manual_seed(ctx.derive_seed("epoch", epoch, "z"))
    sums, steps = dict.fromkeys(LOGGED, 0.0), 0
    model.train()
    started = time.perf_counter()
    bar = tqdm(total=int(windows[:, 2].sum()), unit="step", leave=False,
               desc=f"mdrnn epoch {epoch}/{params.epochs}")
    with bar:
        for number, first in enumerate(range(0, len(windows), params.batch_size), start=1):
            batch = make_batch(data, windows[first : first + params.batch_size], device,
                               params.rewards)
            losses, _ = batch_losses(model, batch, params, generator)
            values = {name: losses[name].item() for name in LOGGED}
            check_finite(values["loss"], "loss", epoch, number, ctx, params)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            check_finite(norm.item(), "gradient norm", epoch, number, ctx, params)
            optimizer.step()
            count = int(batch.mask.sum())
            for name in LOGGED:
                sums[name] += values[name] * count
            steps += count
            bar.update(count)
            bar.set_postfix({name: f"{value:.3f}" for name, value in values.items()},
                            refresh=False)
    seconds = time.perf_counter() - started
    out = {name: value / max(steps, 1) for name, value in sums.items()}
    out.update(timesteps=steps, seconds=seconds, timesteps_per_s=steps / seconds)
    return out


@torch.inference_mode()
def evaluate(model: MDRNN, data: LatentSet, ids: list[int], params: MDRNNParams,
             device: torch.device, seed: int) -> dict[str, float]:
    """Validation loss terms per transition (the same windows and z noise every epoch), and the
    error of M's most likely next z against the copy-the-last-z baseline."""
    generator = torch.Generator(device=device).manual_seed(seed)
    names = (*LOGGED, "z_mse", "copy_mse")
    sums, steps = dict.fromkeys(names, 0.0), 0
    model.eval()
    windows = tiled_windows(data.steps, ids, params.seq_len)
    for first in range(0, len(windows), params.batch_size):
        batch = make_batch(data, windows[first : first + params.batch_size], device,
                           params.rewards)
        losses, out = batch_losses(model, batch, params, generator)
        count = int(batch.mask.sum())
        mask = batch.mask.float()
        real_next = batch.mu[:, 1:]
        squared = {"z_mse": (sample(out, deterministic=True) - real_next).pow(2).mean(-1),
                   "copy_mse": (batch.mu[:, :-1] - real_next).pow(2).mean(-1)}
        for name in LOGGED:
            sums[name] += losses[name].item() * count
        for name, value in squared.items():
            sums[name] += (value * mask).sum().item()
        steps += count
    if not steps:
        return {}
    return {f"val_{name}": value / steps for name, value in sums.items()}


def fit(ctx: StepContext, params: MDRNNParams, data: LatentSet, train: list[int],
        val: list[int]) -> MDRNN:
    """Train M for params.epochs, continuing from checkpoint.pt when a killed run left one."""
    device = ctx.hardware.device

    start = warm_start(ctx, MDRNN, {"z_dim": data.z_dim, "hidden_size": params.hidden_size,
                                    "num_gaussians": params.num_gaussians,
                                    "rewards": params.rewards},
                       "vae.z_dim and mdrnn's sizes and rewards")

    def make() -> tuple[MDRNN, torch.optim.Optimizer]:
        model = new_model(params, data.z_dim, ctx.derive_seed("init"))
        if start is not None:
            model.load_state_dict(start)
        model = model.to(device)
        return model, torch.optim.Adam(model.parameters(), lr=params.learning_rate)

    model, optimizer, done, rows = resume(ctx.dir, CHECKPOINT, make, device, ctx.log)
    if done:
        ctx.log.info("resuming after epoch %d of %d", done, params.epochs)
    ctx.log.info("training on %s with %d torch threads", device, torch.get_num_threads())
    for epoch in range(done + 1, params.epochs + 1):
        metrics = train_epoch(model, optimizer, data, train, params, epoch, ctx)
        if val:
            metrics.update(evaluate(model, data, val, params, device, ctx.derive_seed("val")))
        # Logged before the checkpoint: a resume drops the rows of epochs after its own.
        rows.append(ctx.log_metrics(metrics, epoch=epoch))
        save_checkpoint(ctx.dir / CHECKPOINT, model, optimizer, epoch, rows)
        ctx.log.info(
            "epoch %d/%d: loss %.3f (nll %.3f, reward %.4f, done %.4f)%s, %.0f timesteps/s",
            epoch, params.epochs, metrics["loss"], metrics["nll"], metrics["reward"],
            metrics["done"],
            (f", validation {metrics['val_loss']:.3f} (z mse {metrics['val_z_mse']:.4f}, "
             f"copy-last {metrics['val_copy_mse']:.4f})") if "val_loss" in metrics else "",
            metrics["timesteps_per_s"])
    return model


# --- the step ----------------------------------------------------------------------------------


def run(ctx: StepContext) -> dict:
    params: MDRNNParams = ctx.config.mdrnn
    encode_dir, vae_dir = ctx.input("encode").path, ctx.input("vae").path
    paths = sorted((encode_dir / "latents").glob("ep_*.npz"))
    if not paths:
        raise StoreError(f"mdrnn: no latent files in {encode_dir / 'latents'}")
    train, val = split_rounds([p.name for p in paths], params.val_fraction, ctx.rng("split"),
                              previous_split(ctx))
    steps = np.array([latent_steps(p) for p in paths], dtype=np.int64)
    if not steps[train].sum():
        raise StoreError(f"mdrnn: the training episodes in {encode_dir} have no steps")
    # Written on every run, not only while training: a damaged split.json is remade alone.
    durable.write_json(ctx.dir / FILES.SPLIT, {
        "train": [paths[i].name for i in train], "val": [paths[i].name for i in val],
        "train_steps": int(steps[train].sum()), "val_steps": int(steps[val].sum()),
        "figures": {name: value for name, value in asdict(params).items()
                    if name.startswith("dream_")},
    })

    if finished_model(ctx.dir, FILES.MODEL, params.epochs, ctx.log):
        ctx.log.info("training finished in an earlier run; drawing the figures")
    else:
        data = read_latents(paths, ctx.log)
        ctx.log.info("training on %d transitions of %d episodes, validating on %d of %d",
                     steps[train].sum(), len(train), steps[val].sum(), len(val))
        model = fit(ctx, params, data, train, val)
        save_atomic(checkpoint(cpu_copy(model)), ctx.dir / FILES.MODEL)
        del data
    # The optimizer state only served to resume; the result is model.pt.
    (ctx.dir / CHECKPOINT).unlink(missing_ok=True)
    evaluation = mdrnn_figures.make_figures(ctx.dir, encode_dir, vae_dir, ctx.dir)

    rows = figures.read_metrics(ctx.dir / layout.METRICS)
    # The last epoch's numbers, less its seconds: the summary's `seconds` is the whole step's.
    result = {name.removeprefix("mdrnn/"): value for name, value in rows[-1].items()
              if name.startswith("mdrnn/") and name != "mdrnn/seconds"}
    result.update(evaluation["summary"])
    result.update(epochs=params.epochs, train_episodes=len(train), val_episodes=len(val))
    return result
