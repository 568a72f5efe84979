"""Rounds (iterations > 1): the table's repeated rows, driven for real on tiny data.

The module's fixture runs two rounds up to round 1's controller in-process (the evaluate
steps are not upstream of it, so they are left out: they drive full 1000-frame episodes).
It takes about a minute, so the tests that read it are `slow`, as are the whole chain
through the CLI, in both modes, and a kill inside round 1. The default suite keeps the
table's shape, keys and refusals.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose_config, make_runner, run_cli
from worldmodel import layout, pipeline, report, seeding
from worldmodel.envs import EnvConfig
from worldmodel.episodes import episode_path, load_episode
from worldmodel.evolution import load_state
from worldmodel.models import MDRNN, VAE, build_from_checkpoint
from worldmodel.rollout import AgentFiles, DriveSettings, drive, load_agent, load_controller
from worldmodel.steps import collect as collect_step
from worldmodel.steps import controller as controller_step

TINY = ["data=tiny", "hardware=cpu", "controller.max_steps=60", "rounds.collect.episodes=2",
        "rounds.collect.random_share=0.5"]


def keys(table, overrides):
    cfg = compose_config(overrides)
    return {name: key for name, (key, _) in make_runner(table, cfg, Path("/nonexistent"))
            .keys().items()}


def test_one_round_is_the_chain_of_before_and_round_0_of_every_run():
    assert [s.name for s in pipeline.table(1)] == [s.name for s in pipeline.STEPS] == [
        "collect", "vae", "encode", "mdrnn", "controller", "evaluate", "figures"]
    one, three = keys(pipeline.table(1), TINY), keys(pipeline.table(3), TINY)
    assert {name: three[name] for name in one if name != "figures"} == {
        name: key for name, key in one.items() if name != "figures"}
    # Round 0 never reads the rounds section: changing it moves only later rounds' keys.
    changed = keys(pipeline.table(3), [*TINY, "rounds.vae.epochs=3"])
    assert [n for n in three if three[n] != changed[n]] == [
        "vae_r1", "encode_r1", "mdrnn_r1", "controller_r1", "evaluate_r1", "collect_r2",
        "vae_r2", "encode_r2", "mdrnn_r2", "controller_r2", "evaluate_r2", "figures"]


def test_a_round_reads_every_earlier_rounds_episodes_and_the_models_before_it():
    rows = {s.name: s for s in pipeline.table(3)}
    assert rows["collect_r2"].inputs == ("collect", "collect_r1", "vae_r1", "mdrnn_r1",
                                         "controller_r1")
    assert rows["vae_r2"].inputs == ("collect", "collect_r1", "collect_r2", "vae_r1")
    assert rows["encode_r2"].inputs == ("collect", "collect_r1", "collect_r2", "vae_r2")
    assert rows["mdrnn_r2"].inputs == ("mdrnn_r1", "encode_r2", "vae_r2")
    assert rows["controller_r2"].inputs == ("controller_r1", "vae_r2", "encode_r2", "mdrnn_r2")
    assert rows["evaluate_r2"].inputs == ("vae_r2", "mdrnn_r2", "controller_r2")
    assert {s.kind for s in rows.values()} == {"collect", "vae", "encode", "mdrnn",
                                              "controller", "evaluate", "figures"}
    assert rows["figures"].inputs[-6:] == ("collect_r2", "vae_r2", "encode_r2", "mdrnn_r2",
                                           "controller_r2", "evaluate_r2")
    assert {"evaluate", "evaluate_r1", "controller", "controller_r1"} <= set(
        rows["figures"].inputs)
    assert [layout.step_kind(n) for n in ("vae_r12", "collect", "a_rb")] == [
        "vae", "collect", "a_rb"]


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("rounds")
    runner = make_runner(pipeline.table(2), compose_config(TINY), root)
    summary = runner.run(["controller_r1"])
    return root, summary


def result(summary: dict, name: str) -> Path:
    return Path(summary[name]["path"])


@pytest.mark.slow
def test_round_1_collects_with_round_0s_controller(two_rounds, tmp_path):
    _, summary = two_rounds
    cfg = compose_config(TINY)
    dataset = json.loads((result(summary, "collect_r1") / layout.COLLECT.DATASET).read_text())
    # Numbered after round 0's 4 episodes: other tracks, and unique names next to them.
    assert dataset["first_episode"] == 4 and dataset["episodes"] == 2
    assert dataset["collected_by"] == [
        {"policy": "repeat"},
        {"policy": "controller", "controller": summary["controller"]["key"],
         "controller_noise": 0.05}]
    stored = load_episode(episode_path(result(summary, "collect_r1") / "episodes", 5))

    # The controller episode is round 0's kept controller (plus its noise) on track 5 ...
    env = EnvConfig(**cfg.env)
    files = AgentFiles(str(result(summary, "vae") / "model.pt"),
                       str(result(summary, "mdrnn") / "model.pt"), env)
    flat = load_controller(result(summary, "controller") / "controller.pt").get_flat()
    flat = flat + 0.05 * seeding.generator(cfg.seed, "collect", 5, "policy").standard_normal(
        len(flat)).astype(np.float32)
    track = seeding.train_track(cfg.seed, "collect", 5)
    again = drive(load_agent(files), flat[None], [track],
                  DriveSettings(cfg.collect.max_steps, "mean"),
                  [seeding.derive_seed(cfg.seed, "collect", 5, "z")])[0]
    assert again.total_reward == pytest.approx(stored.total_reward, abs=1e-3)
    # ... not the random policy, which drives that track otherwise.
    params = collect_step.CollectParams(episodes=1, max_steps=cfg.collect.max_steps)
    with_policy = collect_step.collect_episode(5, cfg.seed, env, params, str(tmp_path))
    assert with_policy["return"] != pytest.approx(stored.total_reward, abs=1.0)


@pytest.mark.slow
def test_round_1_starts_from_an_m_stored_before_rewards_existed(two_rounds, tmp_path):
    from worldmodel.training import warm_start

    _, summary = two_rounds
    saved = torch.load(result(summary, "mdrnn") / "model.pt", weights_only=True)
    saved["kwargs"].pop("rewards")  # as model.pt files were written before the setting
    torch.save(saved, tmp_path / "model.pt")

    class Previous:
        path = tmp_path

    class Context:
        kind = "mdrnn"
        previous_round = staticmethod(lambda: Previous)
        log = __import__("logging").getLogger("test")

    expect = {name: saved["kwargs"][name] for name in ("z_dim", "hidden_size", "num_gaussians")}
    start = warm_start(Context, MDRNN, {**expect, "rewards": "regress"}, "mdrnn's sizes")
    assert torch.equal(start["lstm.weight_ih_l0"], saved["state_dict"]["lstm.weight_ih_l0"])


def distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return sum(float((p - q).detach().pow(2).sum()) for p, q in zip(a.parameters(), b.parameters(),
                                                            strict=True)) ** 0.5


@pytest.mark.slow
def test_round_1_continues_round_0s_models_and_search(two_rounds):
    _, summary = two_rounds
    for cls, name in ((VAE, "vae"), (MDRNN, "mdrnn")):
        before, after = (build_from_checkpoint(cls, torch.load(
            result(summary, step) / "model.pt", weights_only=True)) for step in (name,
                                                                                 f"{name}_r1"))
        fresh = type(after)(**after.config())
        # One tiny epoch moves the weights a little from where round 0 left them; a model
        # trained from a fresh start would be far from them.
        assert distance(after, before) < 0.2 * distance(after, fresh), name
    previous = load_state(result(summary, "controller"), None)
    continued = load_state(result(summary, "controller_r1"), None)
    # pycma counts the iterations of the search it continues: 2 generations, then 2 more.
    assert (previous.es.countiter, continued.es.countiter) == (2, 4)
    assert continued.generation == 2 and len(continued.rows) == 2
    assert all(row["round"] == 1 for row in continued.rows)
    # Each round drives its own training tracks; scoring tracks stay the same for comparison.
    assert controller_step.rollout_tracks(0, 1, 2, "controller_r1") != \
        controller_step.rollout_tracks(0, 1, 2)


@pytest.mark.slow
def test_a_rerun_reuses_every_round(two_rounds):
    root, _ = two_rounds
    summary = make_runner(pipeline.table(2), compose_config(TINY), root).run(["controller_r1"])
    ran = [name for name, entry in summary.items() if name != "run" and not entry["reused"]]
    assert ran == []
    assert [n for n in summary if n != "run"] == [
        "collect", "vae", "encode", "mdrnn", "controller", "collect_r1", "vae_r1", "encode_r1",
        "mdrnn_r1", "controller_r1"]


@pytest.mark.parametrize("bad", ["collect.random_share=0.5", "collect.controller_noise=0.1"])
def test_round_0_refuses_a_controller_share_or_noise(tmp_path, bad):
    from worldmodel.errors import ConfigError

    runner = make_runner(pipeline.table(1), compose_config([*TINY, bad]), tmp_path)
    with pytest.raises(ConfigError, match="rounds.collect"):
        runner.run(["collect"])


@pytest.mark.parametrize("bad, says", [
    ("+rounds.colect.episodes=3", "rounds.colect: not a config section"),
    ("rounds.vae.epochs=0", r"vae.epochs=0 must be >= 1.*step vae_r1: rounds.<section> is "
                            "merged"),
])
def test_a_bad_rounds_entry_is_refused_before_any_step_naming_it(tmp_path, bad, says):
    from worldmodel.errors import ConfigError

    runner = make_runner(pipeline.table(2), compose_config([*TINY, bad]), tmp_path)
    with pytest.raises(ConfigError, match=says):
        runner.run()
    assert not (tmp_path / "store").exists()  # nothing ran


def test_a_later_round_keeps_the_validation_episodes_of_the_one_before():
    from worldmodel.training import split_rounds

    rng = np.random.default_rng(0)
    names = [f"ep_{i:06d}.npz" for i in range(40)]
    previous = {"train": names[:18], "val": names[18:20]}  # round 0 had 20 episodes
    train, val = split_rounds(names, 0.1, rng, previous)
    assert {names[i] for i in val} >= {names[18], names[19]}
    assert not {names[i] for i in val} & set(previous["train"])  # never validates its own
    assert sorted(train + val) == list(range(40)) and len(val) == 4


def test_the_report_shows_every_rounds_score():
    summary = {"run": {}}
    for k, score in enumerate((120.0, 480.5)):
        suffix = f"_r{k}" if k else ""
        summary[f"mdrnn{suffix}"] = {"tile_auroc": 0.9, "done_auroc": 0.8, "reward_corr": 0.6}
        summary[f"controller{suffix}"] = {"best_score": score + 10}
        summary[f"evaluate{suffix}"] = {"mean_return": score, "std_return": 5.0,
                                        "episodes": 100}
    lines = report.result_section(summary)
    assert lines[0].startswith("**Mean return 480.5")  # the last round's
    assert "| 0 | 120.0 ± 5.0 | 100 | 130 | 0.9 | 0.8 | 0.6 |" in lines
    assert "| 1 | 480.5 ± 5.0 | 100 | 490.5 | 0.9 | 0.8 | 0.6 |" in lines


# --- the whole chain through the CLI, and kills -------------------------------------------


def cli(root: Path, *extra: str):
    done = run_cli(*TINY, "iterations=2", "hardware.workers=2", *extra,
                   f"paths.outputs={root}", timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(max((root / "runs").glob("*/summary.json")).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["real", "dream"])
def test_two_rounds_from_the_cli_then_every_step_reused(tmp_path, mode):
    extra = () if mode == "real" else ("controller=dream", "mdrnn.rewards=tiles", "mdrnn.z=mean")
    first = cli(tmp_path, *extra)
    steps = [name for name in first if name != "run"]
    assert len(steps) == 13 and first["run"]["status"] == "complete"
    assert all(not first[name]["reused"] for name in steps)
    figures = result(first, "figures")
    assert (figures / "rounds" / "rounds.png").is_file()
    assert "| round |" in (figures / "report.md").read_text()
    shutil.rmtree(tmp_path / "runs")
    second = cli(tmp_path, *extra)
    assert all(second[name]["reused"] for name in steps)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["collect_r1", "controller_r1"])
def test_a_kill_inside_round_1_resumes_to_the_same_files(tmp_path_factory, step):
    from tests.test_kill import kill_and_resume

    reference = tmp_path_factory.mktemp("reference")
    done = run_cli("data=tiny", "hardware=cpu", "hardware.workers=2", "controller.max_steps=60",
                   "controller.generations=3", "env.max_steps=200",
                   "rounds.collect.episodes=2", "rounds.collect.random_share=0.5",
                   "iterations=2", "steps=[controller_r1]", f"paths.outputs={reference}",
                   timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    seed = random.randrange(1 << 30)
    print(f"kill moment seed: {seed}")
    kill_and_resume(tmp_path_factory.mktemp("kill"), reference, step,
                    ("rounds.collect.episodes=2", "rounds.collect.random_share=0.5"),
                    random.Random(seed), iterations=2)


@pytest.mark.slow
def test_the_rounds_table_counts_each_rounds_real_frames(two_rounds):
    from tests.test_summarize import load_script

    root, summary = two_rounds
    table = load_script("ablation_table")
    rows = table.round_rows(root / "run")
    assert [r["round"] for r in rows] == [0, 1]
    # data=tiny: 4 then 2 episodes of 150 frames, each agent step one frame.
    assert [r["collect_frames"] for r in rows] == [600, 300]
    for k, name in enumerate(("controller", "controller_r1")):
        info = json.loads((result(summary, name) / "controller.json").read_text())
        assert rows[k]["kept_score"] == info["best_score"]
        assert rows[k]["search_frames"] == info["search_env_steps"] > 0  # real mode
        assert rows[k]["score_frames"] == info["score_env_steps"] > 0
        assert rows[k]["search_frames"] + rows[k]["score_frames"] == info["env_steps"]
    assert "evaluate_frames" not in rows[0]  # not evaluated in this run
    markdown = table.rounds_markdown(root / "run").splitlines()
    assert markdown[4].startswith("| 0 |") and markdown[5].startswith("| 1 |")


ADDED_LATER = (("collect", ("random_share", "controller_noise")), ("mdrnn", ("rewards", "z")),
               ("controller", ("renderer", "dream_start_last", "dream_ends")))


# Real mode's search now drives lowres by default; set to the old behaviour (null: the env's
# renderer), the added setting leaves every key as it was.
@pytest.mark.parametrize("mode, settings", [
    ("real", (("mdrnn.rewards=tiles", ["mdrnn", "controller"]),
              ("controller.renderer=lowres", ["controller"]))),  # only C on lowres
    ("dream", (("controller.dream_ends=false", ["controller"]),
               ("controller.dream_start_last=55", ["controller"]))),
])
def test_settings_added_at_their_old_behaviour_keep_the_keys_of_before(mode, settings):
    from omegaconf import open_dict

    def chain_keys(cfg) -> dict[str, str]:
        return {n: k for n, (k, _) in make_runner(pipeline.STEPS, cfg, Path("/x")).keys().items()}

    overrides = [*TINY, f"controller={mode}", "controller.renderer=null"]
    now = compose_config(overrides)
    before = compose_config(overrides)
    with open_dict(before):  # the config as it was before these settings existed
        for section, names in ADDED_LATER:
            for name in names:
                before[section].pop(name)
    assert chain_keys(now) == chain_keys(before)
    for setting, changes in settings:
        changed = chain_keys(compose_config([*overrides, setting]))
        assert [n for n in chain_keys(now) if chain_keys(now)[n] != changed[n]] == [
            *changes, "evaluate", "figures"]
