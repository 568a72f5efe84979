"""The agent loop (worldmodel/rollout.py) on the real CarRacing-v3 with small untrained models.

Covers: batching several environments gives exactly the returns of driving them one at a
time (z = mean and z = sample; at paper size, on both renderers); early stop ends a hopeless
rollout and only when asked; per-sample products do not depend on the batch; a mismatched M
is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodel.envs import EnvConfig
from worldmodel.errors import ConfigError
from worldmodel.models import MDRNN, VAE, Controller, checkpoint
from worldmodel.rollout import (
    Agent,
    AgentFiles,
    DriveSettings,
    drive,
    load_agent,
    per_sample_linear,
)

Z_DIM, HIDDEN = 8, 16




@pytest.fixture(scope="module")
def agent() -> Agent:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae, mdrnn = VAE(z_dim=Z_DIM), MDRNN(z_dim=Z_DIM, hidden_size=HIDDEN)
    return Agent(vae.to(memory_format=torch.channels_last).eval(), mdrnn.eval(), EnvConfig())


def random_params(count: int, seed: int = 0) -> np.ndarray:
    n = Controller(z_dim=Z_DIM, hidden_size=HIDDEN).num_params
    return np.random.default_rng(seed).normal(0, 0.5, (count, n))


@pytest.mark.parametrize("z", ["mean", "sample"])
def test_batched_loop_equals_one_environment_at_a_time(agent, z):
    params, tracks, noise = random_params(3), [11, 12, 13], [5, 6, 7]
    # Stops at different steps (early stop on, one shorter cap): the batch shrinks as it goes.
    settings = DriveSettings(max_steps=60, z=z, early_stop_steps=25)
    batched = drive(agent, params, tracks, settings, noise)
    single = [drive(agent, params[i:i + 1], [tracks[i]], settings, [noise[i]])[0]
              for i in range(3)]
    assert batched == single
    assert [r.track for r in batched] == tracks
    assert len({r.total_reward for r in batched}) == 3  # different tracks and controllers


@pytest.mark.parametrize("renderer", ["fast", "lowres"])
def test_a_population_batch_at_paper_size_equals_one_environment_at_a_time(renderer):
    """The controller step drives several candidates' rollouts in one batch (up to
    hardware.envs_per_worker): at z 32 and 256 LSTM units too, no episode's return may depend
    on its batch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        vae, mdrnn = VAE(z_dim=32), MDRNN(z_dim=32, hidden_size=256)
    env = EnvConfig(renderer=renderer, action_repeat=2)
    paper = Agent(vae.to(memory_format=torch.channels_last).eval(), mdrnn.eval(), env)
    n = Controller(z_dim=32, hidden_size=256).num_params
    params = np.random.default_rng(2).normal(0, 0.3, (6, n))
    tracks, noise = [31, 32, 31, 32, 33, 31], [1, 2, 1, 2, 3, 1]
    settings = DriveSettings(max_steps=70, z="sample", early_stop_steps=30)
    batched = drive(paper, params, tracks, settings, noise)
    single = [drive(paper, params[i:i + 1], [tracks[i]], settings, [noise[i]])[0]
              for i in range(6)]
    assert batched == single
    assert len({r.total_reward for r in batched}) > 3  # the candidates drive differently


def test_z_sample_differs_from_z_mean_and_depends_on_its_noise_seed(agent):
    params, tracks = random_params(1), [21]
    mean = drive(agent, params, tracks, DriveSettings(max_steps=40, z="mean"))
    sample = drive(agent, params, tracks, DriveSettings(max_steps=40, z="sample"), [1])
    again = drive(agent, params, tracks, DriveSettings(max_steps=40, z="sample"), [1])
    assert sample == again
    with pytest.raises(ValueError, match="noise seed"):
        drive(agent, params, tracks, DriveSettings(max_steps=40, z="sample"))
    assert mean[0].steps == sample[0].steps == 40


def braking_controller() -> np.ndarray:
    """Zero weights; biases give no steering, no gas, full brake: the car never moves."""
    controller = Controller(z_dim=Z_DIM, hidden_size=HIDDEN)
    flat = np.zeros(controller.num_params)
    flat[-3:] = [0.0, -20.0, 20.0]
    return flat[None]


def test_early_stop_ends_a_hopeless_rollout_only_when_asked(agent):
    stopped = drive(agent, braking_controller(), [3],
                    DriveSettings(max_steps=100, early_stop_steps=30))[0]
    # The car starts on the first tile, whose reward comes with the first step; then nothing.
    assert stopped.early_stopped and stopped.steps == 31
    full = drive(agent, braking_controller(), [3], DriveSettings(max_steps=100))[0]
    assert not full.early_stopped and full.steps == 100
    # The stopped rollout's return is what the full one had at that step.
    assert full.total_reward == pytest.approx(stopped.total_reward - 0.1 * (100 - 31))


def test_per_sample_linear_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    layer = torch.nn.Linear(1024, 32)
    x = torch.randn(16, 1024)
    rows = torch.cat([per_sample_linear(layer, x[i:i + 1]) for i in range(16)])
    assert torch.equal(per_sample_linear(layer, x), rows)
    assert torch.equal(per_sample_linear(layer, x[:5]), rows[:5])
    assert torch.allclose(rows, layer(x), atol=1e-5)


def test_an_mdrnn_for_another_vae_is_refused(tmp_path):
    torch.save(checkpoint(VAE(z_dim=Z_DIM)), tmp_path / "vae.pt")
    torch.save(checkpoint(MDRNN(z_dim=4, hidden_size=HIDDEN)), tmp_path / "mdrnn.pt")
    with pytest.raises(ConfigError, match="force=\\[mdrnn\\]"):
        load_agent(AgentFiles(str(tmp_path / "vae.pt"), str(tmp_path / "mdrnn.pt"),
                              EnvConfig()))
