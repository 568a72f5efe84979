"""Tests for the V, M and C models and their losses (worldmodel.models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldmodel.errors import ConfigError
from worldmodel.models import (
    MDRNN,
    VAE,
    Controller,
    MDNOutput,
    act_batch,
    build_from_checkpoint,
    checkpoint,
    frames_to_tensor,
    mdn_nll,
    mdrnn_loss,
    sample,
    vae_loss,
)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- VAE ---------------------------------------------------------------------------------------


def test_vae_has_paper_parameter_count() -> None:
    assert count_params(VAE()) == 4_348_547


def test_vae_shapes_and_output_range() -> None:
    vae = VAE(z_dim=8)
    x = torch.rand(2, 3, 64, 64)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 8)
    x_hat, mu, logvar = vae(x)
    assert x_hat.shape == (2, 3, 64, 64)
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    assert vae.decode(torch.randn(5, 8)).shape == (5, 3, 64, 64)


def test_vae_loss_matches_definition_above_floor() -> None:
    torch.manual_seed(0)
    x, x_hat = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)
    mu, logvar = 3 * torch.randn(4, 6), torch.randn(4, 6)
    losses = vae_loss(x, x_hat, mu, logvar, kl_tolerance=0.5)
    rec = sum(((x[i] - x_hat[i]) ** 2).sum() for i in range(4)) / 4
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1) / 2 - log s, per dimension.
    var = logvar.exp()
    kl = ((var + mu**2 - 1) / 2 - 0.5 * logvar).sum(dim=1).mean()
    assert (0.5 * 6 < ((var + mu**2 - 1) / 2 - 0.5 * logvar).sum(dim=1)).all()
    torch.testing.assert_close(losses["rec"], rec)
    torch.testing.assert_close(losses["kl"], kl)
    torch.testing.assert_close(losses["loss"], rec + kl)


def test_vae_kl_below_tolerance_is_floored_and_gets_no_gradient() -> None:
    z_dim = 32
    x = torch.rand(3, 3, 64, 64)
    x_hat = torch.rand(3, 3, 64, 64)
    # A posterior almost equal to the prior: KL far below 0.5 * 32 = 16 nats.
    mu = torch.full((3, z_dim), 0.1, requires_grad=True)
    logvar = torch.full((3, z_dim), -0.1, requires_grad=True)
    losses = vae_loss(x, x_hat, mu, logvar, kl_tolerance=0.5)
    assert 0 < losses["kl"].item() < 1.0
    torch.testing.assert_close(losses["loss"], losses["rec"] + 16.0)
    losses["loss"].backward()
    assert torch.count_nonzero(mu.grad) == 0
    assert torch.count_nonzero(logvar.grad) == 0


def test_vae_kl_floor_is_per_image() -> None:
    # One image under the floor, one above: only the one above contributes its own KL.
    mu = torch.stack([torch.zeros(4), torch.full((4,), 3.0)]).requires_grad_()
    logvar = torch.zeros(2, 4)
    x = torch.zeros(2, 3, 64, 64)
    losses = vae_loss(x, x, mu, logvar, kl_tolerance=0.5)
    # Image 0 has KL 0 -> floored to 2; image 1 has KL 4 * 9 / 2 = 18.
    torch.testing.assert_close(losses["loss"], torch.tensor((2.0 + 18.0) / 2))
    torch.testing.assert_close(losses["kl"], torch.tensor(18.0 / 2))
    losses["loss"].backward()
    assert torch.count_nonzero(mu.grad[0]) == 0
    assert torch.count_nonzero(mu.grad[1]) == 4


@pytest.mark.parametrize("channels_last", [False, True])
def test_frames_to_tensor(channels_last: bool) -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    images = frames_to_tensor(frames, channels_last=channels_last)
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    expected = torch.from_numpy(frames.astype(np.float32) / 255).permute(0, 3, 1, 2)
    torch.testing.assert_close(images, expected)
    assert images.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert images.is_contiguous() != channels_last
    # The result is a copy: changing the caller's frames afterwards does not change it.
    before = images.clone()
    frames[:] = 255 - frames
    assert torch.equal(images, before)


def test_frames_to_tensor_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(np.zeros((1, 64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="N, H, W, C"):
        frames_to_tensor(np.zeros((64, 64, 3), dtype=np.uint8))


def structured_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """Flat-coloured backgrounds with one coloured rectangle each: easy to compress."""
    images = torch.empty(count, 3, 64, 64)
    for i in range(count):
        background, box = torch.rand(2, 3, 1, 1, generator=generator)
        images[i] = background
        top, left = torch.randint(0, 40, (2,), generator=generator).tolist()
        images[i, :, top : top + 20, left : left + 20] = box
    return images


def test_vae_short_training_lowers_loss() -> None:
    torch.manual_seed(0)
    images = structured_images(4, torch.Generator().manual_seed(0))
    vae = VAE(z_dim=8)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        x_hat, mu, logvar = vae(images)
        loss = vae_loss(images, x_hat, mu, logvar, kl_tolerance=0.5)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_vae_checkpoint_roundtrip_and_mismatch() -> None:
    vae = VAE(z_dim=16)
    ckpt = checkpoint(vae)
    rebuilt = build_from_checkpoint(VAE, ckpt, expect={"z_dim": 16})
    for name, tensor in vae.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor)
    with pytest.raises(ValueError) as caught:
        build_from_checkpoint(VAE, ckpt, expect={"z_dim": 32})
    message = str(caught.value)
    assert "VAE checkpoint has z_dim=16" in message
    assert "config asks for z_dim=32" in message
    assert "vae.z_dim=16" in message
    assert isinstance(caught.value, ConfigError)
    assert message == (
        "VAE checkpoint has z_dim=16 but the config asks for z_dim=32; "
        "retrain (force=[vae]) or set vae.z_dim=16"
    )


# --- MDN-RNN -----------------------------------------------------------------------------------


def random_output(batch: int, steps: int, z_dim: int, k: int, seed: int = 0) -> MDNOutput:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, steps, z_dim, k)
    return MDNOutput(
        logit_pi=torch.randn(shape, generator=g, dtype=torch.float64),
        mu=torch.randn(shape, generator=g, dtype=torch.float64),
        log_sigma=0.5 * torch.randn(shape, generator=g, dtype=torch.float64),
        reward=torch.randn(batch, steps, generator=g, dtype=torch.float64),
        done_logit=torch.randn(batch, steps, generator=g, dtype=torch.float64),
    )


def test_mdrnn_output_shapes_and_sigma_bounds() -> None:
    model = MDRNN(z_dim=4, action_dim=3, hidden_size=16, num_gaussians=5)
    out, (h, c) = model(torch.randn(2, 7, 4), torch.randn(2, 7, 3))
    for field in (out.logit_pi, out.mu, out.log_sigma):
        assert field.shape == (2, 7, 4, 5)
    assert out.reward.shape == out.done_logit.shape == (2, 7)
    assert h.shape == c.shape == (1, 2, 16)
    assert out.log_sigma.min() >= -5 and out.log_sigma.max() <= 2
    # Sigmas start near 1, the scale of the latents.
    assert out.log_sigma.abs().max() < 1.0


def test_mdn_nll_equals_direct_computation() -> None:
    out = random_output(batch=2, steps=3, z_dim=4, k=3)
    z_next = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    total = 0.0
    for b in range(2):
        for t in range(3):
            for d in range(4):
                weights = torch.softmax(out.logit_pi[b, t, d], dim=0)
                density = 0.0
                for k in range(3):
                    normal = torch.distributions.Normal(
                        out.mu[b, t, d, k], out.log_sigma[b, t, d, k].exp()
                    )
                    density += weights[k] * normal.log_prob(z_next[b, t, d]).exp()
                total += -math.log(density)
    expected = total / (2 * 3 * 4)
    assert mdn_nll(out, z_next).item() == pytest.approx(expected, rel=1e-10)


def test_mdn_nll_stays_finite_for_sharp_components() -> None:
    out = random_output(batch=1, steps=2, z_dim=3, k=2)._replace(
        log_sigma=torch.full((1, 2, 3, 2), -5.0, dtype=torch.float64)
    )
    far_target = torch.full((1, 2, 3), 50.0, dtype=torch.float64)
    nll = mdn_nll(out, far_target)
    assert torch.isfinite(nll) and nll > 1000


def test_mdn_nll_mask_ignores_padded_steps() -> None:
    out = random_output(batch=1, steps=3, z_dim=2, k=2)
    z_next = torch.zeros(1, 3, 2, dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    first_two = MDNOutput(*(field[:, :2] for field in out))
    torch.testing.assert_close(mdn_nll(out, z_next, mask), mdn_nll(first_two, z_next[:, :2]))


def test_mdrnn_loss_terms() -> None:
    out = random_output(batch=2, steps=3, z_dim=2, k=2)
    z_next = torch.zeros(2, 3, 2, dtype=torch.float64)
    r_next = torch.ones(2, 3, dtype=torch.float64)
    done_next = torch.zeros(2, 3, dtype=torch.float64)
    done_next[0, 2] = 1
    losses = mdrnn_loss(out, z_next, r_next, done_next, reward_weight=2.0, done_weight=3.0)
    torch.testing.assert_close(losses["reward"], ((out.reward - 1) ** 2).mean())
    p = torch.sigmoid(out.done_logit)
    bce = -(done_next * p.log() + (1 - done_next) * (1 - p).log()).mean()
    torch.testing.assert_close(losses["done"], bce)
    torch.testing.assert_close(
        losses["loss"], losses["nll"] + 2 * losses["reward"] + 3 * losses["done"]
    )
    weighted = mdrnn_loss(out, z_next, r_next, done_next, done_pos_weight=10.0)
    positive = -p[0, 2].log()
    torch.testing.assert_close(weighted["done"], bce + 9 * positive / 6)


def test_sample_deterministic_is_mean_of_most_likely_component() -> None:
    out = random_output(batch=3, steps=2, z_dim=4, k=5)
    best = out.logit_pi.argmax(dim=-1)
    expected = torch.take_along_dim(out.mu, best.unsqueeze(-1), dim=-1).squeeze(-1)
    torch.testing.assert_close(sample(out, deterministic=True), expected)
    torch.testing.assert_close(sample(out, temperature=0.0), expected)
    cold = sample(out, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert cold.shape == (3, 2, 4)
    # sigma * sqrt(1e-4) <= exp(1.5) * 0.01: well under 0.1 from the chosen mean.
    assert (cold - expected).abs().max() < 0.1


def test_sample_temperature_scales_spread_and_is_reproducible() -> None:
    # One component per dimension with sigma 2: samples have std 2 * sqrt(tau).
    n = 20000
    out = MDNOutput(
        logit_pi=torch.zeros(n, 1, 1),
        mu=torch.full((n, 1, 1), 3.0),
        log_sigma=torch.full((n, 1, 1), math.log(2.0)),
        reward=torch.zeros(n),
        done_logit=torch.zeros(n),
    )
    for tau in (1.0, 0.25):
        z = sample(out, temperature=tau, generator=torch.Generator().manual_seed(0))
        assert z.mean().item() == pytest.approx(3.0, abs=0.05)
        assert z.std().item() == pytest.approx(2.0 * math.sqrt(tau), rel=0.03)
    first = sample(out, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(first, sample(out, 1.0, torch.Generator().manual_seed(5)))


def test_sample_picks_components_by_tempered_weights() -> None:
    # Two far-apart components with weights 0.8 / 0.2; tau = 2 flattens them to 2:1.
    n = 20000
    logits = torch.tensor([math.log(0.8), math.log(0.2)]).expand(n, 1, 2)
    out = MDNOutput(
        logit_pi=logits,
        mu=torch.tensor([-10.0, 10.0]).expand(n, 1, 2),
        log_sigma=torch.zeros(n, 1, 2),
        reward=torch.zeros(n),
        done_logit=torch.zeros(n),
    )
    z1 = sample(out, 1.0, torch.Generator().manual_seed(0))
    assert (z1 < 0).double().mean().item() == pytest.approx(0.8, abs=0.02)
    z2 = sample(out, 2.0, torch.Generator().manual_seed(0))
    assert (z2 < 0).double().mean().item() == pytest.approx(2 / 3, abs=0.02)


def test_step_matches_forward_over_a_sequence() -> None:
    torch.manual_seed(0)
    model = MDRNN(z_dim=4, action_dim=3, hidden_size=16, num_gaussians=3)
    z, a = torch.randn(2, 6, 4), torch.randn(2, 6, 3)
    sequence_out, sequence_state = model(z, a)
    state = model.initial_state(2)
    for t in range(6):
        step_out, state = model.step(z[:, t], a[:, t], state)
        for from_step, from_sequence in zip(step_out, sequence_out, strict=True):
            torch.testing.assert_close(from_step, from_sequence[:, t])
    torch.testing.assert_close(state[0], sequence_state[0])
    torch.testing.assert_close(state[1], sequence_state[1])


def test_advance_gives_exactly_the_state_of_step_at_paper_size() -> None:
    torch.manual_seed(0)
    model = MDRNN(z_dim=32, hidden_size=256).eval()
    stepped = advanced = model.initial_state(2)
    with torch.inference_mode():
        for _ in range(5):
            z, a = torch.randn(2, 32), torch.rand(2, 3)
            _, stepped = model.step(z, a, stepped)
            advanced = model.advance(z, a, advanced)
            assert torch.equal(advanced[0], stepped[0]) and torch.equal(advanced[1], stepped[1])


def test_mdrnn_short_training_lowers_loss() -> None:
    # A toy world: z rotates by a fixed angle each step, plus a push from the action.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch, steps, z_dim = 16, 12, 2
    angle = 0.3
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    actions = torch.randn(batch, steps, 1, generator=g)
    z = torch.empty(batch, steps + 1, z_dim)
    z[:, 0] = torch.randn(batch, z_dim, generator=g)
    for t in range(steps):
        z[:, t + 1] = z[:, t] @ rotation.T + 0.3 * actions[:, t]
    rewards = z[:, 1:, 0]
    dones = torch.zeros(batch, steps)
    dones[:, -1] = 1

    model = MDRNN(z_dim=z_dim, action_dim=1, hidden_size=32, num_gaussians=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        out, _ = model(z[:, :-1], actions)
        loss = mdrnn_loss(out, z[:, 1:], rewards, dones)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0


def test_mdrnn_checkpoint_with_other_z_dim_gives_clear_error() -> None:
    ckpt = checkpoint(MDRNN(z_dim=16, hidden_size=8))
    with pytest.raises(ValueError, match=r"MDRNN checkpoint has z_dim=16 .* z_dim=32") as caught:
        build_from_checkpoint(MDRNN, ckpt, expect={"z_dim": 32, "hidden_size": 8})
    assert "set vae.z_dim=16" in str(caught.value)  # z_dim is V's setting, not M's
    rebuilt = build_from_checkpoint(MDRNN, ckpt, expect={"z_dim": 16})
    assert rebuilt.config() == ckpt["kwargs"]


# --- Controller --------------------------------------------------------------------------------


def test_controller_has_paper_parameter_count() -> None:
    controller = Controller()
    assert count_params(controller) == controller.num_params == 867


def test_controller_flat_roundtrip() -> None:
    controller = Controller(z_dim=4, hidden_size=6)
    vector = np.random.default_rng(0).normal(size=controller.num_params)
    controller.set_flat(vector)
    np.testing.assert_allclose(controller.get_flat(), vector, rtol=1e-6)
    # The layout is the weight row by row, then the bias.
    np.testing.assert_allclose(
        controller.linear.weight.detach().numpy(), vector[:30].reshape(3, 10), rtol=1e-6
    )
    np.testing.assert_allclose(controller.linear.bias.detach().numpy(), vector[30:], rtol=1e-6)


def test_controller_set_flat_rejects_wrong_length() -> None:
    controller = Controller()
    with pytest.raises(ValueError, match="needs 867 parameters.*got 866"):
        controller.set_flat(np.zeros(866))


def test_controller_actions_stay_in_bounds() -> None:
    controller = Controller(z_dim=4, hidden_size=6)
    controller.set_flat(np.random.default_rng(1).normal(scale=5.0, size=controller.num_params))
    actions = controller(10 * torch.randn(500, 4), 10 * torch.randn(500, 6))
    steer, gas, brake = actions.unbind(dim=-1)
    assert steer.min() >= -1 and steer.max() <= 1
    assert gas.min() >= 0 and gas.max() <= 1
    assert brake.min() >= 0 and brake.max() <= 1
    # Large inputs saturate: full left/right, both gas ends, and zero brake all occur.
    assert steer.min() < -0.99 and steer.max() > 0.99
    assert (brake == 0).any() and (brake > 0.99).any()


def test_controller_squashing_follows_the_original() -> None:
    controller = Controller(z_dim=1, hidden_size=1)
    # Zero weights, so the raw outputs are the biases.
    controller.set_flat([0, 0, 0, 0, 0, 0, 0.5, -0.5, -0.3])
    actions = controller(torch.zeros(1, 1), torch.zeros(1, 1))[0]
    expected = [math.tanh(0.5), (math.tanh(-0.5) + 1) / 2, 0.0]
    assert actions.tolist() == pytest.approx(expected)


def test_act_batch_equals_each_controller_alone() -> None:
    torch.manual_seed(0)
    population, batch = 5, 4
    controller = Controller()
    params = torch.randn(population, controller.num_params)
    zh = torch.randn(population, batch, 288)
    together = act_batch(params, zh)
    assert together.shape == (population, batch, 3)
    for p in range(population):
        controller.set_flat(params[p].numpy())
        alone = controller(zh[p, :, :32], zh[p, :, 32:])
        torch.testing.assert_close(together[p], alone)


def test_act_batch_rejects_wrong_parameter_count() -> None:
    with pytest.raises(ValueError, match="need 867 parameters"):
        act_batch(torch.zeros(2, 866), torch.zeros(2, 1, 288))


def test_the_tiles_loss_is_a_cross_entropy_on_tile_events():
    from torch.nn import functional as F

    from worldmodel.models.mdrnn import MDRNN, mdrnn_loss

    torch.manual_seed(0)
    model = MDRNN(z_dim=4, hidden_size=8, rewards="tiles")
    out, _ = model(torch.randn(2, 5, 4), torch.rand(2, 5, 3))
    tiles = (torch.rand(2, 5) > 0.7).float()
    losses = mdrnn_loss(out, torch.randn(2, 5, 4), tiles, torch.zeros(2, 5), rewards="tiles")
    assert losses["reward"].item() == pytest.approx(
        F.binary_cross_entropy_with_logits(out.reward, tiles).item())
    assert model.config()["rewards"] == "tiles"
    with pytest.raises(ValueError, match="regress, tiles"):
        MDRNN(rewards="mse")
