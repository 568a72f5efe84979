"""The evaluate step on the real CarRacing-v3, behind the synthetic V and M of
test_controller_step.py and a tiny CMA-ES run.

Covers: the metrics land in summary.json under the required names; the histogram and the two
videos are written, and the replays reproduce their episodes; returns are the same for 1 and 2
workers; evaluation tracks never overlap any training track; a killed evaluation keeps its
finished episodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import compose_config
from tests.test_controller_step import load_flat, runner, tiny_config
from worldmodel import pipeline, seeding
from worldmodel.config import drop_keys
from worldmodel.errors import ConfigError
from worldmodel.rollout import DriveSettings, Job, drive_jobs, stored_agent
from worldmodel.steps import controller as controller_step
from worldmodel.steps import evaluate as evaluate_step

EPISODES = 3  # test_controller_step.TINY's evaluate.episodes


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, dict, list[list[int]]]:
    """The tiny run, and the tracks its controller step drove (each call's, in order)."""
    root = tmp_path_factory.mktemp("evaluate")
    driven = []
    drive_mean_returns = controller_step.drive_mean_returns

    def spy(candidates, tracks, *args, **kwargs):
        driven.append(list(tracks))
        return drive_mean_returns(candidates, tracks, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(controller_step, "drive_mean_returns", spy)
        summary = runner(root, workers=2).run(["evaluate"])
    return root, summary, driven


def test_metrics_have_the_required_names_and_land_in_the_summary(evaluated):
    root, summary, _ = evaluated
    on_disk = json.loads((root / "run" / "summary.json").read_text())["evaluate"]
    for name in ("mean_return", "std_return", "episodes", "returns", "min_return",
                 "max_return", "fraction_900", "track_seeds"):
        assert name in on_disk, name
        assert on_disk[name] == summary["evaluate"][name]
    returns = np.array(on_disk["returns"])
    assert on_disk["episodes"] == len(returns) == EPISODES
    assert on_disk["mean_return"] == pytest.approx(returns.mean())
    assert on_disk["std_return"] == pytest.approx(returns.std())
    assert on_disk["min_return"] == returns.min() and on_disk["max_return"] == returns.max()
    assert on_disk["fraction_900"] == np.mean(returns >= 900)
    assert on_disk["track_seeds"] == evaluate_step.episode_tracks(0, EPISODES)
    stored = json.loads((Path(on_disk["path"]) / "returns.json").read_text())
    assert [row["return"] for row in stored["episode_results"]] == on_disk["returns"]
    assert all(row["steps"] <= 80 for row in stored["episode_results"])  # env.max_steps


def test_histogram_and_videos_are_written_and_replays_match(evaluated, caplog):
    from PIL import Image

    _, summary, _ = evaluated
    path = Path(summary["evaluate"]["path"])
    assert (path / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (path / "episodes.jsonl").exists()
    stored = json.loads((path / "returns.json").read_text())
    for name in ("best_episode", "median_episode", "worst_episode"):
        [video] = path.glob(name + ".*")
        assert video.name in summary["evaluate"]["videos"]
        steps = stored["episode_results"][stored["videos"][name]]["steps"]
        if video.suffix == ".gif":  # every second frame at half size, reset frame included
            with Image.open(video) as gif:
                assert gif.size == (300, 200) and gif.n_frames == (steps + 2) // 2
        else:
            assert video.stat().st_size > 1000
    returns = summary["evaluate"]["returns"]
    assert returns[stored["videos"]["best_episode"]] == max(returns)
    assert returns[stored["videos"]["median_episode"]] == sorted(returns)[(EPISODES - 1) // 2]
    assert returns[stored["videos"]["worst_episode"]] == min(returns)


def test_one_and_two_workers_give_the_same_returns(evaluated, caplog):
    root, two, _ = evaluated
    one = runner(root, workers=1).run(["evaluate"], force=["evaluate"])
    assert one["evaluate"]["key"] == two["evaluate"]["key"] and not one["evaluate"]["reused"]
    assert one["evaluate"]["returns"] == two["evaluate"]["returns"]
    assert "rendering changed the episode" not in caplog.text


# CarRacing's env.reset(seed=...) ranges, written out rather than read from seeding.py: moving
# either range there must fail here, not pass along with it.
TRAINING_RANGE = range(0, 2**30)
EVALUATION_RANGE = range(2**30, 2**31)


def test_evaluation_tracks_never_overlap_training_tracks():
    """Every track the default run drives, from the steps' own track functions."""
    cfg = compose_config()
    params = cfg.controller
    collection = [seeding.train_track(cfg.seed, "collect", i)  # as collect_episode resets
                  for i in range(cfg.collect.episodes)]
    generations = [track for g in range(1, controller_step.total_generations(params) + 1)
                   for track in controller_step.rollout_tracks(cfg.seed, g, params.rollouts)]
    scoring = controller_step.score_tracks(cfg.seed, params.score_episodes)
    evaluation = evaluate_step.episode_tracks(cfg.seed, cfg.evaluate.episodes)

    training = collection + generations + scoring
    assert all(t in TRAINING_RANGE for t in training)
    assert all(t in EVALUATION_RANGE for t in evaluation)
    assert set(training).isdisjoint(evaluation)
    assert set(scoring).isdisjoint(generations)  # scores are on tracks no generation drove
    # Distinct tracks, not a few repeated.
    assert len(set(evaluation)) == len(evaluation) == cfg.evaluate.episodes
    assert len(set(training)) == len(training)


def test_the_controller_drives_its_generation_and_score_tracks(evaluated):
    """What the tiny run's controller drove: rollout_tracks and score_tracks, as above."""
    _, summary, driven = evaluated
    cfg = tiny_config()
    params = cfg.controller
    expected = [controller_step.rollout_tracks(cfg.seed, g, params.rollouts)
                for g in range(1, params.generations + 1)]
    scoring = controller_step.score_tracks(cfg.seed, params.score_episodes)
    assert [tracks for tracks in driven if tracks != scoring] == expected
    assert driven.count(scoring) == sum(controller_step.should_score(g, params)
                                        for g in range(1, params.generations + 1))
    assert all(t in TRAINING_RANGE for tracks in driven for t in tracks)
    assert all(t in EVALUATION_RANGE for t in summary["evaluate"]["track_seeds"])


def test_a_killed_evaluation_keeps_its_finished_episodes(tmp_path, monkeypatch):
    cfg = tiny_config(**{"evaluate.episodes": 6, "env.max_steps": 30,
                         "controller.generations": 1})
    finished = []
    drive_jobs = evaluate_step.drive_jobs

    def killed_after_first_job(jobs, files, settings, workers, what, on_done):
        def done(index, rollouts):
            on_done(index, rollouts)
            finished.extend(rollouts)
            raise KeyboardInterrupt
        return drive_jobs(jobs, files, settings, workers, what, on_done=done)

    monkeypatch.setattr(evaluate_step, "drive_jobs", killed_after_first_job)
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path, workers=1, cfg=cfg).run(["evaluate"])
    monkeypatch.undo()
    assert len(finished) == evaluate_step.EPISODES_PER_TASK
    driven = []

    def spy(jobs, *args, **kwargs):
        driven.extend(track for job in jobs for track in job.tracks)
        return drive_jobs(jobs, *args, **kwargs)

    monkeypatch.setattr(evaluate_step, "drive_jobs", spy)
    summary = runner(tmp_path, workers=1, cfg=cfg).run(["evaluate"])["evaluate"]
    assert driven == summary["track_seeds"][evaluate_step.EPISODES_PER_TASK:]
    assert summary["returns"][:len(finished)] == [r.total_reward for r in finished]


def test_progress_lines_cut_short_or_for_other_tracks_are_ignored(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text(json.dumps({"episode": 0, "track": 10, "return": 1.0}) + "\n"
                    + json.dumps({"episode": 1, "track": 99, "return": 2.0}) + "\n"
                    + '{"episode": 2, "tra')
    assert list(evaluate_step.load_progress(path, [10, 11, 12])) == [0]


def load_watch():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("watch", REPO / "scripts" / "watch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_watch_records_an_evaluation_episode_from_a_run_directory(evaluated, tmp_path, capsys):
    root, summary, _ = evaluated
    watch = load_watch()
    video = tmp_path / "episode.gif"
    assert watch.main([str(root / "run"), "--episode", "1", "--record", str(video)]) == 0
    printed = capsys.readouterr().out
    assert f"return {summary['evaluate']['returns'][1]:.1f} in" in printed  # the same episode
    assert video.stat().st_size > 0

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps(
        {"run": {}, "vae": summary["vae"], "mdrnn": summary["mdrnn"]}))
    assert watch.main([str(tmp_path / "run"), "--record", str(video)]) == 2
    assert "lists no controller result" in capsys.readouterr().err


def test_final_mean_drives_cma_es_last_mean_on_the_same_tracks(evaluated, monkeypatch):
    """evaluate.controller=final_mean: a new evaluate result (its own key), the controller
    reused, es_mean.pt loaded, and the returns those of es_mean.pt on the evaluation tracks.
    (In this tiny run the kept controller may be that same last mean.)"""
    root, kept, _ = evaluated
    loaded = []
    kept_controller = evaluate_step.kept_controller

    def spy(controller_dir, files, model):
        loaded.append(model)
        return kept_controller(controller_dir, files, model)

    monkeypatch.setattr(evaluate_step, "kept_controller", spy)
    cfg = tiny_config(**{"evaluate.controller": "final_mean"})
    summary = runner(root, workers=2, cfg=cfg).run(["evaluate"])
    mean = summary["evaluate"]
    assert loaded == ["es_mean.pt"]
    assert summary["controller"]["reused"] and not mean["reused"]
    assert mean["key"] != kept["evaluate"]["key"] and mean["controller"] == "final_mean"
    es_mean = load_flat(Path(summary["controller"]["path"]) / "es_mean.pt")
    files = stored_agent(Path(summary["vae"]["path"]), Path(summary["mdrnn"]["path"]), cfg.env)
    job = Job(np.repeat(es_mean[None], EPISODES, axis=0),
              evaluate_step.episode_tracks(cfg.seed, EPISODES),
              evaluate_step.noise_seeds(cfg.seed, EPISODES))
    [rollouts] = drive_jobs([job], files, DriveSettings(max_steps=cfg.env.max_steps, z="mean",
                                                        early_stop_steps=None), 1, "es_mean")
    assert mean["returns"] == [r.total_reward for r in rollouts]


def test_evaluate_controller_at_its_default_keeps_the_keys_and_a_bad_one_is_refused():
    row = next(step for step in pipeline.STEPS if step.name == "evaluate")
    cfg = compose_config(["data=tiny", "hardware=cpu"])
    assert "controller" not in drop_keys(row.config_slice(cfg), row.not_in_identity,
                                         row.added)["evaluate"]
    with pytest.raises(ConfigError, match="evaluate.controller='median' is not one of kept, "
                                          "final_mean"):
        evaluate_step.EvaluateConfig(seed=0, evaluate=evaluate_step.EvaluateParams(
            controller="median"))
