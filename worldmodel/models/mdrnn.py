"""The memory model M: an LSTM with a mixture-density head (MDN-RNN) that predicts the next z.

Ha & Schmidhuber (2018), section 2.2 ("MDN-RNN (M) Model") and appendix A.2. Given z_t and
a_t, the LSTM's output h_{t+1} parameterises P(z_{t+1} | a_t, z_t, h_t) as a mixture of K
Gaussians, sampled with a temperature tau (section 4.4), plus the reward r_{t+1} and whether
the episode ends at t+1. Reward and done prediction are extensions for dreaming in CarRacing; the
paper only predicts done for VizDoom (section 5).

The mixture weights are per latent dimension: every one of the z_dim dimensions has its own K
weights, means and standard deviations, and the dimensions are independent given h. This is
the original TensorFlow model. A common PyTorch port (ctallec/world-models) instead shares one
weight vector across all dimensions, so each component is a diagonal Gaussian over the whole z.
Per-dimension weights are used here because they are the paper's model and because they let
each latent dimension be multimodal on its own (e.g. one dimension can branch into two futures
while another stays unimodal) without needing K joint components to cover every combination.

log sigma is bounded with a scaled tanh to [log_sigma_min, log_sigma_max] (default [-5, 2],
sigma in about [0.007, 7.4]). The bound keeps the likelihood from diverging when a component
collapses onto a near-constant target, and tanh keeps a gradient everywhere, unlike a clamp.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from worldmodel.rewards import MODES

LSTMState = tuple[torch.Tensor, torch.Tensor]


class MDNOutput(NamedTuple):
    """The MDN-RNN's predictions; leading dims are (B, T) for sequences and (B,) for one step."""

    logit_pi: torch.Tensor  # (..., z_dim, K) unnormalised log mixture weights
    mu: torch.Tensor  # (..., z_dim, K) component means
    log_sigma: torch.Tensor  # (..., z_dim, K) component log standard deviations, bounded
    reward: torch.Tensor  # (...) predicted reward r_{t+1}; with rewards="tiles" the logit of a
    #                        new tile at t+1
    done_logit: torch.Tensor  # (...) logit of the episode ending at t+1 (tiles: by an exit)


class MDRNN(nn.Module):
    """LSTM over [z_t, a_t] with a per-dimension Gaussian-mixture head, reward and done heads."""

    # The section of the run configuration that holds this model's settings.
    config_section = "mdrnn"
    # Constructor arguments set in another config section (see build_from_checkpoint).
    config_keys = {"z_dim": "vae.z_dim", "hidden_size": "mdrnn.hidden_size"}

    def __init__(
        self,
        z_dim: int = 32,
        action_dim: int = 3,
        hidden_size: int = 256,
        num_gaussians: int = 5,
        log_sigma_min: float = -5.0,
        log_sigma_max: float = 2.0,
        rewards: str = "regress",
    ) -> None:
        super().__init__()
        if rewards not in MODES:
            raise ValueError(f"rewards={rewards!r} is not one of {', '.join(MODES)}")
        if not log_sigma_min < log_sigma_max:
            raise ValueError(
                f"log_sigma_min ({log_sigma_min}) must be below log_sigma_max ({log_sigma_max})"
            )
        self.z_dim = z_dim
        self.action_dim = action_dim
        self.hidden_size = hidden_size
        self.num_gaussians = num_gaussians
        self.log_sigma_min = log_sigma_min
        self.log_sigma_max = log_sigma_max
        self.rewards = rewards
        """What the reward head predicts: the reward (regress), or the logit of a new tile
        (tiles, with the done head then the logit of leaving the playfield): rewards.py."""

        self.lstm = nn.LSTM(z_dim + action_dim, hidden_size, batch_first=True)
        self.mixture_head = nn.Linear(hidden_size, 3 * z_dim * num_gaussians)
        self.reward_head = nn.Linear(hidden_size, 1)
        self.done_head = nn.Linear(hidden_size, 1)

        # Start every sigma near 1 (log sigma = 0), the scale of the VAE's latents, rather than
        # at the middle of the bounds: the bias puts tanh where the scaled output is 0.
        middle, half_range = self._log_sigma_affine()
        with torch.no_grad():
            log_sigma_bias = self.mixture_head.bias.view(3, z_dim, num_gaussians)[2]
            start = max(-0.99, min(0.99, -middle / half_range))
            log_sigma_bias.fill_(math.atanh(start))

    def config(self) -> dict[str, int | float]:
        """Constructor arguments, so a checkpoint can rebuild the model with `MDRNN(**config)`."""
        return {
            "z_dim": self.z_dim,
            "action_dim": self.action_dim,
            "hidden_size": self.hidden_size,
            "num_gaussians": self.num_gaussians,
            "log_sigma_min": self.log_sigma_min,
            "log_sigma_max": self.log_sigma_max,
            "rewards": self.rewards,
        }

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> LSTMState:
        """Zero LSTM state (h, c), each (1, batch_size, hidden_size); h[0] is what C reads."""
        h = torch.zeros(1, batch_size, self.hidden_size, device=device)
        return h, torch.zeros_like(h)

    def forward(
        self, z: torch.Tensor, a: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[MDNOutput, LSTMState]:
        """Teacher-forced pass over sequences z (B, T, z_dim) and a (B, T, action_dim).

        Output step t is the prediction for step t+1, made after reading z_t and a_t.
        `state` is (h, c) as in nn.LSTM, each (1, B, hidden_size); None means zeros.
        """
        hidden, state = self.lstm(torch.cat([z, a], dim=-1), state)
        return self._heads(hidden), state

    def step(
        self, z: torch.Tensor, a: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[MDNOutput, LSTMState]:
        """One step for a batch: z (B, z_dim), a (B, action_dim); outputs have leading dim (B,).

        Runs the same LSTM on a length-1 sequence, so it matches `forward` exactly.
        """
        out, state = self.forward(z.unsqueeze(1), a.unsqueeze(1), state)
        return MDNOutput(*(field.squeeze(1) for field in out)), state

    def advance(self, z: torch.Tensor, a: torch.Tensor, state: LSTMState | None = None
                ) -> LSTMState:
        """The state after one step, without the mixture, reward and done heads: what the
        agent in the real game needs (C reads h; nobody reads M's predictions there). The
        state is exactly `step`'s; the heads cost about a third of a step at batch 2."""
        _, state = self.lstm(torch.cat([z, a], dim=-1).unsqueeze(1), state)
        return state

    def _log_sigma_affine(self) -> tuple[float, float]:
        middle = 0.5 * (self.log_sigma_max + self.log_sigma_min)
        half_range = 0.5 * (self.log_sigma_max - self.log_sigma_min)
        return middle, half_range

    def _heads(self, hidden: torch.Tensor) -> MDNOutput:
        mixture = self.mixture_head(hidden)
        mixture = mixture.view(*hidden.shape[:-1], 3, self.z_dim, self.num_gaussians)
        logit_pi, mu, raw_log_sigma = mixture.unbind(dim=-3)
        middle, half_range = self._log_sigma_affine()
        log_sigma = middle + half_range * torch.tanh(raw_log_sigma)
        return MDNOutput(
            logit_pi=logit_pi,
            mu=mu,
            log_sigma=log_sigma,
            reward=self.reward_head(hidden).squeeze(-1),
            done_logit=self.done_head(hidden).squeeze(-1),
        )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of values (...) over the entries where mask (...) is true; plain mean without mask."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def mdn_nll(out: MDNOutput, z_next: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of z_next (..., z_dim) under the predicted mixtures.

    For each latent dimension, -log sum_k pi_k N(z; mu_k, sigma_k), computed with log-softmax
    and log-sum-exp so it stays finite for sharp components. The result is averaged over batch,
    time and latent dimensions (a per-dimension NLL, as in the original), so its scale does not
    depend on z_dim. `mask` (...) excludes padded steps from the average.
    """
    log_pi = F.log_softmax(out.logit_pi, dim=-1)
    standardized = (z_next.unsqueeze(-1) - out.mu) * torch.exp(-out.log_sigma)
    log_normal = -0.5 * standardized.pow(2) - out.log_sigma - 0.5 * math.log(2 * math.pi)
    nll_per_dim = -torch.logsumexp(log_pi + log_normal, dim=-1)
    return _masked_mean(nll_per_dim.mean(dim=-1), mask)


def mdrnn_loss(
    out: MDNOutput,
    z_next: torch.Tensor,
    r_next: torch.Tensor,
    done_next: torch.Tensor,
    reward_weight: float = 1.0,
    done_weight: float = 1.0,
    done_pos_weight: float | None = None,
    mask: torch.Tensor | None = None,
    rewards: str = "regress",
) -> dict[str, torch.Tensor]:
    """Training loss: nll + reward_weight * reward + done_weight * done.

    nll: `mdn_nll`, the per-dimension mixture NLL of z_next (..., z_dim).
    reward: mean squared error of the predicted reward against r_next (...); with
        rewards="tiles", binary cross-entropy of the tile logit against r_next in {0, 1}
        (worldmodel/rewards.py: tile_events).
    done: binary cross-entropy of done_logit against done_next (...) in {0, 1}. Episode ends are
        rare (one per episode), so done_pos_weight > 1 can up-weight the positive steps.
    All terms are means over batch and time; `mask` (...) excludes padded steps.
    """
    nll = mdn_nll(out, z_next, mask)
    if rewards == "tiles":
        reward = _masked_mean(F.binary_cross_entropy_with_logits(
            out.reward, r_next.to(out.reward.dtype), reduction="none"), mask)
    else:
        reward = _masked_mean((out.reward - r_next).pow(2), mask)
    pos_weight = None
    if done_pos_weight is not None:
        pos_weight = torch.tensor(
            done_pos_weight, dtype=out.done_logit.dtype, device=out.done_logit.device
        )
    done_per_step = F.binary_cross_entropy_with_logits(
        out.done_logit, done_next.to(out.done_logit.dtype), pos_weight=pos_weight, reduction="none"
    )
    done = _masked_mean(done_per_step, mask)
    loss = nll + reward_weight * reward + done_weight * done
    return {"loss": loss, "nll": nll, "reward": reward, "done": done}


def sample(
    out: MDNOutput,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
) -> torch.Tensor:
    """Draw z (..., z_dim) from the predicted mixtures, one component per latent dimension.

    The temperature tau works as in the paper's dreams: mixture logits are divided by tau and
    each Gaussian's sigma is multiplied by sqrt(tau), so tau > 1 makes the dream more random and
    tau < 1 more predictable. With deterministic=True or tau == 0 the result is the mean of the
    most likely component of each dimension, with no randomness.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if deterministic or temperature == 0:
        chosen = out.logit_pi.argmax(dim=-1, keepdim=True)
        return out.mu.gather(-1, chosen).squeeze(-1)

    probs = F.softmax(out.logit_pi / temperature, dim=-1)
    num_gaussians = probs.shape[-1]
    chosen = torch.multinomial(probs.reshape(-1, num_gaussians), 1, generator=generator)
    chosen = chosen.view(*probs.shape[:-1], 1)
    mu = out.mu.gather(-1, chosen).squeeze(-1)
    sigma = out.log_sigma.gather(-1, chosen).squeeze(-1).exp()
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + sigma * math.sqrt(temperature) * eps
