"""The collect step on the real CarRacing-v3: the stored episodes are the game's own (replayed in
Gymnasium's CarRacing-v3), worker-count independence, resume, damage."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config, make_runner
from worldmodel import seeding
from worldmodel.envs import preprocess
from worldmodel.episodes import DamagedEpisode, episode_path, load_episode
from worldmodel.pipeline import STEPS
from worldmodel.runner import Runner
from worldmodel.steps import collect
from worldmodel.store import Store

EPISODES, STEPS_PER_EPISODE = 3, 70


def tiny_config(**changes):
    cfg = compose_config(["data=tiny", "hardware=cpu"])
    OmegaConf.update(cfg, "collect.episodes", EPISODES)
    OmegaConf.update(cfg, "collect.max_steps", STEPS_PER_EPISODE)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def run_collect(root: Path, workers: int, cfg=None) -> dict:
    return make_runner(STEPS, cfg or tiny_config(), root, workers).run(["collect"])["collect"]


def assert_same_episodes(a: dict, b: dict) -> None:
    """Two collect results hold the same episodes, frame for frame."""
    for x, y in zip(read_all(Path(a["path"]) / "episodes"),
                    read_all(Path(b["path"]) / "episodes"), strict=True):
        assert np.array_equal(x.frames, y.frames)
        assert np.array_equal(x.actions, y.actions)
        assert np.array_equal(x.rewards, y.rewards)


def read_all(directory: Path) -> list:
    return [load_episode(p) for p in sorted(directory.glob("ep_*.npz"))]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    return root, run_collect(root, workers=1)


def replay_in_stock_car_racing(track: int, actions: np.ndarray) -> tuple[list, list, bool]:
    """Drive Gymnasium's own CarRacing-v3 on `track` with `actions`, one frame per action."""
    env = gymnasium.make("CarRacing-v3")
    try:
        observation, _ = env.reset(seed=track)
        observations, rewards, terminated = [observation], [], False
        for action in actions:
            observation, reward, terminated, _, _ = env.step(action)
            observations.append(observation)
            rewards.append(reward)
    finally:
        env.close()
    return observations, rewards, terminated


def test_collects_real_episodes(one_worker):
    _, summary = one_worker
    episodes = read_all(Path(summary["path"]) / "episodes")
    assert len(episodes) == EPISODES == summary["episodes"]
    for episode in episodes:
        assert episode.frames.shape == (STEPS_PER_EPISODE + 1, 64, 64, 3)
        assert episode.frames.dtype == np.uint8
        assert episode.truncated and not episode.terminated
        assert episode.frames[-1].std() > 0  # a real picture, not a blank
    # The last episode, driven again in gymnasium.make("CarRacing-v3") on its track with its
    # stored actions (tiny_config acts on every frame): the same rewards and pictures.
    index = EPISODES - 1
    episode = episodes[index]
    cfg = tiny_config()
    assert cfg.env.action_repeat == 1
    observations, rewards, terminated = replay_in_stock_car_racing(
        seeding.train_track(cfg.seed, "collect", index), episode.actions)
    assert np.array_equal(episode.rewards, np.float32(rewards))
    assert episode.rewards.max() > 0  # new tiles were reached: 1000/N each, less 0.1
    assert episode.terminated == terminated
    assert np.array_equal(episode.frames,
                          preprocess(np.stack(observations), cfg.env.crop_hud,
                                     cfg.env.frame_size))
    dataset = json.loads((Path(summary["path"]) / "dataset.json").read_text())
    assert dataset["frames"] == EPISODES * (STEPS_PER_EPISODE + 1)
    assert summary["mean_return"] == pytest.approx(np.mean(dataset["returns"]), abs=0.01)


def test_episodes_differ_from_each_other(one_worker):
    _, summary = one_worker
    episodes = read_all(Path(summary["path"]) / "episodes")
    assert not np.array_equal(episodes[0].actions, episodes[1].actions)
    assert not np.array_equal(episodes[0].frames[-1], episodes[1].frames[-1])


def test_two_workers_give_the_same_dataset(one_worker, tmp_path):
    _, summary = one_worker
    two = run_collect(tmp_path, workers=2)
    assert two["key"] == summary["key"]
    assert_same_episodes(summary, two)


def test_interrupted_collection_resumes_without_redoing_episodes(one_worker, tmp_path,
                                                                 monkeypatch):
    _, reference = one_worker
    real_collect_episode = collect.collect_episode
    made = []

    def interrupted(index, *args):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(index)
        return real_collect_episode(index, *args)

    monkeypatch.setattr(collect, "collect_episode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_collect(tmp_path, workers=1)
    staging = next((tmp_path / "store" / "collect").glob(".staging-*/episodes"))
    assert len(list(staging.glob("ep_*.npz"))) == 2

    resumed = []
    monkeypatch.setattr(collect, "collect_episode",
                        lambda index, *args: resumed.append(index) or real_collect_episode(
                            index, *args))
    summary = run_collect(tmp_path, workers=1)
    assert sorted(made + resumed) == list(range(EPISODES)) and len(resumed) == 1
    for a, b in zip(read_all(Path(reference["path"]) / "episodes"),
                    read_all(Path(summary["path"]) / "episodes"), strict=True):
        assert np.array_equal(a.frames, b.frames)


def test_damaged_episode_is_named_on_load_and_collected_again(one_worker, tmp_path, caplog):
    root, reference = one_worker
    first = run_collect(tmp_path, workers=1)
    path = episode_path(Path(first["path"]) / "episodes", 1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short
    with pytest.raises(DamagedEpisode, match="ep_000001.npz"):
        load_episode(path)
    again = run_collect(tmp_path, workers=1)
    assert "ep_000001.npz" in caplog.text and not again["reused"]
    repaired = load_episode(path)
    original = load_episode(episode_path(Path(reference["path"]) / "episodes", 1))
    assert np.array_equal(repaired.frames, original.frames)


def test_renderer_choice_does_not_change_the_key(one_worker):
    _, summary = one_worker
    stock = Runner(STEPS, tiny_config(**{"env.renderer": "stock"}), None, Store("/nonexistent"),
                   Path("/nonexistent"))
    assert stock.keys()["collect"][0] == summary["key"]


def test_the_training_renderer_collects_the_same_game_under_its_own_key(one_worker, tmp_path):
    _, identical = one_worker
    cfg = tiny_config(**{"env.renderer": "lowres"})
    keys = Runner(STEPS, cfg, None, Store("/nonexistent"), Path("/nonexistent")).keys()
    assert keys["collect"][0] != identical["key"]  # its frames are not Gymnasium's
    lowres = run_collect(tmp_path, workers=1, cfg=cfg)
    for a, b in zip(read_all(Path(identical["path"]) / "episodes"),
                    read_all(Path(lowres["path"]) / "episodes"), strict=True):
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.rewards, b.rewards)
        assert a.frames.shape == b.frames.shape
        assert 0 < np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 2.0
