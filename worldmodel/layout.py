"""The files of each step's result, and the names of each round's steps: the one place that
names them.

A step writes these names into its directory; later steps, the figures step, the report and
the scripts read them from here, so that no module imports a step to learn where its files are
(steps are leaves: only worldmodel/pipeline.py imports them). Each class is a namespace of one
step's file names, relative to its result directory.
"""

from __future__ import annotations

METRICS = "metrics.jsonl"  # per epoch or generation, in every training step


def round_name(kind: str, k: int) -> str:
    """The step name of `kind`'s row in round k: vae, vae_r1, vae_r2, ... (pipeline.table)."""
    return kind if k == 0 else f"{kind}_r{k}"


def step_kind(name: str) -> str:
    """The kind of a step name: vae_r2 is a vae (the inverse of round_name)."""
    kind, _, k = name.rpartition("_r")
    return kind if kind and k.isdigit() else name


def step_round(name: str) -> int:
    """The round of a step name: 2 for vae_r2, 0 for vae."""
    return int(name.rpartition("_r")[2]) if step_kind(name) != name else 0


class COLLECT:
    EPISODES = "episodes"  # ep_NNNNNN.npz, worldmodel/episodes.py
    DATASET = "dataset.json"


class VAE:
    MODEL = "model.pt"
    SPLIT = "split.json"
    RECONSTRUCTIONS = "reconstructions.png"
    LOSSES = "losses.png"


class ENCODE:
    LATENTS = "latents"  # ep_NNNNNN.npz, worldmodel/latents.py
    INDEX = "latents.json"


class MDRNN:
    MODEL = "model.pt"
    SPLIT = "split.json"
    EVALUATION = "evaluation.json"
    LOSSES = "losses.png"
    DREAM_STRIP = "dream.png"
    DREAM_GIF = "dream.gif"
    DREAM_ERROR = "dream_error.png"
    CALIBRATION = "calibration.png"


class CONTROLLER:
    MODEL = "controller.pt"  # the kept controller
    MEAN_MODEL = "es_mean.pt"  # CMA-ES's final mean
    SUMMARY = "controller.json"
    STATE = "es_state.pkl"  # the final CMA-ES search state (worldmodel/evolution.py)
    STATE_INFO = "es_state.json"  # its sha256 and the versions that wrote it
    FIGURE = "cma_es.png"
    DREAM_GIF = "best_dream.gif"


class EVALUATE:
    RESULTS = "returns.json"
    HISTOGRAM = "returns.png"
    VIDEOS = ("best_episode", "median_episode", "worst_episode")  # .mp4 or .gif


class FIGURES:
    REPORT = "report.md"
    INDEX = "figures.json"
    FILMSTRIP = "filmstrip.png"
    ROUNDS = "rounds.png"  # score per round, when a run has several
    ROUNDS_DATA = "rounds.json"  # the numbers behind it
