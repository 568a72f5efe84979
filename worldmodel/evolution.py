"""The evolution loop: CMA-ES (pycma) over a flat parameter vector, resumable to the bit.

The controller step builds its fitness and score functions (the real game or M's dream) and
hands them to `evolve`, which owns the search: asking, telling, the periodic scoring of the
CMA-ES mean and the generation's best, the metrics rows, and the state saved after every
generation.

Determinism. CMA-ES draws its samples through `PrivateNormal` from a Generator seeded from
(seed, step, "cma", generation), never from numpy's global one, so a search killed at any point
and resumed ends with exactly the parameters an uninterrupted one reaches.

Resume state. After every generation the whole `SearchState` (the ES with its covariance,
the best-so-far and the metrics rows) is pickled to es_state.pkl, with its sha256 and the cma,
numpy and Python versions in es_state.json. A pickle that does not match its sha256 is never
loaded (the search starts again); one saved under other versions stops the run, since
unpickling pycma's internals under another version may fail or quietly change the search.
Pickles are only ever read from the step's own directory, written by this module.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cma
import numpy as np
from tqdm import tqdm

from worldmodel import durable, layout
from worldmodel.errors import StoreError

if TYPE_CHECKING:
    from worldmodel.runner import StepContext

STATE = layout.CONTROLLER.STATE
STATE_INFO = layout.CONTROLLER.STATE_INFO


class Evaluation(NamedTuple):
    """Mean return per controller (higher is better) and the environment steps it took."""

    returns: np.ndarray
    env_steps: int
    dream_steps: int = 0
    """Agent-steps dreamed inside M (dream mode), and the seconds they took."""
    dream_seconds: float = 0.0


FitnessFn = Callable[[int, np.ndarray], Evaluation]
"""(generation, candidates (P, n)) -> each candidate's fitness."""
ScoreFn = Callable[[np.ndarray], Evaluation]
"""(controllers (K, n)) -> each one's mean return on the score tracks."""


class PrivateNormal:
    """cma's `randn` option: standard normal samples from a Generator set each generation,
    instead of numpy's global random state, which a resumed process would not have."""

    def __init__(self) -> None:
        self.generator: np.random.Generator | None = None

    def __call__(self, *shape: int) -> np.ndarray:
        if self.generator is None:
            raise RuntimeError("PrivateNormal used before a generator was set")
        return self.generator.standard_normal(shape)


def new_es(n_params: int, population: int, sigma0: float) -> cma.CMAEvolutionStrategy:
    """CMA-ES from x0 = 0 with step size sigma0, drawing from a PrivateNormal only."""
    options = {
        "popsize": population,
        "randn": PrivateNormal(),
        "seed": np.nan,  # never touch numpy's global random state
        "verbose": -9,  # no console output and
        "verb_log": 0,  # no outcmaes/ files: the step logs what matters itself
        "verb_disp": 0,
    }
    return cma.CMAEvolutionStrategy(np.zeros(n_params), sigma0, options)


@dataclass
class SearchState:
    """Everything a resumed search needs; pickled to es_state.pkl after every generation."""

    es: cma.CMAEvolutionStrategy
    generation: int = 0
    env_steps: int = 0
    best_params: np.ndarray | None = None
    best_score: float = -np.inf
    best_generation: int = 0
    best_source: str = ""
    dream_steps: int = 0
    rows: list[dict] = field(default_factory=list)
    """The metrics.jsonl rows of the generations so far, so that file can always be remade."""


def state_versions() -> dict[str, str]:
    """What a pickled CMA-ES state depends on: unpickling it under other versions of these
    may fail, or worse, quietly change the search."""
    return {"cma": cma.__version__, "numpy": np.__version__,
            "python": ".".join(map(str, sys.version_info[:3]))}


def save_state(directory: Path, state: SearchState) -> None:
    """es_state.json, the record, then es_state.pkl, the state, each written atomically.

    The record names the sha256 of the new pickle and of the one it replaces: a kill between
    the two writes leaves the previous generation's pickle, which the record still accepts,
    so the search resumes one generation earlier instead of starting again.
    """
    data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    path = directory / STATE
    previous = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    durable.write_json(directory / STATE_INFO, {
        "generation": state.generation, "sha256": hashlib.sha256(data).hexdigest(),
        "previous_sha256": previous, "bytes": len(data), "versions": state_versions()})
    durable.write_bytes(path, data)


def load_state(directory: Path, log, step: str = "controller",
               set_aside: bool = True) -> SearchState | None:
    """The search state a killed run saved in this step's own staging directory, if usable
    (or, set_aside False, the final state of the previous round's stored search: `step`
    names it in the messages).

    Unpickling runs code named by the file, so only this file is ever read: one written by
    this step, in the directory only this step's key uses, whose sha256 matches the one
    recorded next to it (or that of the pickle it replaced, after a kill between the two
    writes). A pickle that matches neither (cut short, changed) is moved aside, never loaded,
    and the search starts again. One written under other versions of cma, numpy or Python
    stops the run, naming both.
    """
    path, info_path = directory / STATE, directory / STATE_INFO
    if not path.exists():
        return None
    try:
        info = durable.read_json(info_path)
        data = path.read_bytes()
        intact = hashlib.sha256(data).hexdigest() in (info["sha256"],
                                                      info.get("previous_sha256"))
    except (durable.DamagedFile, OSError, KeyError, TypeError) as exc:
        intact, info = False, {"error": str(exc)}
    if not intact and not set_aside:
        return None  # someone else's result: reported by the caller, left as it is
    if not intact:
        aside = durable.set_aside(path)
        log.warning("the CMA-ES state %s does not match its record %s, so it is not loaded "
                    "(moved to %s); searching from the first generation", path, info_path,
                    aside.name)
        return None
    saved, now = info.get("versions", {}), state_versions()
    if saved != now:
        differ = ", ".join(f"{name} {saved.get(name)} then, {now[name]} now"
                           for name in now if saved.get(name) != now[name])
        raise StoreError(
            f"the CMA-ES state {path} was saved under other versions ({differ}); resuming it "
            f"could change the search. Install the versions it was saved with, or search again "
            f"from the start with force=[{step}]")
    try:
        state = pickle.loads(data)
    except Exception as exc:  # a damaged pickle can raise nearly anything
        raise StoreError(f"the CMA-ES state {path} cannot be read ({exc!r}); search again "
                         f"from the start with force=[{step}]") from exc
    if not isinstance(state, SearchState):
        raise StoreError(f"{path} does not hold a CMA-ES search state; search again from the "
                         f"start with force=[{step}]")
    return state


def continue_search(previous: Path, step: str, n_params: int, population: int, log
                    ) -> SearchState:
    """A new search that starts where the stored search in `previous` ended: its mean, step
    size and covariance (the previous round's controller result keeps its final state). The
    generation count, totals, best and rows start afresh: this round's models are new, so
    its scores are too."""
    # The pickle is the controller step's own, in this store, checked against its sha256.
    state = load_state(previous, log, step, set_aside=False)
    if state is None:
        raise StoreError(f"the previous round's CMA-ES state {previous / STATE} is missing or "
                         f"does not match its record; recompute it with force=[{step}]")
    es = state.es
    if es.N != n_params or es.popsize != population:
        raise StoreError(f"the previous round's CMA-ES ({es.N} parameters, population "
                         f"{es.popsize}) does not fit this round's ({n_params}, {population}): "
                         "keep vae.z_dim, mdrnn.hidden_size and controller.population the "
                         "same in every round")
    log.info("continuing the previous round's CMA-ES (%s): sigma %.4g after %d generations",
             previous, es.sigma, state.generation)
    return SearchState(es=es)


def run_scoring(state: SearchState, best_candidate: np.ndarray, generation: int,
                score: ScoreFn) -> dict[str, float]:
    """Score the ES mean and the generation's best candidate; keep the best ever scored."""
    contenders = {"mean": np.asarray(state.es.result.xfavorite, dtype=np.float64),
                  "best candidate": best_candidate}
    result = score(np.stack(list(contenders.values())))
    state.env_steps += result.env_steps
    for (source, x), value in zip(contenders.items(), result.returns, strict=True):
        if value > state.best_score:
            state.best_params, state.best_score = x.copy(), float(value)
            state.best_generation, state.best_source = generation, source
    return {"score_mean": float(result.returns[0]), "score_best": float(result.returns[1]),
            "score_env_steps": result.env_steps}


def evolve(ctx: StepContext, state: SearchState, total: int, fitness: FitnessFn, score: ScoreFn,
           scores_at: Callable[[int], bool], describe: Callable[[int, dict, SearchState], str],
           dream_score: ScoreFn | None = None) -> SearchState:
    """Run (or continue) CMA-ES from `state` to generation `total`.

    Each generation asks CMA-ES for candidates (drawn from ctx.rng("cma", generation)), gets
    their fitness, tells it (CMA-ES minimises: it is told -fitness), and, where
    scores_at(generation), scores the mean and the generation's best (`score`; `dream_score`
    scores the same two inside M, in dream mode). Its metrics row is logged and the state saved
    before the next generation starts; describe(generation, metrics, state) is its log line."""
    # The state's rows, not the file: a kill after a row was logged, before its state was
    # saved, leaves a row of a generation that is driven again.
    durable.rewrite_jsonl(ctx.dir / layout.METRICS, state.rows)
    if state.generation:
        ctx.log.info("resuming after generation %d of %d", state.generation, total)
    bar = tqdm(total=total, initial=state.generation, unit="gen", desc="controller")
    with bar:
        for generation in range(state.generation + 1, total + 1):
            started = time.perf_counter()
            state.es.opts["randn"].generator = ctx.rng("cma", generation)
            solutions = state.es.ask()
            evaluation = fitness(generation, np.stack(solutions))
            returns = evaluation.returns
            state.es.tell(solutions, (-returns).tolist())
            state.env_steps += evaluation.env_steps
            metrics = {"best": float(returns.max()), "mean": float(returns.mean()),
                       "worst": float(returns.min()), "sigma": float(state.es.sigma),
                       "env_steps": evaluation.env_steps}
            dreamed = [evaluation]
            if scores_at(generation):
                best = np.asarray(solutions[int(returns.argmax())], dtype=np.float64)
                metrics.update(run_scoring(state, best, generation, score))
                if dream_score is not None:
                    mean = np.asarray(state.es.result.xfavorite, dtype=np.float64)
                    dreamed.append(dream_score(np.stack([mean, best])))
                    metrics.update(dream_score_mean=float(dreamed[-1].returns[0]),
                                   dream_score_best=float(dreamed[-1].returns[1]))
            if evaluation.dream_steps:
                steps = sum(e.dream_steps for e in dreamed)
                state.dream_steps += steps
                metrics.update(dream_steps=steps, dream_steps_per_s=steps / max(
                    sum(e.dream_seconds for e in dreamed), 1e-9))
            seconds = time.perf_counter() - started
            steps = evaluation.env_steps + metrics.get("score_env_steps", 0)
            metrics.update(seconds=seconds, steps_per_s=steps / seconds)
            state.rows.append(ctx.log_metrics(metrics, generation=generation))
            state.generation = generation
            save_state(ctx.dir, state)
            ctx.log.info(describe(generation, metrics, state))
            bar.update()
            bar.set_postfix(best=f"{metrics['best']:.1f}", sigma=f"{metrics['sigma']:.3f}")
    return state
