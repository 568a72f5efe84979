"""The batched dream (worldmodel/dream.py) on tiny untrained models.

Covers: a batch dreams what each agent dreams alone, in any batch order; agents that share a
seed share their noise; M's done head ends dreams and its reward head makes the returns;
tau = 0 is deterministic; warm-up reads the real prefix; frames decode; the temperature figure
reads a sweep's summary.json files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodel import dream
from worldmodel.models import MDRNN, VAE, Controller

Z, HIDDEN, HORIZON = 4, 8, 40


@pytest.fixture
def mdrnn() -> MDRNN:
    torch.manual_seed(0)
    return MDRNN(z_dim=Z, hidden_size=HIDDEN).eval()


def starts(mdrnn: MDRNN, count: int = 3) -> dream.Starts:
    rng = np.random.default_rng(1)
    episodes = [(rng.standard_normal((61, Z)).astype(np.float16),
                 rng.uniform(0, 1, (60, 3)).astype(np.float32)) for _ in range(count)]
    return dream.cat_starts([dream.warm_up(mdrnn, mu, a, 50) for mu, a in episodes])


def controllers(count: int, scale: float = 0.5) -> torch.Tensor:
    n = Controller(Z, HIDDEN).num_params
    return torch.as_tensor(np.random.default_rng(2).normal(0, scale, (count, n)),
                           dtype=torch.float32)


def test_a_batch_dreams_what_each_agent_dreams_alone(mdrnn):
    with torch.no_grad():
        mdrnn.done_head.bias.fill_(-3.0)  # some dreams end within the horizon, some do not
    params, begin = controllers(5), starts(mdrnn)
    which = torch.tensor([0, 1, 2, 0, 1])
    seeds = [11, 12, 13, 14, 15]
    batch = dream.dream_rollouts(mdrnn, params, begin, which, seeds, 1.15, HORIZON, record=True)
    assert batch.steps.min() < HORIZON == batch.steps.max()
    for i in range(5):
        alone = dream.dream_rollouts(mdrnn, params[i:i + 1], begin, which[i:i + 1], seeds[i:i + 1],
                                     1.15, HORIZON, record=True)
        assert alone.steps[0] == batch.steps[i]
        assert alone.returns[0] == pytest.approx(batch.returns[i], rel=1e-5, abs=1e-6)
        lived = alone.steps[0] + 1  # a batch dreams on until all ended; a lone agent stops
        np.testing.assert_allclose(alone.z[0, :lived], batch.z[i, :lived], rtol=1e-4, atol=1e-5)
    order = [4, 2, 0, 3, 1]
    shuffled = dream.dream_rollouts(mdrnn, params[order], begin, which[order],
                                    [seeds[i] for i in order], 1.15, HORIZON)
    np.testing.assert_array_equal(shuffled.steps, batch.steps[order])
    np.testing.assert_allclose(shuffled.returns, batch.returns[order], rtol=1e-5, atol=1e-6)


def test_agents_with_the_same_seed_and_start_share_their_noise(mdrnn):
    params = controllers(1).repeat(3, 1)
    result = dream.dream_rollouts(mdrnn, params, starts(mdrnn), torch.zeros(3, dtype=torch.long),
                                  [7, 7, 8], 1.0, HORIZON, record=True)
    np.testing.assert_allclose(result.z[0], result.z[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(result.z[0, 1:], result.z[2, 1:])


def test_the_done_head_ends_dreams(mdrnn):
    with torch.no_grad():
        mdrnn.done_head.bias.fill_(30.0)  # sigmoid = 1: every dream ends at its first step
    result = dream.dream_rollouts(mdrnn, controllers(4), starts(mdrnn), torch.tensor([0, 1, 2, 0]),
                                  [1, 2, 3, 4], 1.0, HORIZON)
    np.testing.assert_array_equal(result.steps, 1)
    with torch.no_grad():
        mdrnn.done_head.bias.fill_(-30.0)  # never
    result = dream.dream_rollouts(mdrnn, controllers(4), starts(mdrnn), torch.tensor([0, 1, 2, 0]),
                                  [1, 2, 3, 4], 1.0, HORIZON)
    np.testing.assert_array_equal(result.steps, HORIZON)


def test_returns_sum_the_reward_head_until_the_end(mdrnn):
    with torch.no_grad():
        mdrnn.reward_head.weight.zero_()
        mdrnn.reward_head.bias.fill_(0.5)
        mdrnn.done_head.weight.zero_()
        mdrnn.done_head.bias.fill_(-2.0)  # ends with probability 0.12 per step
    result = dream.dream_rollouts(mdrnn, controllers(6), starts(mdrnn), torch.zeros(6, dtype=
                                  torch.long), list(range(6)), 1.0, HORIZON)
    assert (result.steps < HORIZON).any()
    np.testing.assert_allclose(result.returns, 0.5 * result.steps)


def test_temperature_zero_is_deterministic_and_warm_up_reads_the_prefix(mdrnn):
    begin = starts(mdrnn, 2)
    assert not torch.equal(begin.h[:, 0], begin.h[:, 1]) and begin.h.abs().sum() > 0
    params = controllers(2)
    a = dream.dream_rollouts(mdrnn, params, begin, torch.tensor([0, 1]), [1, 2], 0.0, HORIZON,
                             record=True)
    b = dream.dream_rollouts(mdrnn, params, begin, torch.tensor([0, 1]), [3, 4], 0.0, HORIZON,
                             record=True)
    np.testing.assert_array_equal(a.z, b.z)


def test_component_choice_follows_the_tempered_weights():
    # One dimension, two components with weights 0.8 / 0.2 at tau = 1, far apart.
    logits = torch.log(torch.tensor([0.8, 0.2])).expand(20000, 1, 2)
    out = dream.MDNOutput(logits, torch.tensor([0.0, 100.0]).expand(20000, 1, 2),
                          torch.full((20000, 1, 2), -5.0), torch.zeros(20000), torch.zeros(20000))
    u = torch.rand(20000, 1, generator=torch.Generator().manual_seed(0))
    z = dream.sample_with_noise(out, 1.0, u, torch.zeros(20000, 1))
    assert (z > 50).float().mean().item() == pytest.approx(0.2, abs=0.01)
    hot = dream.sample_with_noise(out, 100.0, u, torch.zeros(20000, 1))  # nearly uniform
    assert (hot > 50).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_a_recorded_dream_decodes_to_frames(mdrnn):
    torch.manual_seed(0)
    result = dream.dream_rollouts(mdrnn, controllers(1), starts(mdrnn, 1), torch.zeros(
        1, dtype=torch.long), [0], 1.0, 5, record=True)
    frames = dream.decode_frames(VAE(z_dim=Z), result.z[0])
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8


def test_the_temperature_figure_reads_a_sweeps_summaries(tmp_path):
    for job, (tau, dreamed, real) in enumerate([(1.0, 50.0, 10.0), (1.3, 20.0, 15.0)]):
        step = tmp_path / "store" / f"c{job}"
        step.mkdir(parents=True)
        (step / "controller.json").write_text(json.dumps({"mode": "dream", "temperature": tau}))
        rows = [{"generation": 1, "controller/mean": 0.0},
                {"generation": 2, "controller/dream_score_mean": dreamed,
                 "controller/score_mean": real}]
        (step / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "summary.json").write_text(json.dumps(
            {"controller": {"path": str(step)}}))
    assert [(r["temperature"], r["dream_score"], r["real_score"])
            for r in dream.sweep_scores(tmp_path)] == [(1.0, 50.0, 10.0), (1.3, 20.0, 15.0)]
    path = dream.temperature_figure(tmp_path, tmp_path / "temperature.png")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- M with rewards "tiles" (worldmodel/rewards.py) --------------------------------------------


def test_rewards_are_taken_apart_into_tiles_exits_and_a_scale():
    from worldmodel import rewards

    steps = np.array([-0.2, 3.1, -0.2, 3.1, -0.2, -100.2], np.float32)
    assert rewards.tile_events(steps).tolist() == [0, 1, 0, 1, 0, 0]
    assert rewards.exits(steps, terminated=True).tolist() == [0, 0, 0, 0, 0, 1]
    # An episode that finished its lap or was cut has no exit.
    assert not rewards.exits(np.array([-0.2, 3.1], np.float32), terminated=True).any()
    assert not rewards.exits(steps, terminated=False).any()
    scale = rewards.measure_scale([steps])
    assert scale == pytest.approx((-0.2, 3.1))
    assert scale.expected(0.5) == pytest.approx(1.45)
    assert rewards.measure_scale([]) == pytest.approx((-0.2, 1000 / 300 - 0.2))


def test_a_tiles_dream_pays_the_expected_tile_and_the_exit_on_its_end():
    from worldmodel.rewards import EXIT_REWARD, RewardScale

    torch.manual_seed(0)
    mdrnn = MDRNN(z_dim=Z, hidden_size=HIDDEN, rewards="tiles").eval()
    with torch.no_grad():
        mdrnn.reward_head.weight.zero_()
        mdrnn.reward_head.bias.fill_(0.0)  # P(tile) = 0.5 at every step
        mdrnn.done_head.weight.zero_()
        mdrnn.done_head.bias.fill_(-30.0)  # never ends ...
    scale = RewardScale(step=-0.2, tile=3.0)
    params = controllers(2)
    kept = dream.dream_rollouts(mdrnn, params, starts(mdrnn), torch.tensor([0, 1]), [1, 2],
                                1.0, 10, scale=scale)
    assert kept.steps.tolist() == [10, 10]
    assert kept.returns == pytest.approx([10 * 1.4] * 2)
    with torch.no_grad():
        mdrnn.done_head.bias.fill_(30.0)  # ... or ends on the first step, by an exit
    ended = dream.dream_rollouts(mdrnn, params, starts(mdrnn), torch.tensor([0, 1]), [1, 2],
                                 1.0, 10, scale=scale)
    assert ended.steps.tolist() == [1, 1]
    assert ended.returns == pytest.approx([1.4 + EXIT_REWARD] * 2)
    endless = dream.dream_rollouts(mdrnn, params, starts(mdrnn), torch.tensor([0, 1]), [1, 2],
                                   1.0, 10, scale=scale, ends=False)
    assert endless.steps.tolist() == [10, 10]  # no end drawn: no exit, the whole horizon
    assert endless.returns == pytest.approx([10 * 1.4] * 2)


def latent_files(tmp_path: Path, lengths: tuple[int, ...]) -> list[Path]:
    from worldmodel.latents import Latents, latent_path, save_latents

    rng = np.random.default_rng(3)
    paths = []
    for index, steps in enumerate(lengths):
        mu = rng.standard_normal((steps + 1, Z)).astype(np.float16)
        paths.append(latent_path(tmp_path, index))
        save_latents(paths[-1], Latents(mu, np.full_like(mu, -2.0), rng.uniform(
            0, 1, (steps, 3)).astype(np.float32), np.full(steps, -0.1, np.float32), False, True))
    return paths


def test_dreams_start_along_the_episodes_within_the_range_given(mdrnn, tmp_path):
    paths = latent_files(tmp_path, (200, 60, 120))
    fixed = dream.Dreamer(mdrnn, paths, 50, 1.0, 10, torch.device("cpu"))
    assert fixed.pick_starts(np.random.default_rng(0), 6) == [
        (int(e), 50) for e in np.random.default_rng(0).choice(3, 6, replace=True)]
    along = dream.Dreamer(mdrnn, paths, 50, 1.0, 10, torch.device("cpu"), start_last=150)
    picked = along.pick_starts(np.random.default_rng(0), 300)
    assert picked == along.pick_starts(np.random.default_rng(0), 300)  # the rng's draws only
    for episode, frame in picked:
        assert 50 <= frame <= min(150, (200, 60, 120)[episode] - 1)
    frames = {episode: {f for e, f in picked if e == episode} for episode in range(3)}
    assert max(frames[0]) > 140 and min(frames[0]) < 60 and frames[1] == {50, 51, 52, 53, 54,
                                                                          55, 56, 57, 58, 59}
    # A start is M warmed up on its episode's real prefix, up to that frame.
    z, h, _ = along.starts([(0, 120)])
    latents = dream.load_latents(paths[0], Z)
    alone = dream.warm_up(mdrnn, latents.mu, latents.actions, 120)
    assert torch.equal(z, alone.z) and torch.allclose(h, alone.h)
    returns, steps, _ = along.evaluate(controllers(2).numpy(), picked[:4], [1, 2, 3, 4])
    assert returns.shape == (2,) and steps <= 2 * 4 * 10


def test_the_dream_warns_when_m_cannot_rank_controllers(tmp_path):
    from worldmodel.steps.controller import dream_problem

    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"summary": {"reward_corr": 0.1, "tile_auroc": 0.55,
                                            "done_auroc": None}}))
    problem = dream_problem(path, "tiles")
    assert "r = 0.10" in problem and "AUROC 0.55" in problem and "no episode ends" in problem
    assert "mdrnn.rewards=tiles" not in problem
    path.write_text(json.dumps({"summary": {"reward_corr": 0.1}}))
    assert "mdrnn.rewards=tiles" in dream_problem(path, "regress")
    path.write_text(json.dumps({"summary": {"reward_corr": 0.8, "tile_auroc": 0.9,
                                            "done_auroc": 0.95}}))
    assert dream_problem(path, "tiles") is None
    # Teacher forcing fine, the dream not: its 30-step returns do not track the real ones.
    path.write_text(json.dumps({"summary": {"reward_corr": 0.8, "tile_auroc": 0.97,
                                            "done_auroc": 0.95, "dream_return_corr_30": 0.1}}))
    assert "30-step returns correlate with the real ones at r = 0.10" in dream_problem(
        path, "tiles")
    assert "not readable" in dream_problem(tmp_path / "missing.json", "tiles")
