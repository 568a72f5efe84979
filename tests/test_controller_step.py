"""The controller step: CMA-ES on the real CarRacing-v3, through a real Runner.

V and M are tiny untrained models made by synthetic upstream steps (this file's TABLE, shared
with test_evaluate_step.py). Covers: CMA-ES improves a toy fitness through the generation
loop; a tiny real-mode run completes and writes its files; a run killed after generation 1
resumes to exactly the controller of an uninterrupted run (which used another worker count);
a dying worker raises WorkerDied instead of hanging; a tiny dream-mode run trains in M, scores
in the real environment and evaluates, and resumes exactly too; dream pre-training dreams its
generations exactly as dream mode would, then drives, and resumes across the switch.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_config, make_runner
from worldmodel import durable, evolution, layout, pipeline, rollout
from worldmodel.config import config_slice, typed
from worldmodel.envs import EnvConfig
from worldmodel.errors import ConfigError, StoreError
from worldmodel.figures import controller as controller_figures
from worldmodel.hardware import Hardware
from worldmodel.latents import Latents, latent_path, save_latents
from worldmodel.models import MDRNN, VAE, Controller, build_from_checkpoint, checkpoint
from worldmodel.pool import WorkerDied
from worldmodel.runner import Runner, Step, StepContext
from worldmodel.steps import controller as controller_step
from worldmodel.steps import evaluate as evaluate_step
from worldmodel.store import Store

Z_DIM, HIDDEN = 8, 16
N_PARAMS = 3 * (Z_DIM + HIDDEN) + 3
ENV = EnvConfig()


def fake_vae(ctx: StepContext) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.derive_seed("init"))
        torch.save(checkpoint(VAE(z_dim=Z_DIM)), ctx.dir / "model.pt")
    return {}


def fake_mdrnn(ctx: StepContext) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.derive_seed("init"))
        torch.save(checkpoint(MDRNN(z_dim=Z_DIM, hidden_size=HIDDEN)), ctx.dir / "model.pt")
    return {}


def fake_encode(ctx: StepContext) -> dict:
    """Encoded episodes as the encode step writes them, one shorter than the dream's start."""
    rng = ctx.rng("latents")
    (ctx.dir / "latents").mkdir()
    for index, steps in enumerate((70, 30, 90)):
        mu = rng.standard_normal((steps + 1, Z_DIM)).astype(np.float16)
        save_latents(latent_path(ctx.dir / "latents", index), Latents(
            mu=mu, logvar=np.full_like(mu, -2.0), actions=rng.uniform(0, 1, (steps, 3)).astype(
                np.float32), rewards=np.full(steps, -0.1, np.float32), terminated=False,
            truncated=True))
    return {}


# The rows pipeline.py gets, behind three synthetic upstream steps.
TABLE = (
    Step("vae", fake_vae, reads=("seed",), writes=("model.pt",)),
    Step("encode", fake_encode, inputs=("vae",), reads=("seed",), writes=("latents/ep_*.npz",)),
    Step("mdrnn", fake_mdrnn, inputs=("vae",), reads=("seed",), writes=("model.pt",)),
    *(step for step in pipeline.STEPS if step.name in ("controller", "evaluate")),
)

TINY = {"controller.population": 4, "controller.rollouts": 1, "controller.max_steps": 60,
        "controller.generations": 3, "controller.score_every": 2,
        "controller.score_episodes": 1, "controller.early_stop_steps": 40,
        "evaluate.episodes": 3, "env.max_steps": 80}


def tiny_config(**changes):
    cfg = compose_config(["data=tiny", "hardware=cpu"])
    for key, value in {**TINY, **changes}.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def runner(root: Path, workers: int, cfg=None) -> Runner:
    return make_runner(TABLE, cfg if cfg is not None else tiny_config(), root, workers)


def load_flat(path: Path) -> np.ndarray:
    return build_from_checkpoint(Controller, torch.load(path, weights_only=True)).get_flat()


@pytest.fixture
def time_limit() -> Iterator[None]:
    """Fail a test that hangs, instead of hanging the suite."""
    def expired(*_):
        raise TimeoutError("the test ran past its time limit")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory) -> dict:
    return runner(tmp_path_factory.mktemp("controller"), workers=2).run(["controller"])


def killed_after(monkeypatch, generation: int, run) -> None:
    """Run `run()` with the search killed (as by a Ctrl-C) right after `generation` was saved;
    then restore the real save_state, so a second run resumes from there."""
    save = evolution.save_state

    def killed(path, state):
        save(path, state)
        if state.generation == generation:
            raise KeyboardInterrupt

    monkeypatch.setattr(evolution, "save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(evolution, "save_state", save)


# --- tests -------------------------------------------------------------------------------------


def test_cma_es_improves_a_toy_fitness_through_the_generation_loop(tmp_path):
    target = np.linspace(-1, 1, 10)

    def quadratic(x: np.ndarray) -> np.ndarray:
        return -((x - target) ** 2).sum(axis=-1)

    def fitness(generation: int, candidates: np.ndarray) -> evolution.Evaluation:
        return evolution.Evaluation(quadratic(candidates), len(candidates))

    def score(controllers: np.ndarray) -> evolution.Evaluation:
        return evolution.Evaluation(quadratic(controllers), 0)

    params = controller_step.ControllerParams(population=8, generations=40, sigma0=0.3,
                                              score_every=10)
    ctx = StepContext(name="controller", config=None, dir=tmp_path, inputs={},
                      hardware=None, seed=0, log=logging.getLogger("test"))
    global_state = np.random.get_state()[1].copy()
    state = evolution.SearchState(es=evolution.new_es(10, params.population, params.sigma0))
    evolution.evolve(ctx, state, 40, fitness, score, scores_at=lambda g: g % 10 == 0,
                     describe=lambda generation, metrics, state: f"generation {generation}")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["generation"] for row in rows] == list(range(1, 41))
    assert rows[-1]["controller/mean"] > 0.2 * rows[0]["controller/mean"]  # (negative)
    assert quadratic(state.es.mean) > 0.01 * quadratic(np.zeros(10))  # 100x closer
    assert state.best_score == max(max(r["controller/score_mean"], r["controller/score_best"])
                                   for r in rows if "controller/score_mean" in r)
    assert state.best_generation in (10, 20, 30, 40)
    assert np.array_equal(np.random.get_state()[1], global_state)  # cma kept to its own RNG


def test_a_tiny_real_run_writes_its_files(two_workers):
    result = two_workers["controller"]
    path = Path(result["path"])
    for pattern in TABLE[3].writes:
        assert any(path.glob(pattern)), pattern
    # The final search state stays: every other file of the result is remade from it.
    state = evolution.load_state(path, logging.getLogger("test"))
    assert state.generation == 3 and len(state.rows) == 3
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [row["generation"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert row["controller/worst"] <= row["controller/mean"] <= row["controller/best"]
        assert row["controller/env_steps"] <= 4 * 60 and row["controller/steps_per_s"] > 0
    assert "controller/score_mean" in rows[1] and "controller/score_mean" in rows[2]
    assert "controller/score_mean" not in rows[0]
    best = build_from_checkpoint(Controller, torch.load(path / "controller.pt",
                                                        weights_only=True))
    assert best.config() == {"z_dim": Z_DIM, "hidden_size": HIDDEN}
    assert best.num_params == N_PARAMS
    info = json.loads((path / "controller.json").read_text())
    assert info["z"] == "mean" and info["best_generation"] in (2, 3)
    assert result["best_score"] == info["best_score"]
    assert result["generations"] == 3 and result["env_steps"] > 0
    assert (path / "cma_es.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_is_redrawn_from_metrics_alone(two_workers, tmp_path):
    from matplotlib.image import imread

    path = Path(two_workers["controller"]["path"])
    drawn = controller_figures.make_figure(path, tmp_path)
    assert np.array_equal(imread(drawn), imread(path / "cma_es.png"))


def test_a_killed_search_resumes_to_the_uninterrupted_result(two_workers, tmp_path,
                                                             monkeypatch):
    killed_after(monkeypatch, 1, lambda: runner(tmp_path, workers=1).run(["controller"]))
    [staging] = (tmp_path / "store" / "controller").glob(".staging-*")
    assert evolution.load_state(staging, logging.getLogger("test")).generation == 1
    with open(staging / "metrics.jsonl", "a") as f:
        f.write('{"generation": 2, "controller/be')  # a line a power cut tore

    evaluated = []
    fitness = controller_step.real_fitness

    def spy(ctx, params, files):
        inner = fitness(ctx, params, files)
        return lambda generation, x: evaluated.append(generation) or inner(generation, x)

    monkeypatch.setattr(controller_step, "real_fitness", spy)
    np.random.seed(12345)  # a different global random state must not matter
    resumed = runner(tmp_path, workers=1).run(["controller"])["controller"]
    assert evaluated == [2, 3]
    reference = Path(two_workers["controller"]["path"])  # 2 workers, never interrupted
    path = Path(resumed["path"])
    assert resumed["key"] == two_workers["controller"]["key"]
    assert np.array_equal(load_flat(path / "controller.pt"),
                          load_flat(reference / "controller.pt"))
    assert np.array_equal(load_flat(path / "es_mean.pt"), load_flat(reference / "es_mean.pt"))
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [row["generation"] for row in rows] == [1, 2, 3]
    untimed = [{k: v for k, v in row.items() if "second" not in k and "per_s" not in k
                and k != "time"} for row in rows]
    reference_rows = [json.loads(line)
                      for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert untimed == [{k: v for k, v in row.items() if "second" not in k and "per_s" not in k
                        and k != "time"} for row in reference_rows]


def saved_state(directory: Path) -> evolution.SearchState:
    state = evolution.SearchState(es=evolution.new_es(5, population=4, sigma0=0.1), generation=2)
    evolution.save_state(directory, state)
    return state


def test_a_search_state_saved_under_other_versions_stops_the_run(tmp_path):
    saved_state(tmp_path)
    assert evolution.load_state(tmp_path, logging.getLogger("test")).generation == 2
    info = json.loads((tmp_path / evolution.STATE_INFO).read_text())
    assert info["versions"] == evolution.state_versions()
    info["versions"]["cma"] = "3.3.0"
    (tmp_path / evolution.STATE_INFO).write_text(json.dumps(info))
    with pytest.raises(StoreError, match=r"cma 3\.3\.0 then, .* now\); .*force=\[controller\]"):
        evolution.load_state(tmp_path, logging.getLogger("test"))


@pytest.mark.parametrize("damage", ["cut", "no record"])
def test_a_search_state_that_does_not_match_its_record_is_never_loaded(tmp_path, monkeypatch,
                                                                       caplog, damage):
    saved_state(tmp_path)
    state = tmp_path / evolution.STATE
    if damage == "cut":
        state.write_bytes(state.read_bytes()[:-100])
    else:  # killed between the pickle's write and its record's
        (tmp_path / evolution.STATE_INFO).unlink()

    def never(data):
        raise AssertionError("a state that does not match its record was unpickled")

    monkeypatch.setattr(evolution.pickle, "loads", never)
    with caplog.at_level(logging.WARNING):
        assert evolution.load_state(tmp_path, logging.getLogger("test")) is None
    assert "searching from the first generation" in caplog.text
    assert not state.exists()  # set aside next to its directory, not part of the result
    assert list(tmp_path.parent.glob(f".damaged-{tmp_path.name}-{evolution.STATE}-*"))


def die(*args):
    os._exit(3)  # as a worker killed by the OOM killer


def test_a_dying_worker_raises_worker_died(tmp_path, monkeypatch, time_limit):
    # Pickled by reference, so the workers run this module's `die`.
    monkeypatch.setattr(rollout, "drive_task", die)
    with pytest.raises(WorkerDied, match="worker process died while evaluating generation 1"):
        runner(tmp_path, workers=2).run(["controller"])


def dream_config(**changes):
    # dream_start 50 with max_steps 60: 10-step dreams (episode 1 is shorter: from its end).
    cfg = compose_config(["data=tiny", "hardware=cpu", "controller=dream"])
    for key, value in {**TINY, **changes}.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def dreamed(tmp_path_factory) -> dict:
    return runner(tmp_path_factory.mktemp("dream"), workers=2, cfg=dream_config()).run(
        ["evaluate"])


def test_a_tiny_dream_run_trains_in_m_scores_for_real_and_evaluates(dreamed):
    path = Path(dreamed["controller"]["path"])
    for pattern in TABLE[3].writes + (layout.CONTROLLER.DREAM_GIF,):
        assert any(path.glob(pattern)), pattern
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [row["generation"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert row["controller/env_steps"] == 0  # training never touched the real env
        assert 0 < row["controller/dream_steps"] and row["controller/dream_steps_per_s"] > 0
    scored = [row for row in rows if "controller/score_mean" in row]
    assert [row["generation"] for row in scored] == [2, 3]
    for row in scored:
        assert "controller/dream_score_mean" in row and "controller/dream_score_best" in row
        assert row["controller/score_env_steps"] > 0
    info = json.loads((path / "controller.json").read_text())
    assert info["mode"] == "dream" and info["temperature"] == 1.15
    assert info["dream_horizon"] == 10
    # The controller kept is chosen by its real score.
    real = {max(row["controller/score_mean"], row["controller/score_best"]) for row in scored}
    assert info["best_score"] == max(real)
    assert info["final_real_score"] == scored[-1]["controller/score_mean"]
    assert info["final_dream_score"] == scored[-1]["controller/dream_score_mean"]
    assert dreamed["evaluate"]["episodes"] == 3


def test_a_killed_dream_search_resumes_to_the_uninterrupted_result(dreamed, tmp_path,
                                                                   monkeypatch):
    killed_after(monkeypatch, 1, lambda: runner(tmp_path, workers=1, cfg=dream_config()).run(
        ["controller"]))
    np.random.seed(54321)
    torch.manual_seed(54321)  # dreams draw from their own generators, not torch's global one
    resumed = runner(tmp_path, workers=1, cfg=dream_config()).run(["controller"])["controller"]
    reference = Path(dreamed["controller"]["path"])
    path = Path(resumed["path"])
    assert resumed["key"] == dreamed["controller"]["key"]
    for name in ("controller.pt", "es_mean.pt"):
        assert np.array_equal(load_flat(path / name), load_flat(reference / name))
    assert ([r["controller/mean"] for r in durable.read_jsonl(path / "metrics.jsonl")]
            == [r["controller/mean"] for r in durable.read_jsonl(reference / "metrics.jsonl")])


def test_dreams_can_start_along_the_episodes_and_run_without_ends(dreamed, tmp_path):
    cfg = dream_config(**{"controller.dream_start_last": 65, "controller.dream_ends": False})
    done = runner(tmp_path, workers=1, cfg=cfg).run(["controller"])["controller"]
    assert done["key"] != dreamed["controller"]["key"]
    rows = durable.read_jsonl(Path(done["path"]) / "metrics.jsonl")
    # No end is drawn: every dream runs its 10 steps, the 4 candidates' and, in the scored
    # generations 2 and 3, the 2 scored controllers' dream scores.
    assert [row["controller/dream_steps"] for row in rows] == [4 * 10, 6 * 10, 6 * 10]
    reference = durable.read_jsonl(Path(dreamed["controller"]["path"]) / "metrics.jsonl")
    assert [r["controller/mean"] for r in rows] != [r["controller/mean"] for r in reference]


def pretrain_config():
    """Real mode with 2 generations of dream pre-training (as dream_config's), then 2 real."""
    return tiny_config(**{"controller.dream_generations": 2, "controller.temperature": 1.15,
                          "controller.generations": 2})


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def untimed(rows: list[dict]) -> list[dict]:
    """Metric rows without their timings, which differ from run to run."""
    timed = ("time", "seconds", "per_s")
    return [{k: v for k, v in row.items() if not k.endswith(timed)} for row in rows]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict:
    return runner(tmp_path_factory.mktemp("pretrain"), workers=2, cfg=pretrain_config()).run(
        ["controller"])


def test_dream_pretraining_dreams_first_then_drives(pretrained, dreamed):
    path = Path(pretrained["controller"]["path"])
    rows = read_rows(path)
    assert [row["generation"] for row in rows] == [1, 2, 3, 4]
    for row in rows[:2]:
        assert row["controller/env_steps"] == 0 and row["controller/dream_steps"] > 0
    for row in rows[2:]:
        assert row["controller/env_steps"] > 0 and "controller/dream_steps" not in row
    # The dream generations are dream mode's, candidate for candidate (same CMA-ES samples,
    # dream starts and noise).
    dream_rows = read_rows(Path(dreamed["controller"]["path"]))
    for name in ("best", "mean", "worst", "sigma"):
        assert ([row[f"controller/{name}"] for row in rows[:2]]
                == [row[f"controller/{name}"] for row in dream_rows[:2]])
    # Scored once at the end of the pre-training, then every score_every (2) real generations,
    # always in the real game only.
    scored = [row for row in rows if "controller/score_mean" in row]
    assert [row["generation"] for row in scored] == [2, 4]
    assert not any("controller/dream_score_mean" in row for row in rows)
    info = json.loads((path / "controller.json").read_text())
    assert info["mode"] == "real" and info["generations"] == 4
    assert info["dream_generations"] == 2 and info["temperature"] == 1.15
    assert info["pretrained_score"] == scored[0]["controller/score_mean"]
    assert info["dream_steps"] == sum(row["controller/dream_steps"] for row in rows[:2])
    assert not (path / layout.CONTROLLER.DREAM_GIF).exists()


def test_a_search_killed_after_its_dream_generations_resumes_in_the_real_game(
        pretrained, tmp_path, monkeypatch):
    killed_after(monkeypatch, 2, lambda: runner(tmp_path, workers=1, cfg=pretrain_config()).run(
        ["controller"]))
    resumed = runner(tmp_path, workers=1, cfg=pretrain_config()).run(["controller"])
    path = Path(resumed["controller"]["path"])
    reference = Path(pretrained["controller"]["path"])
    for name in ("controller.pt", "es_mean.pt"):
        assert np.array_equal(load_flat(path / name), load_flat(reference / name))
    assert untimed(read_rows(path)) == untimed(read_rows(reference))


def test_dream_mode_needs_the_encoded_episodes(tmp_path):
    table = tuple(step if step.name != "controller" else Step(
        step.name, step.run, inputs=("vae", "mdrnn"), reads=step.reads, config=step.config,
        writes=step.writes) for step in TABLE[:4])
    hardware = Hardware(device=torch.device("cpu"), workers=1, threads=1)
    with pytest.raises(ConfigError, match="needs encode among its inputs"):
        Runner(table, dream_config(), hardware, Store(tmp_path / "store"),
               tmp_path / "run").run(["controller"])


def test_the_shipped_configs_type_into_the_step_configs():
    for option in ("real", "dream"):
        cfg = compose_config(["data=tiny", f"controller={option}"])
        step = typed(controller_step.ControllerStepConfig,
                     config_slice(cfg, ("seed", "env", "controller")), "controller")
        assert step.controller.mode == option and step.controller.population == 4
        controller_step.check_params(step.controller, step.env)
    assert step.controller.temperature == 1.15
    for data in ("tiny", "small", "paper"):
        cfg = compose_config([f"data={data}"])
        typed(evaluate_step.EvaluateConfig, config_slice(cfg, ("seed", "env", "evaluate")),
              "evaluate")


def test_bad_settings_are_named():
    params = controller_step.ControllerParams
    with pytest.raises(ConfigError, match=r"controller\.z='median'"):
        controller_step.check_params(params(z="median"), ENV)
    with pytest.raises(ConfigError, match=r"controller\.population=2 must be >= 3"):
        controller_step.check_params(params(population=2), ENV)
    with pytest.raises(ConfigError, match=r"controller\.early_stop_steps=0"):
        controller_step.check_params(params(early_stop_steps=0), ENV)
    with pytest.raises(ConfigError, match=r"controller\.temperature=None must be >= 0"):
        controller_step.check_params(params(mode="dream"), ENV)
    with pytest.raises(ConfigError, match=r"temperature is used by controller=dream and by "
                                           r"dream pre-training"):
        controller_step.check_params(params(temperature=1.0), ENV)
    with pytest.raises(ConfigError, match=r"controller\.dream_start_last and "
                                           r"controller\.dream_ends are used by controller=dream"):
        controller_step.check_params(params(dream_start_last=60, dream_ends=False), ENV)
    with pytest.raises(ConfigError, match=r"controller\.temperature=None must be >= 0 in dream "
                                           r"mode and for dream pre-training"):
        controller_step.check_params(params(dream_generations=5), ENV)
    with pytest.raises(ConfigError, match=r"dream_generations is for controller=real"):
        controller_step.check_params(params(mode="dream", temperature=1.0,
                                            dream_generations=5), ENV)
    with pytest.raises(ConfigError, match=r"controller\.dream_generations=-1 must be >= 0"):
        controller_step.check_params(params(dream_generations=-1), ENV)
    with pytest.raises(ConfigError, match=r"controller\.dream_start_last=20 must be >= "
                                           r"controller\.dream_start=50"):
        controller_step.check_params(params(mode="dream", temperature=1.0, dream_start_last=20),
                                     ENV)
    with pytest.raises(ConfigError, match=r"controller\.dream_horizon=None must be >= 1"):
        controller_step.check_params(params(mode="dream", temperature=1.0, max_steps=50), ENV)
    with pytest.raises(ConfigError, match=r"controller\.renderer='wireframe' is not one of"):
        controller_step.check_params(params(renderer="wireframe"), ENV)
    with pytest.raises(ConfigError, match=r"controller\.renderer is the real search's"):
        controller_step.check_params(params(mode="dream", temperature=1.0, renderer="lowres"),
                                     ENV)
    with pytest.raises(ConfigError, match=r"controller\.renderer=lowres draws the dashboard-free "
                                           r".* use controller\.renderer=fast"):
        controller_step.ControllerStepConfig(seed=0, env=EnvConfig(crop_hud=False),
                                             controller=params(renderer="lowres"))


def test_returns_do_not_depend_on_how_episodes_are_grouped_into_jobs(tmp_path, monkeypatch):
    torch.manual_seed(3)
    torch.save(checkpoint(VAE(z_dim=Z_DIM)), tmp_path / "vae.pt")
    torch.save(checkpoint(MDRNN(z_dim=Z_DIM, hidden_size=HIDDEN)), tmp_path / "mdrnn.pt")
    files = rollout.AgentFiles(str(tmp_path / "vae.pt"), str(tmp_path / "mdrnn.pt"),
                               EnvConfig(action_repeat=2))
    candidates = np.random.default_rng(4).normal(0, 0.5, (3, N_PARAMS))
    settings = rollout.DriveSettings(max_steps=50, z="sample")
    sizes = []
    drive_jobs = controller_step.drive_jobs

    def spy(jobs, *args, **kwargs):
        sizes.append([len(job.tracks) for job in jobs])
        return drive_jobs(jobs, *args, **kwargs)

    monkeypatch.setattr(controller_step, "drive_jobs", spy)
    results = [controller_step.drive_mean_returns(candidates, [7, 8], [1, 2], files, settings,
                                                  workers, per_worker, "test")
               for workers, per_worker in ((1, 1), (1, 16), (2, 16), (1, 4), (5, 16))]
    # One episode per job; all six in one; a job per worker; several candidates per job, one
    # of them split across two jobs; more workers than pairs of episodes: one job for each.
    assert sizes == [[1] * 6, [6], [3, 3], [3, 3], [2, 1, 1, 1, 1]]
    for result in results[1:]:
        assert np.array_equal(result.returns, results[0].returns)
        assert result.env_steps == results[0].env_steps
    assert len(set(results[0].returns)) == 3


@pytest.mark.parametrize("overrides", [
    {"env.renderer": "lowres"},  # collect, V, M and C on the training renderer
    {"controller.renderer": "lowres"},  # only C: collect draws fast frames
])
def test_a_training_renderer_searches_and_scoring_drives_identical_frames(tmp_path,
                                                                          monkeypatch,
                                                                          overrides):
    environments = []
    drive_jobs = controller_step.drive_jobs

    def spy(jobs, files, *args, env=None, **kwargs):
        environments.append((env or files.env).renderer)
        return drive_jobs(jobs, files, *args, env=env, **kwargs)

    monkeypatch.setattr(controller_step, "drive_jobs", spy)
    cfg = tiny_config(**overrides, **{"controller.generations": 2})
    result = runner(tmp_path, workers=1, cfg=cfg).run(["evaluate"])
    # Generation 1 and 2 search on lowres frames; generation 2 is also scored, on fast ones.
    assert environments == ["lowres", "lowres", "fast"]
    assert result["evaluate"]["renderer"] == "fast"
