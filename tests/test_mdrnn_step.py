"""The mdrnn step, run through a real Runner on synthetic latents (no CarRacing, no V training).

The synthetic world is learnable in a few dozen gradient steps: z_{t+1} = R z_t + B a_t (R a
damped rotation), the reward is z_{t+1}[0] and even episodes terminate. Covers: training lowers
the loss and M's prediction beats copying the last z; teacher-forcing targets are aligned;
episodes shorter than seq_len are padded and masked; resume after an interrupt ends with the
same weights; a NaN loss stops with a clear error and keeps the last good checkpoint; the
figures are written, and redrawn identically from the stored files; the calibration numbers
reach the step's metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_config, make_runner
from worldmodel import pipeline
from worldmodel.config import config_slice, typed
from worldmodel.errors import ConfigError
from worldmodel.figures import mdrnn as mdrnn_figures
from worldmodel.latents import Latents, latent_path, save_latents
from worldmodel.models import MDRNN, VAE, build_from_checkpoint, checkpoint
from worldmodel.runner import Runner, Step, StepContext
from worldmodel.steps import mdrnn as mdrnn_step

Z_DIM = 4
LENGTHS = (30, 45, 12, 60, 25, 38, 5)  # two of them shorter than seq_len


def synthetic_latents(rng: np.random.Generator, steps: int, terminated: bool) -> Latents:
    angle = 1.0
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rotation = 0.95 * np.kron(np.eye(2), turn)  # two planes turning: z is 4-dimensional
    push = np.array([[0.6, 0, 0], [0, 0.6, 0], [0, 0, 0.6], [0.3, 0.3, 0]])
    actions = rng.uniform(-1, 1, (steps, 3))
    z = np.empty((steps + 1, Z_DIM))
    z[0] = rng.normal(size=Z_DIM)
    for t in range(steps):
        z[t + 1] = rotation @ z[t] + push @ actions[t]
    return Latents(
        mu=z.astype(np.float16),
        logvar=np.full_like(z, np.log(0.05**2)).astype(np.float16),
        actions=actions.astype(np.float32),
        rewards=z[1:, 0].astype(np.float32),
        terminated=terminated,
        truncated=not terminated,
    )


@dataclass
class SynthParams:
    episodes: int = len(LENGTHS)


@dataclass
class SynthConfig:
    seed: int
    synth: SynthParams


def make_vae(ctx: StepContext) -> dict:
    # Untrained: the figures only need a decoder of the right size.
    torch.manual_seed(ctx.seed)
    torch.save(checkpoint(VAE(z_dim=Z_DIM)), ctx.dir / "model.pt")
    return {}


def make_latents(ctx: StepContext) -> dict:
    directory = ctx.dir / "latents"
    directory.mkdir(exist_ok=True)
    for i, steps in enumerate(LENGTHS[: ctx.config.synth.episodes]):
        save_latents(latent_path(directory, i),
                     synthetic_latents(ctx.rng("episode", i), steps, terminated=i % 2 == 0))
    return {}


# pipeline.py's own mdrnn row, behind a synthetic V and synthetic latents.
TABLE = (
    Step("vae", make_vae, reads=("seed",), writes=("model.pt",)),
    Step("encode", make_latents, reads=("seed", "synth"), config=SynthConfig,
         writes=("latents/ep_*.npz",)),
    *(step for step in pipeline.STEPS if step.name == "mdrnn"),
)
MDRNN_WRITES = TABLE[2].writes


def config(**changes):
    cfg = OmegaConf.create({
        "seed": 0,
        "synth": {"episodes": len(LENGTHS)},
        "mdrnn": {"hidden_size": 32, "num_gaussians": 2, "learning_rate": 1e-2, "batch_size": 8,
                  "seq_len": 16, "epochs": 3, "sequences_per_episode": 32, "grad_clip": 1.0,
                  "reward_weight": 1.0, "done_weight": 1.0, "done_pos_weight": None,
                  "val_fraction": 0.3, "dream_start": 5, "dream_steps": 12,
                  "dream_temperature": 1.0},
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def runner(root: Path, cfg=None) -> Runner:
    return make_runner(TABLE, cfg if cfg is not None else config(), root)


def load_model(path: Path) -> MDRNN:
    return build_from_checkpoint(MDRNN, torch.load(path, weights_only=True))


def metric_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: Path, b: Path) -> None:
    theirs = load_model(b).state_dict()
    for name, tensor in load_model(a).state_dict().items():
        assert torch.equal(tensor, theirs[name]), name


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    return runner(tmp_path_factory.mktemp("mdrnn")).run(["mdrnn"])


# --- tests -------------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_beats_copying_the_last_z(trained):
    path = Path(trained["mdrnn"]["path"])
    for name in MDRNN_WRITES:
        assert (path / name).stat().st_size > 0, name
    assert not (path / "checkpoint.pt").exists()  # it only served to resume
    rows = metric_rows(path)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    first, last = rows[0], rows[-1]
    assert last["mdrnn/loss"] < first["mdrnn/loss"] - 0.5
    assert last["mdrnn/val_loss"] < first["mdrnn/val_loss"]
    for term in ("nll", "reward", "done", "val_nll", "val_reward", "val_done"):
        assert np.isfinite(last[f"mdrnn/{term}"]), term
    # z_{t+1} follows from z_t and a_t: M must do far better than copying z_t.
    assert last["mdrnn/val_z_mse"] < 0.25 * last["mdrnn/val_copy_mse"]
    assert all(row["mdrnn/timesteps_per_s"] > 0 for row in rows)
    # 5 training episodes x 32 windows of at most 16 transitions per epoch.
    split = json.loads((path / "split.json").read_text())
    assert len(split["train"]) == 5 and len(split["val"]) == 2
    assert split["train_steps"] + split["val_steps"] == sum(LENGTHS)
    assert 5 * 32 <= first["mdrnn/timesteps"] <= 5 * 32 * 16
    model = load_model(path / "model.pt")
    assert model.config()["z_dim"] == Z_DIM and model.hidden_size == 32


def test_calibration_and_dream_numbers_reach_the_metrics(trained):
    metrics = trained["mdrnn"]
    for name in ("reward_mse", "reward_baseline_mse", "reward_corr", "done_brier",
                 "dream_mse_sampled", "dream_mse_mode", "dream_mse_copy", "timesteps_per_s",
                 "val_z_mse", "loss"):
        assert np.isfinite(metrics[name]), name
    assert 0 <= metrics["done_brier"] <= 1
    assert 0 <= metrics["done_auroc"] <= 1 and metrics["done_ends"] == 2  # both held out end
    # The reward is a function of z_{t+1}: M predicts it better than its mean does.
    assert metrics["reward_mse"] < metrics["reward_baseline_mse"]
    assert metrics["epochs"] == 3 and metrics["val_episodes"] == 2
    evaluation = json.loads((Path(metrics["path"]) / "evaluation.json").read_text())
    assert len(evaluation["dream"]["mse"]["copy"]) == 12


def test_figures_are_redrawn_from_stored_files_alone(trained, tmp_path):
    from matplotlib.image import imread

    path = Path(trained["mdrnn"]["path"])
    mdrnn_figures.make_figures(path, Path(trained["encode"]["path"]),
                               Path(trained["vae"]["path"]), tmp_path)
    for name in ("dream.png", "dream_error.png", "calibration.png", "losses.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert np.array_equal(imread(tmp_path / name), imread(path / name)), name
    assert (tmp_path / "dream.gif").read_bytes() == (path / "dream.gif").read_bytes()
    assert (tmp_path / "evaluation.json").read_text() == (path / "evaluation.json").read_text()
    from PIL import Image

    with Image.open(path / "dream.gif") as gif:
        assert gif.n_frames == 13  # the start frame and 12 dreamed steps


def test_teacher_forcing_targets_are_aligned():
    # Frame t of episode i holds z = 100 i + t; reward r_{t+1} = 1000 i + t; episode 1 ends.
    episodes = []
    for i, steps in enumerate((5, 3)):
        z = (100 * i + np.arange(steps + 1, dtype=np.float16))[:, None].repeat(2, axis=1)
        episodes.append(Latents(mu=z, logvar=np.zeros_like(z),
                                actions=np.tile(np.arange(steps, dtype=np.float32)[:, None], 3),
                                rewards=1000 * i + np.arange(steps, dtype=np.float32),
                                terminated=i == 1, truncated=i == 0))
    data = stub_set(episodes)
    windows = np.array([[0, 1, 4], [1, 0, 3]])  # episode, start, length
    batch = mdrnn_step.make_batch(data, windows, torch.device("cpu"))
    assert batch.mu.shape == (2, 5, 2) and batch.actions.shape == (2, 4, 3)
    inputs, targets = batch.mu[:, :-1, 0], batch.mu[:, 1:, 0]
    np.testing.assert_array_equal(inputs[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(targets[0], [2, 3, 4, 5])
    np.testing.assert_array_equal(batch.actions[0, :, 0], [1, 2, 3, 4])  # a_t with z_t
    np.testing.assert_array_equal(batch.rewards[0], [1, 2, 3, 4])  # r_{t+1} = rewards[t]
    np.testing.assert_array_equal(batch.done[0], [0, 0, 0, 0])  # truncated: never done
    # The short window is padded with its last frame and masked.
    np.testing.assert_array_equal(batch.mask[1], [True, True, True, False])
    np.testing.assert_array_equal(targets[1, :3], [101, 102, 103])
    np.testing.assert_array_equal(batch.rewards[1, :3], [1000, 1001, 1002])
    np.testing.assert_array_equal(batch.done[1, :3], [0, 0, 1])  # ends after its last step


def test_tiles_targets_are_new_tiles_and_exits():
    # Episode 0 leaves the playfield on its last step; episode 1 finishes its lap.
    rewards = ([-0.2, 3.1, -0.2, -100.2], [3.1, -0.2, 3.1])
    episodes = [Latents(mu=np.zeros((len(r) + 1, 2), np.float16),
                        logvar=np.zeros((len(r) + 1, 2), np.float16),
                        actions=np.zeros((len(r), 3), np.float32),
                        rewards=np.array(r, np.float32), terminated=True, truncated=False)
                for r in rewards]
    data = stub_set(episodes)
    windows = np.array([[0, 0, 4], [1, 0, 3]])
    regress = mdrnn_step.make_batch(data, windows, torch.device("cpu"))
    tiles = mdrnn_step.make_batch(data, windows, torch.device("cpu"), "tiles")
    np.testing.assert_allclose(regress.rewards[0], [-0.2, 3.1, -0.2, -100.2], rtol=1e-6)
    np.testing.assert_array_equal(regress.done[1, :3], [0, 0, 1])  # any end
    np.testing.assert_array_equal(tiles.rewards[0], [0, 1, 0, 0])
    np.testing.assert_array_equal(tiles.rewards[1, :3], [1, 0, 1])
    np.testing.assert_array_equal(tiles.done[0], [0, 0, 0, 1])  # the exit
    np.testing.assert_array_equal(tiles.done[1, :3], [0, 0, 0])  # a finished lap is no exit


def stub_set(episodes: list[Latents]) -> mdrnn_step.LatentSet:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        paths = [latent_path(Path(directory), i) for i in range(len(episodes))]
        for path, latents in zip(paths, episodes, strict=True):
            save_latents(path, latents)
        return mdrnn_step.read_latents(paths)


def test_random_windows_draw_every_transition_equally_often():
    steps = np.array([40, 5, 0])
    windows = mdrnn_step.random_windows(steps, [0, 1, 2], 16, None, np.random.default_rng(0))
    # By default ceil((steps + 15) / 16) windows per episode; an empty episode gives none.
    assert sorted(windows[:, 0].tolist()) == [0, 0, 0, 0, 1, 1]
    many = mdrnn_step.random_windows(steps, [0, 1], 16, 20000, np.random.default_rng(0))
    assert (many[:, 2] >= 1).all() and (many[:, 2] <= 16).all()
    for episode, t in ((0, 40), (1, 5)):
        drawn = np.zeros(t)
        for _, start, length in many[many[:, 0] == episode]:
            drawn[start : start + length] += 1
        # The first and the last transition (where an episode ends) as often as the others.
        np.testing.assert_allclose(drawn / drawn.mean(), 1, atol=0.05)
    tiled = mdrnn_step.tiled_windows(steps, [0, 1], 16)
    assert tiled.tolist() == [[0, 0, 16], [0, 16, 16], [0, 32, 8], [1, 0, 5]]


def test_episodes_all_shorter_than_seq_len_train(tmp_path):
    cfg = config(**{"mdrnn.seq_len": 100, "mdrnn.epochs": 1, "mdrnn.dream_steps": 40})
    summary = runner(tmp_path, cfg).run(["mdrnn"])
    assert np.isfinite(summary["mdrnn"]["loss"]) and np.isfinite(summary["mdrnn"]["val_loss"])
    # The longest held-out episode is shorter than dream_start + dream_steps: it dreams less.
    evaluation = json.loads((Path(summary["mdrnn"]["path"]) / "evaluation.json").read_text())
    assert evaluation["dream"]["horizon"] <= 40


def test_interrupted_training_resumes_to_the_same_weights(trained, tmp_path, monkeypatch):
    save = mdrnn_step.save_checkpoint

    def interrupt_after_epoch_1(path, model, optimizer, epoch, rows):
        save(path, model, optimizer, epoch, rows)
        if epoch == 1:
            raise KeyboardInterrupt  # as a Ctrl-C right after the first epoch's checkpoint

    monkeypatch.setattr(mdrnn_step, "save_checkpoint", interrupt_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path).run(["mdrnn"])
    [staging] = (tmp_path / "store" / "mdrnn").glob(".staging-*")
    assert torch.load(staging / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (staging / "model.pt").exists()

    monkeypatch.setattr(mdrnn_step, "save_checkpoint", save)
    epochs_run = []
    train_epoch = mdrnn_step.train_epoch

    def spy(*args, **kwargs):
        epochs_run.append(args[5])  # the epoch number
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(mdrnn_step, "train_epoch", spy)
    resumed = runner(tmp_path).run(["mdrnn"])
    assert epochs_run == [2, 3]
    path = Path(resumed["mdrnn"]["path"])
    assert [row["epoch"] for row in metric_rows(path)] == [1, 2, 3]
    assert_same_weights(path / "model.pt", Path(trained["mdrnn"]["path"]) / "model.pt")


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    loss, train_epoch = mdrnn_step.mdrnn_loss, mdrnn_step.train_epoch
    current = {}

    def epoch_spy(*args, **kwargs):
        current["epoch"] = args[5]
        return train_epoch(*args, **kwargs)

    def nan_in_epoch_2(*args, **kwargs):
        losses = loss(*args, **kwargs)
        if current.get("epoch") == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(mdrnn_step, "train_epoch", epoch_spy)
    monkeypatch.setattr(mdrnn_step, "mdrnn_loss", nan_in_epoch_2)
    with pytest.raises(mdrnn_step.TrainingDiverged,
                       match=r"loss became nan at epoch 2, batch 1; the last good checkpoint "
                             r"\(epoch 1\).*mdrnn\.learning_rate"):
        runner(tmp_path).run(["mdrnn"])
    [staging] = (tmp_path / "store" / "mdrnn").glob(".staging-*")
    assert torch.load(staging / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (staging / "model.pt").exists()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["run"]["status"] == "failed"


def test_a_run_killed_after_writing_the_model_only_redraws_the_figures(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    cfg = config(**{"mdrnn.epochs": 1})
    monkeypatch.setattr(mdrnn_figures, "make_figures", interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path, cfg).run(["mdrnn"])
    monkeypatch.undo()
    monkeypatch.setattr(mdrnn_step, "train_epoch", interrupt)  # training again would fail
    summary = runner(tmp_path, cfg).run(["mdrnn"])
    path = Path(summary["mdrnn"]["path"])
    assert (path / "dream.gif").stat().st_size > 0 and not (path / "checkpoint.pt").exists()
    assert summary["mdrnn"]["epochs"] == 1 and np.isfinite(summary["mdrnn"]["reward_mse"])


def test_auroc_counts_ties_half():
    labels = np.array([True, False, False, True, False])
    assert mdrnn_figures.auroc(np.array([0.9, 0.1, 0.5, 0.5, 0.2]), labels) == pytest.approx(
        (3 + 2.5) / 6)
    assert mdrnn_figures.auroc(np.array([0.1, 0.2]), np.array([False, False])) is None


def test_the_shipped_configs_type_into_the_step_config():
    for preset in ("tiny", "small", "paper"):
        cfg = compose_config([f"data={preset}"])
        step_config = typed(mdrnn_step.MDRNNStepConfig, config_slice(cfg, ("seed", "mdrnn")),
                            "mdrnn")
        mdrnn_step.check_params(step_config.mdrnn)
    assert step_config.mdrnn.hidden_size == 256 and step_config.mdrnn.num_gaussians == 5


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match=r"mdrnn\.seq_len=0 must be >= 1"):
        mdrnn_step.check_params(mdrnn_step.MDRNNParams(seq_len=0))
    with pytest.raises(ConfigError, match=r"mdrnn\.sequences_per_episode=0"):
        mdrnn_step.check_params(mdrnn_step.MDRNNParams(sequences_per_episode=0))


def test_the_dreamed_return_correlation_is_measured_on_windows_long_enough():
    from worldmodel.figures import mdrnn as mdrnn_figures
    from worldmodel.models import MDRNN

    rng = np.random.default_rng(0)

    def episode(steps: int) -> Latents:
        actions = rng.uniform(-1, 1, (steps, 3)).astype(np.float32)
        return Latents(mu=rng.standard_normal((steps + 1, 2)).astype(np.float16),
                       logvar=np.zeros((steps + 1, 2), np.float16), actions=actions,
                       rewards=actions[:, 0].copy(), terminated=False, truncated=True)

    torch.manual_seed(0)
    model = MDRNN(z_dim=2, hidden_size=8).eval()
    episodes = [episode(150) for _ in range(3)]  # 100 steps: windows at 0, 25 and 50 in each

    def measure(found: list[Latents]) -> dict:
        return mdrnn_figures.dream_return_corr(model, found, 1.0,
                                               torch.Generator().manual_seed(0))

    corr = measure(episodes)
    assert set(corr) == {"dream_return_corr_10", "dream_return_corr_30", "dream_return_corr_100"}
    assert all(-1 <= value <= 1 for value in corr.values())
    assert measure(episodes) == corr  # its draws come from the generator given
    # Windows are as long as their horizon: a 99-step episode has none of 100 steps.
    short = measure([episode(99)])
    assert short["dream_return_corr_100"] is None and short["dream_return_corr_10"] is not None
    assert set(measure([episode(9)]).values()) == {None}


def test_the_action_response_holds_each_action_and_counts_the_tiles_m_expects():
    from worldmodel.figures import mdrnn as mdrnn_figures
    from worldmodel.models import MDRNN

    rng = np.random.default_rng(0)
    rewards = np.full(80, -0.1, np.float32)
    rewards[[30, 31, 60]] = 3.2  # 2 new tiles in the 30 steps after 25, 1 after 50
    episode = Latents(mu=rng.standard_normal((81, 2)).astype(np.float16),
                      logvar=np.zeros((81, 2), np.float16),
                      actions=rng.uniform(0, 1, (80, 3)).astype(np.float32), rewards=rewards,
                      terminated=False, truncated=True)
    assert mdrnn_figures.action_response(MDRNN(z_dim=2, hidden_size=8), [episode]) == {}
    torch.manual_seed(0)
    model = MDRNN(z_dim=2, hidden_size=8, rewards="tiles").eval()
    found = mdrnn_figures.action_response(model, [episode])
    assert found["real_tiles_30"] == pytest.approx((2 + 1 + 0) / 3)  # starts 25, 50 and 75
    held = [found[f"dream_tiles_30_{name}"] for name in ("coast", "gas", "brake")]
    assert all(0 < tiles < 30 for tiles in held) and len(set(held)) == 3  # M answers actions
    with torch.no_grad():
        model.reward_head.weight.zero_()
        model.reward_head.bias.zero_()  # P(new tile) = 0.5 whatever M reads
    deaf = mdrnn_figures.action_response(model, [episode])
    assert [deaf[f"dream_tiles_30_{n}"] for n in ("coast", "gas", "brake")] == [15.0] * 3


def test_the_dream_warns_when_m_hardly_answers_the_throttle(tmp_path):
    from worldmodel.steps.controller import dream_problem

    path = tmp_path / "evaluation.json"
    fine = {"reward_corr": 0.8, "tile_auroc": 0.9, "done_auroc": 0.9, "dream_return_corr_30": 0.7}
    path.write_text(json.dumps({"summary": {**fine, "dream_tiles_30_gas": 4.0,
                                            "dream_tiles_30_coast": 1.0}}))
    assert dream_problem(path, "tiles") is None
    path.write_text(json.dumps({"summary": {**fine, "dream_tiles_30_gas": 0.35,
                                            "dream_tiles_30_coast": 0.37}}))
    assert "expects 0.35 tiles at full gas and 0.37 coasting" in dream_problem(path, "tiles")


def test_the_report_states_what_m_expects_of_each_action_held():
    from worldmodel import report

    entry = {"dream_tiles_30_gas": 0.35, "dream_tiles_30_coast": 0.37,
             "dream_tiles_30_brake": 0.12, "real_tiles_30": 0.27}
    line = report.protocol_lines("mdrnn", entry, {"mdrnn": {"rewards": "tiles"}})
    assert "full gas / coasting / braking 0.35 / 0.37 / 0.12 (the data: 0.27)" in line
    assert "full gas" not in report.protocol_lines("mdrnn", {}, {"mdrnn": {}})
