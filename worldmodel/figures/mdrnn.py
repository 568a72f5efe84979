"""The mdrnn step's figures and held-out numbers, drawn from its stored files alone.

    dream.png        one validation episode: M reads the real latents and actions up to the
                     dream's start (after the zoom-in), then feeds on its own samples for
                     dream_steps steps, still given the real actions. Rows, every k-th step: V's
                     decoding of the real z (the best a dream could show), the dream sampled at
                     dream_temperature, and M's most likely path (sample(deterministic=True)).
    dream.gif        the same real and dreamed frames, every step, side by side.
    dream_error.png  squared error between dreamed z and the real mu, per latent dimension,
                     against the number of steps dreamed, over several validation episodes;
                     next to copying the last real z, the baseline a useful dream must beat,
                     and V's posterior variance, what even a perfect sampled dream scores.
    calibration.png  teacher-forced predictions on validation episodes (M reads the real mu, as
                     the controller does): predicted against actual reward, and a reliability
                     diagram of the predicted probability that the episode ends.
    losses.png       training and validation loss per epoch.
    evaluation.json  the numbers behind the figures; its "summary" enters the step's metrics:
                     reward_mse, reward_baseline_mse (predicting the mean reward), reward_corr
                     (Pearson), done_brier (mean squared error of the end probability),
                     done_auroc (null when the held-out steps hold no episode end), done_ends,
                     and the mean over horizons of each dream_error curve. M with
                     mdrnn.rewards=tiles adds tile_auroc and tile_events; its reward is the
                     expected one, and its ends are exits (worldmodel/rewards.py).
                     dream_return_corr_10, _30, _100: how well the returns M dreams over 10,
                     30 and 100 steps (fed the real actions) track the real ones.
                     M with tiles adds dream_tiles_30_coast, _gas, _brake: the tiles M
                     expects over 30 steps of each action held, next to real_tiles_30
                     (action_response: whether the dream answers the controls).

Training episodes stand in when there are no validation episodes. Every random draw comes from a
fixed seed, so drawing again gives the same figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from worldmodel import durable, figures, layout
from worldmodel.dream import step_reward
from worldmodel.errors import StoreError
from worldmodel.latents import Latents, load_latents
from worldmodel.models import MDRNN, VAE, build_from_checkpoint, sample, to_uint8
from worldmodel.rewards import EXIT_REWARD, exits, measure_scale, tile_events

FILES = layout.MDRNN  # what this module draws and reads

DREAM_EPISODES = 8  # validation episodes behind the error curves
DREAM_SAMPLES = 4  # sampled dreams per episode
CALIBRATION_EPISODES = 200  # at most, so the paper's 500 validation episodes take seconds
STRIP_COLUMNS = 10
GIF_SCALE = 2


def load_models(step_dir: Path, vae_dir: Path) -> tuple[MDRNN, VAE]:
    mdrnn = build_from_checkpoint(MDRNN, torch.load(step_dir / FILES.MODEL, weights_only=True))
    vae = build_from_checkpoint(VAE, torch.load(vae_dir / layout.VAE.MODEL, weights_only=True),
                                expect={"z_dim": mdrnn.z_dim})
    return mdrnn.eval(), vae.eval()


def dream_window(steps: int, start: int, horizon: int) -> tuple[int, int]:
    """(start, horizon): start as late as `start` while leaving `horizon` steps, if possible."""
    start = max(0, min(start, steps - horizon))
    return start, min(horizon, steps - start)


@torch.inference_mode()
def dream(model: MDRNN, latents: Latents, start: int, horizon: int, samples: int,
          temperature: float, generator: torch.Generator, deterministic: bool = False
          ) -> np.ndarray:
    """z (samples, horizon, z_dim) dreamed after frame `start`, fed the episode's real actions.

    M first reads the real mu and actions of steps 0..start-1, then mu_start and a_start, and
    from there on its own samples: output h is its z for frame start + h + 1.
    """
    mu = torch.from_numpy(latents.mu).float()
    actions = torch.from_numpy(latents.actions).float()
    state = model.initial_state(samples)
    if start:
        _, (h, c) = model(mu[None, :start], actions[None, :start])
        state = (h.expand(-1, samples, -1).contiguous(), c.expand(-1, samples, -1).contiguous())
    z = mu[start].expand(samples, -1)
    dreamed = []
    for t in range(start, start + horizon):
        out, state = model.step(z, actions[t].expand(samples, -1), state)
        z = sample(out, temperature, generator, deterministic)
        dreamed.append(z)
    return torch.stack(dreamed, dim=1).numpy()


@torch.inference_mode()
def decode(vae: VAE, z: np.ndarray) -> np.ndarray:
    return to_uint8(vae.decode(torch.from_numpy(np.asarray(z, dtype=np.float32))))


DREAM_RETURN_HORIZONS = (10, 30, 100)
WINDOW_EVERY = 25  # steps between the starts of the windows behind dream_return_corr


@torch.inference_mode()
def dream_return_corr(model: MDRNN, episodes: list[Latents], temperature: float,
                      generator: torch.Generator) -> dict[str, float | None]:
    """Whether M's dream tells returns apart, not just its next step: from every WINDOW_EVERY-th
    frame of `episodes`, and from the frame h steps before each episode's end (where an exit
    happens), M having read the real prefix dreams h steps on its own samples, fed the real
    actions, and the return it dreams is correlated (Pearson, over the windows) with the
    real return of those steps, for each h of DREAM_RETURN_HORIZONS. The dream is scored as
    worldmodel/dream.py scores it: ends are drawn from the done head and stop the count, and
    with rewards "tiles" a step pays its expected tile reward and the drawn end -100.

    Teacher-forced numbers can look fine while this fails: on random driving M told new tiles
    apart at AUROC 0.97, and its dream's 200-step tile counts did not correlate with the real
    ones at all (docs/ablations.md, "Iterative training, and the dream")."""
    scale = measure_scale([e.rewards for e in episodes]) if model.rewards == "tiles" else None
    starts = {horizon: [(i, t) for i, e in enumerate(episodes) if e.steps >= horizon
                        for t in sorted({*range(0, e.steps - horizon + 1, WINDOW_EVERY),
                                         e.steps - horizon})]
              for horizon in DREAM_RETURN_HORIZONS}
    states = states_at(model, episodes, {w for found in starts.values() for w in found})
    found = {}
    for horizon, picked in starts.items():
        windows = [(episodes[i], t, states[i, t]) for i, t in picked]
        name = f"dream_return_corr_{horizon}"
        found[name] = None
        if len(windows) < 3:
            continue
        h = torch.cat([state[0] for _, _, state in windows], dim=1)
        c = torch.cat([state[1] for _, _, state in windows], dim=1)
        z = torch.stack([torch.from_numpy(e.mu[t]).float() for e, t, _ in windows])
        alive = torch.ones(len(windows), dtype=torch.bool)
        dreamed = torch.zeros(len(windows), dtype=torch.float64)
        for k in range(horizon):
            actions = torch.stack([torch.from_numpy(e.actions[t + k]).float()
                                   for e, t, _ in windows])
            out, (h, c) = model.step(z, actions, (h, c))
            ended = alive & (torch.rand(len(windows), generator=generator)
                             < torch.sigmoid(out.done_logit))
            dreamed += torch.where(alive, step_reward(out, scale).double(), 0.0)
            if scale is not None:
                dreamed += torch.where(ended, EXIT_REWARD, 0.0)
            alive &= ~ended
            z = sample(out, temperature, generator)
        real = np.array([e.rewards[t : t + horizon].sum(dtype=np.float64)
                         for e, t, _ in windows])
        x = dreamed.numpy()
        if x.std() > 0 and real.std() > 0:
            found[name] = float(np.corrcoef(x, real)[0, 1])
    return found


RESPONSE_STEPS = 30  # steps each constant action is held behind dream_tiles_30_*
CONSTANT_ACTIONS = {"coast": (0.0, 0.0, 0.0), "gas": (0.0, 1.0, 0.0), "brake": (0.0, 0.0, 1.0)}


@torch.inference_mode()
def action_response(model: MDRNN, episodes: list[Latents]) -> dict[str, float | None]:
    """Whether M's dream answers the controls, for M with rewards "tiles": from every
    WINDOW_EVERY-th frame of `episodes` (M having read the real prefix), M dreams
    RESPONSE_STEPS steps holding one action of CONSTANT_ACTIONS at its most likely z (tau 0),
    and the tiles it expects (its P(new tile) summed) are averaged over the starts:
    dream_tiles_30_coast, _gas and _brake, next to real_tiles_30, the tiles the collected
    driving visited in the same steps.

    On the road, full gas passes a tile every few steps and the brake stops the car. An M that
    expects about as many tiles whatever the car does (learned from random driving: 0.69 with
    full gas, 0.74 coasting) pays every controller alike, and the dream cannot rank them."""
    if model.rewards != "tiles":
        return {}
    picked = [(i, t) for i, e in enumerate(episodes)
              for t in range(WINDOW_EVERY, e.steps, WINDOW_EVERY)]
    found: dict[str, float | None] = {f"dream_tiles_{RESPONSE_STEPS}_{name}": None
                                      for name in CONSTANT_ACTIONS}
    found[f"real_tiles_{RESPONSE_STEPS}"] = None
    if not picked:
        return found
    states = states_at(model, episodes, set(picked))
    start_h = torch.cat([states[w][0] for w in picked], dim=1)
    start_c = torch.cat([states[w][1] for w in picked], dim=1)
    start_z = torch.stack([torch.from_numpy(episodes[i].mu[t]).float() for i, t in picked])
    for name, action in CONSTANT_ACTIONS.items():
        z, h, c = start_z, start_h, start_c
        actions = torch.tensor(action).expand(len(picked), model.action_dim)
        tiles = torch.zeros(len(picked), dtype=torch.float64)
        for _ in range(RESPONSE_STEPS):
            out, (h, c) = model.step(z, actions, (h, c))
            tiles += torch.sigmoid(out.reward).double()
            z = sample(out, deterministic=True)
        found[f"dream_tiles_{RESPONSE_STEPS}_{name}"] = float(tiles.mean())
    found[f"real_tiles_{RESPONSE_STEPS}"] = float(np.mean(
        [tile_events(episodes[i].rewards[t : t + RESPONSE_STEPS]).sum() for i, t in picked]))
    return found


@torch.inference_mode()
def states_at(model: MDRNN, episodes: list[Latents], wanted: set[tuple[int, int]]
              ) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """M's state (h, c) before step t of episode i, for each (i, t) in `wanted`, M having read
    the real z and actions of the steps before it: every episode read at once, one batched
    step per t (an episode that has ended reads zeros, and none of its later states is
    wanted)."""
    longest = max((t for _, t in wanted), default=-1) + 1
    z = torch.zeros(len(episodes), longest, model.z_dim)
    a = torch.zeros(len(episodes), longest, model.action_dim)
    for i, e in enumerate(episodes):
        n = min(e.steps, longest)
        z[i, :n] = torch.from_numpy(e.mu[:n]).float()
        a[i, :n] = torch.from_numpy(e.actions[:n]).float()
    at: dict[int, list[int]] = {}
    for i, t in wanted:
        at.setdefault(t, []).append(i)
    h, c = model.initial_state(len(episodes))
    states = {}
    for t in range(longest):
        for i in at.get(t, []):
            states[i, t] = (h[:, i : i + 1], c[:, i : i + 1])
        _, (h, c) = model.step(z[:, t], a[:, t], (h, c))
    return states


def error_curves(model: MDRNN, episodes: list[Latents], settings: dict) -> dict[str, list]:
    """Mean squared error per latent dimension against the real mu, per horizon 1..dream_steps,
    over the episodes that reach that horizon."""
    generator = torch.Generator().manual_seed(0)
    horizon = settings["dream_steps"]
    sums = {name: np.zeros(horizon) for name in ("sampled", "mode", "copy", "posterior")}
    counts = np.zeros(horizon)
    for latents in episodes:
        start, length = dream_window(latents.steps, settings["dream_start"], horizon)
        real = latents.mu[start + 1 : start + 1 + length].astype(np.float32)
        sampled = dream(model, latents, start, length, DREAM_SAMPLES,
                        settings["dream_temperature"], generator)
        mode = dream(model, latents, start, length, 1, 0.0, generator, deterministic=True)
        sums["sampled"][:length] += ((sampled - real) ** 2).mean(axis=(0, 2))
        sums["mode"][:length] += ((mode[0] - real) ** 2).mean(axis=1)
        copy = latents.mu[start].astype(np.float32)
        sums["copy"][:length] += ((copy - real) ** 2).mean(axis=1)
        # M learns z drawn from V's posterior, so even a perfect sampled dream lies this far
        # from the real mu on average: the floor of the sampled curve.
        logvar = latents.logvar[start + 1 : start + 1 + length].astype(np.float32)
        sums["posterior"][:length] += np.exp(logvar).mean(axis=1)
        counts[:length] += 1
    return {name: [float(s / n) if n else None for s, n in zip(value, counts, strict=True)]
            for name, value in sums.items()}


@torch.inference_mode()
def teacher_forced(model: MDRNN, episodes: list[Latents], chunk: int = 16
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted reward and end probability for every step of `episodes`, concatenated. For M
    with rewards="tiles" the reward is the expected one (rewards.RewardScale of `episodes`),
    exit included (P(exit) * -100), and the tile probability is the third array; else that
    one is empty."""
    rewards, done = [], []
    for first in range(0, len(episodes), chunk):
        group = [e for e in episodes[first : first + chunk] if e.steps]
        if not group:
            continue
        longest = max(e.steps for e in group)
        # Padding at the end changes nothing before it: the LSTM only looks back.
        z = torch.zeros(len(group), longest, model.z_dim)
        a = torch.zeros(len(group), longest, model.action_dim)
        for b, e in enumerate(group):
            z[b, : e.steps] = torch.from_numpy(e.mu[:-1]).float()
            a[b, : e.steps] = torch.from_numpy(e.actions).float()
        out, _ = model(z, a)
        for b, e in enumerate(group):
            rewards.append(out.reward[b, : e.steps].numpy())
            done.append(torch.sigmoid(out.done_logit[b, : e.steps]).numpy())
    predicted, done = np.concatenate(rewards), np.concatenate(done)
    if model.rewards != "tiles":
        return predicted, done, np.zeros(0)
    p_tile = 1 / (1 + np.exp(-predicted.astype(np.float64)))
    scale = measure_scale([e.rewards for e in episodes])
    # The exit's -100 is part of the reward M models: its expectation is P(exit) * -100.
    return scale.expected(p_tile) + done * EXIT_REWARD, done, p_tile


def actual(episodes: list[Latents], mode: str = "regress") -> tuple[np.ndarray, np.ndarray]:
    """Real reward r_{t+1} and episode end done_{t+1} for every step, as `teacher_forced`;
    with mode "tiles" an end is an exit (rewards.exits), what M's done head predicts then."""
    if mode == "tiles":
        ends = [exits(e.rewards, e.terminated) > 0 for e in episodes if e.steps]
    else:
        ends = [np.arange(e.steps) == e.steps - 1 if e.terminated else np.zeros(e.steps, bool)
                for e in episodes if e.steps]
    return (np.concatenate([e.rewards for e in episodes if e.steps]).astype(np.float64),
            np.concatenate(ends))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counting half; None without both."""
    positives, negatives = scores[labels], np.sort(scores[~labels])
    if not len(positives) or not len(negatives):
        return None
    below = np.searchsorted(negatives, positives, side="left")
    ties = np.searchsorted(negatives, positives, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(positives) * len(negatives)))


def calibration_numbers(pred_reward: np.ndarray, pred_done: np.ndarray, reward: np.ndarray,
                        done: np.ndarray) -> dict:
    spread = pred_reward.std() * reward.std()
    corr = float(np.corrcoef(pred_reward, reward)[0, 1]) if spread > 0 else None
    return {
        "reward_mse": float(np.mean((pred_reward - reward) ** 2)),
        "reward_baseline_mse": float(reward.var()),
        "reward_corr": corr,
        "done_brier": float(np.mean((pred_done - done) ** 2)),
        "done_auroc": auroc(pred_done, done),
        "done_ends": int(done.sum()),
        "steps": len(reward),
    }


def draw_calibration(pred_reward: np.ndarray, pred_done: np.ndarray, reward: np.ndarray,
                     done: np.ndarray, numbers: dict, path: Path, which: str) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    # A fixed subsample keeps the scatter readable and the file small at the paper's scale.
    picks = np.random.default_rng(0).permutation(len(reward))[:5000]
    left.scatter(reward[picks], pred_reward[picks], s=6, alpha=0.3)
    low = min(reward.min(), pred_reward.min())
    high = max(reward.max(), pred_reward.max())
    left.plot([low, high], [low, high], color="grey", linewidth=1, label="perfect")
    corr = "n/a" if numbers["reward_corr"] is None else f"{numbers['reward_corr']:.2f}"
    left.set_title(f"reward: MSE {numbers['reward_mse']:.3g} (predicting the mean: "
                   f"{numbers['reward_baseline_mse']:.3g}), r = {corr}", fontsize=9)
    left.set_xlabel("actual reward r_{t+1}")
    left.set_ylabel("predicted reward")
    left.legend(fontsize=8)

    edges = np.linspace(0, 1, 11)
    bins = np.clip(np.digitize(pred_done, edges) - 1, 0, 9)
    used = [b for b in range(10) if (bins == b).any()]
    right.plot([0, 1], [0, 1], color="grey", linewidth=1, label="perfectly calibrated")
    right.plot([pred_done[bins == b].mean() for b in used], [done[bins == b].mean() for b in used],
               marker="o", label="bins of 0.1")
    for b in used:
        right.annotate(str(int((bins == b).sum())), (pred_done[bins == b].mean(),
                       done[bins == b].mean()), fontsize=7, xytext=(3, -9),
                       textcoords="offset points")
    auc = "n/a" if numbers["done_auroc"] is None else f"{numbers['done_auroc']:.2f}"
    right.set_title(f"episode end: Brier {numbers['done_brier']:.3g}, AUROC {auc}, "
                    f"{numbers['done_ends']} ends in {numbers['steps']} steps", fontsize=9)
    right.set_xlabel("predicted probability that the episode ends (marked: steps per bin)",
                    fontsize=9)
    right.set_ylabel("fraction that ended")
    right.legend(fontsize=8)
    fig.suptitle(f"M's reward and end predictions on {which} episodes (teacher forced)",
                 fontsize=10)
    return figures.save(fig, path)


def write_gif(real: np.ndarray, dreamed: np.ndarray, start: int, path: Path) -> Path:
    """Real and dreamed frames side by side, one GIF frame per step (Pillow: a matplotlib need)."""
    from PIL import Image, ImageDraw

    frames = []
    for h, (left, right) in enumerate(zip(real, dreamed, strict=True)):
        pair = np.concatenate([left, np.full((64, 4, 3), 255, np.uint8), right], axis=1)
        pair = pair.repeat(GIF_SCALE, axis=0).repeat(GIF_SCALE, axis=1)
        canvas = Image.new("RGB", (pair.shape[1], pair.shape[0] + 14), "white")
        canvas.paste(Image.fromarray(pair), (0, 14))
        text = f"real | dream  frame {start + h}" + (f" (+{h})" if h else "")
        ImageDraw.Draw(canvas).text((2, 1), text, fill="black")
        frames.append(canvas)
    with durable.atomic_write(path) as f:
        frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:], duration=100,
                       loop=0)
    return path


def make_figures(step_dir: Path, encode_dir: Path, vae_dir: Path, out_dir: Path) -> dict:
    """Draw every figure of an mdrnn result into `out_dir` and write evaluation.json there.

    `step_dir` holds model.pt, split.json and metrics.jsonl; `encode_dir` the latents; `vae_dir`
    V's model.pt. Returns the evaluation (what evaluation.json holds).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    split = json.loads((step_dir / FILES.SPLIT).read_text())
    settings = split["figures"]
    model, vae = load_models(step_dir, vae_dir)
    which = "validation" if split["val"] else "training"
    names = split["val"] or split["train"]
    episodes = [load_latents(encode_dir / "latents" / name, model.z_dim)
                for name in names[:CALIBRATION_EPISODES]]

    # The dream shown: the first episode long enough to dream from dream_start, else the longest.
    need = settings["dream_start"] + settings["dream_steps"]
    shown = next((i for i, e in enumerate(episodes) if e.steps >= need),
                 int(np.argmax([e.steps for e in episodes])))
    latents = episodes[shown]
    start, horizon = dream_window(latents.steps, settings["dream_start"], settings["dream_steps"])
    if horizon < 1:
        raise StoreError(f"mdrnn: the {which} episodes have no step to dream ({names[shown]} "
                         "is the longest)")
    generator = torch.Generator().manual_seed(0)
    first = latents.mu[start].astype(np.float32)[None]
    sampled = np.concatenate([first, dream(model, latents, start, horizon, 1,
                                           settings["dream_temperature"], generator)[0]])
    mode = np.concatenate([first, dream(model, latents, start, horizon, 1, 0.0, generator,
                                        deterministic=True)[0]])
    real = decode(vae, latents.mu[start : start + horizon + 1])
    sampled, mode = decode(vae, sampled), decode(vae, mode)
    every = max(1, math.ceil(horizon / STRIP_COLUMNS))
    columns = slice(0, horizon + 1, every)
    tau = settings["dream_temperature"]
    figures.image_rows(
        [("real (V's decoding)", real[columns]), (f"dream, tau={tau:g}", sampled[columns]),
         ("dream, most likely", mode[columns])],
        out_dir / FILES.DREAM_STRIP,
        title=f"M dreams from frame {start} of {which} episode {names[shown]}: every "
              f"{every} steps up to +{horizon}, fed the real actions",
    )
    write_gif(real, sampled, start, out_dir / FILES.DREAM_GIF)

    dreamers = [e for e in episodes[:DREAM_EPISODES] if e.steps]
    count = len(dreamers)
    curves = error_curves(model, dreamers, settings)
    horizons = list(range(1, settings["dream_steps"] + 1))
    figures.curves(
        {f"dream, sampled (tau={tau:g})": (horizons, curves["sampled"]),
         "dream, most likely": (horizons, curves["mode"]),
         "copy the last real z": (horizons, curves["copy"]),
         "V's posterior variance (a perfect sampled dream)": (horizons, curves["posterior"])},
        out_dir / FILES.DREAM_ERROR, "steps dreamed ahead", "MSE to the real z (per dimension)",
        title=f"M's dream against reality: {count} {which} episode{'s' * (count > 1)}, "
              f"{DREAM_SAMPLES} samples each",
    )

    pred_reward, pred_done, p_tile = teacher_forced(model, episodes)
    reward, done = actual(episodes, model.rewards)
    numbers = calibration_numbers(pred_reward, pred_done, reward, done)
    numbers["rewards"] = model.rewards
    numbers.update(dream_return_corr(model, episodes, settings["dream_temperature"],
                                     torch.Generator().manual_seed(1)))
    numbers.update(action_response(model, episodes))
    if len(p_tile):
        tiles = tile_events(reward) > 0
        numbers.update(tile_auroc=auroc(p_tile, tiles), tile_events=int(tiles.sum()))
    draw_calibration(pred_reward, pred_done, reward, done, numbers,
                     out_dir / FILES.CALIBRATION, which)

    metrics = figures.read_metrics(step_dir / layout.METRICS)
    epochs = [row["epoch"] for row in metrics]
    figures.curves(
        {"train": (epochs, [row.get("mdrnn/loss") for row in metrics]),
         "validation": (epochs, [row.get("mdrnn/val_loss") for row in metrics])},
        out_dir / FILES.LOSSES, "epoch", "loss per step (nll + reward + done)",
        title="M: loss per epoch",
    )

    def mean(values: list) -> float | None:
        known = [v for v in values if v is not None]
        return float(np.mean(known)) if known else None

    evaluation = {
        "episodes": which,
        "summary": {**{k: v for k, v in numbers.items() if k not in ("steps", "rewards")},
                    "dream_mse_sampled": mean(curves["sampled"]),
                    "dream_mse_mode": mean(curves["mode"]),
                    "dream_mse_copy": mean(curves["copy"])},
        "calibration": numbers,
        "dream": {"episode": names[shown], "start": start, "horizon": horizon, **settings,
                  "episodes": count, "samples": DREAM_SAMPLES,
                  "mse": curves},
    }
    durable.write_json(out_dir / FILES.EVALUATION, evaluation)
    return evaluation
