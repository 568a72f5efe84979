"""controller: evolves C with CMA-ES (paper sections 2.3 and 3.2, step 4 of the procedure:
evolve C to maximise the expected cumulative reward of a rollout).

Inputs: vae (model.pt), mdrnn (model.pt) and, for dream mode, encode (latents/, the start
states of dreams); in a round k >= 1 also round k-1's controller, whose search it continues.
Outputs, in the step's directory:

    controller.pt    checkpoint(controller): the best controller by its periodic score
    es_mean.pt       checkpoint(controller) of CMA-ES's final mean, where the search ended
    controller.json  the settings C was trained with (z: mean | sample), the best score and
                     where it came from, and the run's totals
    metrics.jsonl    per generation: controller/best, mean, worst (fitness: mean return of a
                     candidate's rollouts), sigma, seconds, env_steps, steps_per_s; every
                     score_every generations also score_mean and score_best (see Scoring)
    cma_es.png       those curves, drawn from metrics.jsonl alone (worldmodel/figures/controller.py)
    best_dream.gif   dream mode: V's decoding of the kept controller dreaming (not required)
    es_state.pkl     the final CMA-ES search state (see Resume) and es_state.json, its record

Search. CMA-ES (pycma) over C's flat parameters, from x0 = 0 with step size sigma0 (0.1 as the
original); in a round k >= 1 from where round k-1's search ended (its mean, step size and
covariance, evolution.continue_search). Each generation every candidate drives `rollouts`
episodes, and all candidates drive the same tracks, train_track(seed, <the row's name>,
generation, rollout): common random numbers, so candidates are ranked on equal terms.
Fitness is the mean return (CMA-ES minimises, so it is told -fitness). Candidates are driven
in parallel by the worker pool, several candidates' rollouts in one batch
(hardware.envs_per_worker; worldmodel/rollout.py), on controller.renderer's frames (null:
env.renderer's).

Scoring. Fitness is noisy and a generation's best candidate is partly lucky, so every
score_every generations (and at the last) the CMA-ES mean and the generation's best candidate
drive score_episodes more episodes, without early stop, and the best of all scored controllers
is kept as controller.pt. Scoring always drives frames identical to Gymnasium's, whatever
renderer the search drives. The score tracks are training-range tracks that no generation
drives, the same ones at every scoring, so scores compare across generations; they are never
evaluation tracks (those are the evaluate step's alone).

Modes. controller.mode picks how candidates get their fitness: "real" drives CarRacing-v3;
"dream" dreams inside M (worldmodel/dream.py), the whole population x rollouts batch at once on
the configured device, at temperature controller.temperature. Each generation draws `rollouts`
collected episodes, rng(seed, "controller", "dream", "starts", generation), whose frame
dream_start (after the zoom-in) starts the dreams, with noise seeds derive_seed("dream",
generation, rollout): common random numbers again. Fitness is the mean predicted return;
metrics add dream_steps and dream_steps_per_s. Scoring stays in the real environment and
chooses the kept controller; every scoring also scores the same two controllers in the dream
(dream_score_mean, dream_score_best: score_episodes fixed episodes and seeds), so the figure
shows the dream's score next to the real one: the gap is how much C exploits M's mistakes.

Dream pre-training. In real mode, controller.dream_generations > 0 first runs that many
generations in the dream (as dream mode does, at controller.temperature), then
controller.generations in the real game, continuing the same CMA-ES: its mean, step size and
covariance are where the dream left them. The end of the pre-training is scored once (summary:
pretrained_score, what the dream alone made of C), then every score_every real generations.

Resume. The search (worldmodel/evolution.py) saves its whole state after every generation
to es_state.pkl (with its sha256 and the versions that wrote it in es_state.json) and draws
its samples from generators seeded per generation, so a run killed at any point and started
again ends with exactly the controller an uninterrupted run gets. Dreams draw from generators
seeded per generation and rollout, so the same holds in dream mode (on the same device and
thread count: batched products may round differently elsewhere). The state stays in the
result: every other file (controller.pt, es_mean.pt, controller.json, metrics.jsonl, the
figures) is made from it, so any of them that is damaged is remade without searching again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worldmodel import dream, durable, layout, seeding
from worldmodel.config import at_least, one_of
from worldmodel.envs import IDENTICAL, EnvConfig, renderer_problems, scoring_env
from worldmodel.errors import ConfigError, StoreError
from worldmodel.evolution import (
    Evaluation,
    FitnessFn,
    ScoreFn,
    SearchState,
    continue_search,
    evolve,
    load_state,
    new_es,
)
from worldmodel.figures import controller as controller_figures
from worldmodel.models import MDRNN, VAE, Controller, checkpoint, controller_size
from worldmodel.pool import keep_workers
from worldmodel.rollout import (
    Z_MODES,
    AgentFiles,
    DriveSettings,
    Job,
    drive_jobs,
    load_model,
    stored_agent,
)
from worldmodel.training import save_atomic

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

FILES = layout.CONTROLLER
MODES = ("real", "dream")


@dataclass
class ControllerParams:
    """The `controller` config group (population, rollouts, generations and max_steps come
    from the `data` preset)."""

    mode: str = "real"
    """How candidates are scored: real (drive CarRacing-v3) | dream (inside M)."""
    population: int = 16
    """CMA-ES candidates per generation (popsize)."""
    rollouts: int = 4
    """Episodes per candidate per generation; fitness is their mean return."""
    generations: int = 20
    """CMA-ES generations."""
    sigma0: float = 0.1
    """Initial CMA-ES step size (0.1 in the original)."""
    max_steps: int = 1000
    """Frames per training rollout and per scoring episode at most."""
    z: str = "mean"
    """What C sees of V's posterior q(z|x): mean | sample."""
    early_stop_steps: int | None = None
    """Stop a training rollout after this many frames without a positive reward (no new tile);
    its return so far counts. null drives every rollout to its end. Never used in scoring or
    evaluation."""
    score_every: int = 5
    """Score the CMA-ES mean and the generation's best candidate every this many generations
    (and at the last one)."""
    score_episodes: int = 8
    """Episodes of each scoring, on training-range tracks no generation drives."""
    temperature: float | None = None
    """Dream mode only: M's sampling temperature tau (logits / tau, sigma * sqrt(tau))."""
    dream_start: int = 50
    """Dream mode: the agent step of a collected episode a dream starts from (after the
    zoom-in; M reads the frames before it)."""
    dream_start_last: int | None = None
    """Dream mode: with a value, each dream starts at an agent step drawn uniformly from
    [dream_start, dream_start_last] of its episode, so candidates are judged from states
    along the collected driving (with dream_horizon short, where M's dream still tracks the
    real one); null: every dream starts at dream_start."""
    dream_horizon: int | None = None
    """Dream mode: agent steps per dream at most; null: max_steps / env.action_repeat -
    dream_start, so a dream spans what is left of a real episode."""
    dream_ends: bool = True
    """Dream mode: draw episode ends from M's done head (with mdrnn.rewards=tiles each pays
    CarRacing's -100 exit). false: every dream runs its horizon, paid the expected tile
    rewards only (on random-driving data M ties fast driving to exits: docs/ablations.md)."""
    dream_generations: int = 0
    """Real mode: generations inside M's dream before the real ones (dream pre-training, with
    temperature, dream_start and dream_horizon as in dream mode); the real search continues
    from where the dream left CMA-ES. 0: none."""
    renderer: str | None = None
    """Real mode: the renderer the search drives its candidates on; null: env.renderer.
    `lowres` here with env.renderer=fast trains only C on the training renderer, while
    collect, V and M see Gymnasium's frames. Scoring always drives identical frames."""


@dataclass
class ControllerStepConfig:
    seed: int
    env: EnvConfig = field(default_factory=EnvConfig)
    controller: ControllerParams = field(default_factory=ControllerParams)

    def __post_init__(self) -> None:
        check_params(self.controller, self.env)


def search_env(env: EnvConfig, params: ControllerParams) -> EnvConfig:
    """The environment the real search drives: env, drawn by controller.renderer if set."""
    return env if params.renderer is None else replace(env, renderer=params.renderer)


def check_params(params: ControllerParams, env: EnvConfig) -> None:
    problems = []
    problems += one_of("controller.mode", params.mode, MODES)
    problems += one_of("controller.z", params.z, Z_MODES)
    if params.renderer is not None:  # null: env.renderer, which EnvConfig checks
        problems += renderer_problems("controller.renderer", params.renderer, env)
        if params.mode == "dream":
            problems.append("controller.renderer is the real search's renderer; "
                            "controller=dream searches inside M (set env.renderer for the "
                            "frames collect draws)")
    if params.population < 3:
        # pycma's step-size adaptation injects a direction into every generation after the
        # first; with 2 candidates it fails there ("Found unused injected direction").
        problems += at_least("controller", params, ("population",), minimum=3)
    problems += at_least("controller", params, ("rollouts", "generations", "max_steps",
                                                "score_every", "score_episodes"))
    if params.sigma0 <= 0:
        problems.append(f"controller.sigma0={params.sigma0} must be > 0")
    if params.early_stop_steps is not None and params.early_stop_steps < 1:
        problems.append(f"controller.early_stop_steps={params.early_stop_steps} must be >= 1 "
                        "or null")
    if params.dream_generations < 0:
        problems.append(f"controller.dream_generations={params.dream_generations} must be >= 0")
    if params.mode == "dream" and params.dream_generations:
        problems.append("controller.dream_generations is for controller=real (dream "
                        "pre-training); controller=dream dreams every generation already")
    if dreams(params):
        if params.temperature is None or params.temperature < 0:
            problems.append(f"controller.temperature={params.temperature} must be >= 0 in "
                            "dream mode and for dream pre-training")
        if params.dream_start < 0:
            problems.append(f"controller.dream_start={params.dream_start} must be >= 0")
        if params.dream_start_last is not None and params.dream_start_last < params.dream_start:
            problems.append(f"controller.dream_start_last={params.dream_start_last} must be "
                            f">= controller.dream_start={params.dream_start} (or null)")
        if dream_horizon(params, env.action_repeat) < 1:
            problems.append(f"controller.dream_horizon={params.dream_horizon} must be >= 1 "
                            "(null: max_steps / env.action_repeat - dream_start, which must be "
                            ">= 1 then)")
    else:
        # A sweep over them in real mode would train the same controller once per value.
        unused = [f"controller.{name}" for name, value, default in (
            ("temperature", params.temperature, None),
            ("dream_start_last", params.dream_start_last, None),
            ("dream_ends", params.dream_ends, True)) if value != default]
        if unused:
            problems.append(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} "
                            "used by controller=dream and by dream pre-training "
                            "(controller.dream_generations > 0) only")
    if problems:
        raise ConfigError("; ".join(problems))


def dreams(params: ControllerParams) -> bool:
    """Whether the search dreams inside M: in dream mode, or to pre-train in real mode."""
    return params.mode == "dream" or params.dream_generations > 0


def total_generations(params: ControllerParams) -> int:
    """Dream pre-training generations, then `generations` more (real mode), or `generations`."""
    return params.dream_generations + params.generations


# --- fitness -----------------------------------------------------------------------------------


def rollout_tracks(seed: int, generation: int, rollouts: int, step: str = "controller"
                   ) -> list[int]:
    """The tracks every candidate of `generation` drives (common random numbers); each round's
    controller row (`step`: controller, controller_r1, ...) drives its own."""
    return [seeding.train_track(seed, step, generation, r) for r in range(rollouts)]


def score_tracks(seed: int, episodes: int) -> list[int]:
    """The scoring tracks: training-range, never driven by a generation, the same each time
    and in every round, so scores compare across rounds too."""
    return [seeding.train_track(seed, "controller", "score", e) for e in range(episodes)]


def drive_mean_returns(candidates: np.ndarray, tracks: list[int], noise: list[int],
                       files: AgentFiles, settings: DriveSettings, workers: int,
                       envs_per_worker: int, what: str, env: EnvConfig | None = None,
                       ) -> Evaluation:
    """Each candidate drives every track; returns each candidate's mean return.

    The episodes (candidate by candidate, track by track) go to the workers in jobs of up to
    `envs_per_worker`, several candidates per job, at least one job per worker where there
    are enough episodes, and job sizes differ by one at most. A job is
    one batch through V, M and C, computed per sample, so the returns do not depend on how
    episodes are grouped (tests: test_controller_step.py, and test_rollout.py at paper size).
    `env` drives them in another environment than `files.env` (the search's
    controller.renderer, or the identical one that scores).
    """
    episodes = [(c, t) for c in range(len(candidates)) for t in range(len(tracks))]
    count = max(min(workers, len(episodes)), -(-len(episodes) // envs_per_worker))
    jobs = []
    for chunk in np.array_split(np.arange(len(episodes)), count):
        pairs = [episodes[i] for i in chunk]
        jobs.append(Job(np.stack([candidates[c] for c, _ in pairs]),
                        [tracks[t] for _, t in pairs], [noise[t] for _, t in pairs]))
    results = drive_jobs(jobs, files, settings, workers, what, env=env)
    rollouts = [r for job in results for r in job]
    returns = np.array([r.total_reward for r in rollouts]).reshape(len(candidates), len(tracks))
    return Evaluation(np.array([np.mean(row) for row in returns]),
                      sum(r.steps for r in rollouts))


def real_fitness(ctx: StepContext, params: ControllerParams, files: AgentFiles) -> FitnessFn:
    settings = DriveSettings(params.max_steps, params.z, params.early_stop_steps)
    env = search_env(files.env, params)

    def fitness(generation: int, candidates: np.ndarray) -> Evaluation:
        tracks = rollout_tracks(ctx.seed, generation, params.rollouts, ctx.name)
        # The same z noise for every candidate too: it is part of the common random numbers.
        noise = [ctx.derive_seed("z", generation, r) for r in range(params.rollouts)]
        return drive_mean_returns(candidates, tracks, noise, files, settings,
                                  ctx.hardware.workers, ctx.hardware.envs_per_worker,
                                  f"evaluating generation {generation}", env=env)

    return fitness


def real_score(ctx: StepContext, params: ControllerParams, files: AgentFiles) -> ScoreFn:
    """Scores in the real game, always on frames identical to Gymnasium's: with a training
    renderer (env.renderer or controller.renderer = lowres) the search draws its own frames,
    and the kept controller is still the one that drives best on the frames it is evaluated
    on."""
    settings = DriveSettings(params.max_steps, params.z, early_stop_steps=None)
    tracks = score_tracks(ctx.seed, params.score_episodes)
    noise = [ctx.derive_seed("score", "z", e) for e in range(params.score_episodes)]
    env = scoring_env(files.env)

    def score(candidates: np.ndarray) -> Evaluation:
        return drive_mean_returns(candidates, tracks, noise, files, settings,
                                  ctx.hardware.workers, ctx.hardware.envs_per_worker,
                                  "scoring controllers", env=env)

    return score


def dream_horizon(params: ControllerParams, action_repeat: int) -> int:
    """Agent steps per dream: what is left of a max_steps-frame episode after dream_start."""
    if params.dream_horizon is not None:
        return params.dream_horizon
    return -(-params.max_steps // action_repeat) - params.dream_start


def make_dreamer(ctx: StepContext, params: ControllerParams, files: AgentFiles
                 ) -> dream.Dreamer:
    """M on the configured device, dreaming from the encode step's episodes."""
    if not ctx.inputs_of("encode"):
        raise ConfigError("controller=dream starts dreams from encoded episodes: the "
                          "controller step needs encode among its inputs (pipeline.py)")
    encoded = ctx.input("encode").path
    episodes = sorted((encoded / layout.ENCODE.LATENTS).glob("ep_*.npz"))
    if not episodes:
        raise StoreError(f"controller: no encoded episodes in {encoded}")
    mdrnn = load_model(MDRNN, files.mdrnn, "controller: the trained MDN-RNN")
    problem = dream_problem(ctx.input("mdrnn").path / layout.MDRNN.EVALUATION, mdrnn.rewards)
    if problem:
        ctx.log.warning("the dream may not rank controllers: %s", problem)
    return dream.Dreamer(mdrnn, episodes, params.dream_start, float(params.temperature),
                         dream_horizon(params, ctx.config.env.action_repeat),
                         ctx.hardware.device, params.dream_start_last, params.dream_ends)


# Below these, M's held-out predictions cannot tell a good step from a bad one well enough for
# the dream's returns to rank candidates (mdrnn's evaluation.json). MIN_GAS_GAIN: tiles that
# 30 steps of full gas must earn over coasting in M's dream (a car at speed on the road passes
# a tile about every other step; learned from random driving, M expected 0.69 against 0.74).
MIN_REWARD_CORR, MIN_AUROC, MIN_GAS_GAIN = 0.5, 0.75, 0.5


def dream_problem(evaluation_path: Path, rewards: str) -> str | None:
    """What in M's held-out quality says the dream cannot rank candidates, or None."""
    try:
        quality = durable.read_json(evaluation_path)["summary"]
    except (durable.DamagedFile, KeyError, TypeError):
        return f"M's held-out quality ({evaluation_path.name}) is not readable"
    problems = []
    corr = quality.get("reward_corr")
    if corr is None or corr < MIN_REWARD_CORR:
        problems.append("its rewards do not vary" if corr is None else
                        f"its rewards correlate with the real ones at r = {corr:.2f} (< "
                        f"{MIN_REWARD_CORR})")
    dreamed = quality.get("dream_return_corr_30", MIN_REWARD_CORR)
    if dreamed is None or dreamed < MIN_REWARD_CORR:
        problems.append("its dreamed 30-step returns do not vary" if dreamed is None else
                        f"its dreamed 30-step returns correlate with the real ones at r = "
                        f"{dreamed:.2f} (< {MIN_REWARD_CORR})")
    for name, what in (("tile_auroc", "new tiles"), ("done_auroc", "episode ends")):
        value = quality.get(name, MIN_AUROC)  # absent: M has no such head (rewards regress)
        if value is None:
            problems.append(f"no {what} to tell apart")
        elif value < MIN_AUROC:
            problems.append(f"it tells {what} apart at AUROC {value:.2f} (< {MIN_AUROC})")
    gas, coast = quality.get("dream_tiles_30_gas"), quality.get("dream_tiles_30_coast")
    if gas is not None and coast is not None and gas - coast < MIN_GAS_GAIN:
        problems.append(f"its dream hardly answers the throttle: over 30 steps it expects "
                        f"{gas:.2f} tiles at full gas and {coast:.2f} coasting (< "
                        f"{MIN_GAS_GAIN} apart)")
    if not problems:
        return None
    levers = "more M epochs, or data with more driving (iterations > 1)"
    if rewards != "tiles":
        levers = "mdrnn.rewards=tiles, " + levers
    return f"on held-out episodes {'; '.join(problems)}. What helps: {levers}"


def dream_fitness(ctx: StepContext, params: ControllerParams, dreamer: dream.Dreamer
                  ) -> FitnessFn:
    def fitness(generation: int, candidates: np.ndarray) -> Evaluation:
        starts = dreamer.pick_starts(ctx.rng("dream", "starts", generation), params.rollouts)
        seeds = [ctx.derive_seed("dream", generation, r) for r in range(params.rollouts)]
        returns, steps, seconds = dreamer.evaluate(candidates, starts, seeds)
        return Evaluation(returns, 0, steps, seconds)

    return fitness


def dream_score(ctx: StepContext, params: ControllerParams, dreamer: dream.Dreamer) -> ScoreFn:
    """The dream's counterpart of real_score: fixed starts and seeds, the same each time."""
    starts = dreamer.pick_starts(ctx.rng("dream", "score"), params.score_episodes)
    seeds = [ctx.derive_seed("dream", "score", e) for e in range(params.score_episodes)]

    def score(candidates: np.ndarray) -> Evaluation:
        returns, steps, seconds = dreamer.evaluate(candidates, starts, seeds)
        return Evaluation(returns, 0, steps, seconds)

    return score


def make_fitness(ctx: StepContext, params: ControllerParams, files: AgentFiles,
                 dreamer: dream.Dreamer | None = None) -> FitnessFn:
    """The fitness of controller.mode: driving the real track, or dreaming inside M (dreamer);
    in real mode with dream pre-training, dreaming up to generation dream_generations and
    driving after it. Scoring stays in the real environment either way (real_score)."""
    if dreams(params) and dreamer is None:
        raise ValueError("dreaming needs a Dreamer (make_dreamer)")
    if params.mode == "dream":
        return dream_fitness(ctx, params, dreamer)
    real = real_fitness(ctx, params, files)
    if not params.dream_generations:
        return real
    dreamed = dream_fitness(ctx, params, dreamer)

    def pretrained(generation: int, candidates: np.ndarray) -> Evaluation:
        if generation <= params.dream_generations:
            return dreamed(generation, candidates)
        return real(generation, candidates)

    return pretrained


# --- the search --------------------------------------------------------------------------------


def should_score(generation: int, params: ControllerParams) -> bool:
    """Every score_every generations and at the last; with dream pre-training, once at its end
    (what the dream alone achieved) and then every score_every real generations."""
    pretraining = params.dream_generations  # 0 in dream mode (check_params)
    if generation <= pretraining:
        return generation == pretraining
    return ((generation - pretraining) % params.score_every == 0
            or generation == total_generations(params))


def generation_line(generation: int, params: ControllerParams, m: dict, state: SearchState
                    ) -> str:
    where = " (dream)" if "dream_steps" in m and params.mode == "real" else ""
    line = (f"generation {generation}/{total_generations(params)}{where}: fitness best "
            f"{m['best']:.1f} / mean {m['mean']:.1f} / worst {m['worst']:.1f}, "
            f"sigma {m['sigma']:.4f}, "
            f"{m['seconds']:.1f} s, {m['steps_per_s']:.0f} env steps/s")
    if "dream_steps_per_s" in m:
        line += f", {m['dream_steps_per_s']:.0f} dream steps/s"
    if "dream_score_mean" in m:
        line += (f"; dream score: mean {m['dream_score_mean']:.1f}, best candidate "
                 f"{m['dream_score_best']:.1f}")
    if "score_mean" in m:
        line += (f"; score: mean {m['score_mean']:.1f}, best candidate {m['score_best']:.1f} "
                 f"(kept: {state.best_score:.1f}, {state.best_source} of generation "
                 f"{state.best_generation})")
    return line


# --- outputs -----------------------------------------------------------------------------------


def write_best_dream(dreamer: dream.Dreamer, files: AgentFiles, controller: np.ndarray,
                     seed: int, path: Path) -> Path:
    """best_dream.gif: what the kept controller dreams from the first episode, through V."""
    recorded = dreamer.record(controller, 0, seed)
    vae = load_model(VAE, files.vae, "controller: the trained VAE")
    steps = int(recorded.steps[0])
    return dream.write_gif(dream.decode_frames(vae, recorded.z[0, : steps + 1]), path)


def save_controller(path: Path, flat: np.ndarray, size: dict[str, int]) -> None:
    controller = Controller(**size)
    controller.set_flat(flat)
    save_atomic(checkpoint(controller), path)


def search_summary(state: SearchState, params: ControllerParams, size: dict[str, int],
                   dreamer: dream.Dreamer | None) -> dict:
    """controller.json: the settings, the kept controller and the search's totals, from the
    final state alone (so a damaged controller.json is remade without searching again)."""
    rows = state.rows
    summary = {
        "z": params.z, "mode": params.mode, "size": size,
        "best_score": state.best_score, "best_generation": state.best_generation,
        "best_source": state.best_source, "score_episodes": params.score_episodes,
        "generations": state.generation, "population": params.population,
        "rollouts": params.rollouts, "env_steps": state.env_steps,
        # Real frames per use: the search's fitness (0 in dream mode) and the scoring.
        "search_env_steps": int(sum(row["controller/env_steps"] for row in rows)),
        "score_env_steps": int(sum(row.get("controller/score_env_steps", 0) for row in rows)),
        "final_sigma": float(state.es.sigma),
        "final_best_fitness": rows[-1]["controller/best"],
        "final_mean_fitness": rows[-1]["controller/mean"],
        # Summed over generations, so a resumed search counts the time of every generation once.
        "search_seconds": round(sum(row["controller/seconds"] for row in rows), 3),
    }
    if dreamer is not None:
        summary.update(temperature=params.temperature, dream_start=params.dream_start,
                       dream_horizon=dreamer.horizon, dream_steps=state.dream_steps)
    if params.mode == "dream":
        scored = [row for row in rows if "controller/dream_score_mean" in row]
        summary.update(final_dream_score=scored[-1]["controller/dream_score_mean"],
                       final_real_score=scored[-1]["controller/score_mean"])
    if params.dream_generations:
        # What the dream alone made of C: the real score at the end of pre-training.
        summary.update(dream_generations=params.dream_generations, pretrained_score=next(
            row["controller/score_mean"] for row in rows
            if row["generation"] == params.dream_generations))
    return summary


def first_state(ctx: StepContext, n_params: int, params: ControllerParams) -> SearchState:
    """Round 0 searches from x0 = 0 at sigma0; a later round continues the previous round's
    search (its controller input): mean, step size and covariance."""
    previous = ctx.previous_round()
    if previous:
        return continue_search(previous.path, layout.round_name("controller", ctx.round - 1),
                               n_params, params.population, ctx.log)
    return SearchState(es=new_es(n_params, params.population, params.sigma0))


def run(ctx: StepContext) -> dict:
    cfg: ControllerStepConfig = ctx.config
    params = cfg.controller
    files = stored_agent(ctx.input("vae").path, ctx.input("mdrnn").path, cfg.env)
    dreamer = make_dreamer(ctx, params, files) if dreams(params) else None
    fitness = make_fitness(ctx, params, files, dreamer)
    in_dream = params.mode == "dream"
    size = controller_size(Path(files.vae), Path(files.mdrnn))
    n_params = Controller(**size).num_params
    state = load_state(ctx.dir, ctx.log)
    if state is not None and state.generation >= total_generations(params):
        ctx.log.info("the search finished in an earlier run; remaking its files from %s",
                     FILES.STATE)
    else:
        stale = [name for name in (FILES.MODEL, FILES.MEAN_MODEL, FILES.SUMMARY)
                 if (ctx.dir / name).exists()]
        if state is None and stale:
            ctx.log.warning("%s cannot be remade without the search state %s: searching again",
                            ", ".join(stale), FILES.STATE)
        state = state or first_state(ctx, n_params, params)
        real = f"in the real game on {ctx.hardware.workers} workers"
        drawn_by = search_env(cfg.env, params).renderer
        searched = real if drawn_by in IDENTICAL else f"{real}, on {drawn_by} frames"
        dreamt = f"in the dream on {ctx.hardware.device} (tau {params.temperature})"
        where = (f"{params.generations} generations {dreamt}, scored {real}" if in_dream else
                 f"{params.generations} generations {searched}")
        if params.dream_generations:
            where = f"{params.dream_generations} generations {dreamt}, then {where}"
        ctx.log.info("CMA-ES on %d parameters: population %d x %d rollouts of up to %d frames, "
                     "%s; sigma %g", n_params, params.population,
                     params.rollouts, params.max_steps, where, state.es.sigma)
        with keep_workers():  # one set of workers for every generation and scoring
            evolve(ctx, state, total_generations(params), fitness, real_score(ctx, params, files),
                   scores_at=lambda generation: should_score(generation, params),
                   describe=lambda generation, metrics, state: generation_line(
                       generation, params, metrics, state),
                   dream_score=dream_score(ctx, params, dreamer) if in_dream else None)
        ctx.log.info("kept the %s of generation %d: score %.1f on %d episodes",
                     state.best_source, state.best_generation, state.best_score,
                     params.score_episodes)
    # Every file below is made from the final state alone, the same bytes each time.
    durable.rewrite_jsonl(ctx.dir / layout.METRICS, state.rows)
    summary = search_summary(state, params, size, dreamer)
    durable.write_json(ctx.dir / FILES.SUMMARY, summary)
    save_controller(ctx.dir / FILES.MEAN_MODEL, np.asarray(state.es.result.xfavorite), size)
    if in_dream:
        write_best_dream(dreamer, files, state.best_params, ctx.derive_seed("dream", "gif"),
                         ctx.dir / FILES.DREAM_GIF)
    save_controller(ctx.dir / FILES.MODEL, state.best_params, size)
    controller_figures.make_figure(ctx.dir, ctx.dir)
    return {k: v for k, v in summary.items() if k not in ("size", "mode", "z")}
