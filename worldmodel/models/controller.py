"""The controller C: one linear layer from [z_t, h_t] to CarRacing's three actions.

Ha & Schmidhuber (2018), section 2.3 ("Controller (C) Model"): a_t = W_c [z_t h_t] + b_c,
deliberately tiny (867 parameters at z_dim=32, hidden_size=256) so that it can be trained with
CMA-ES (section 3.2). CMA-ES works on flat parameter vectors, hence `get_flat` / `set_flat`,
and evaluates a whole population at once, hence `act_batch`.

Squashing, as in the original code, turns the linear outputs (a0, a1, a2) into valid actions:
    steer = tanh(a0)               in [-1, 1]
    gas   = (tanh(a1) + 1) / 2     in [0, 1]
    brake = clip(tanh(a2), 0, 1)   in [0, 1]  (so a negative a2 means no braking at all)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class Controller(nn.Module):
    """Linear policy on the concatenation [z, h], with CarRacing's action squashing."""

    # The section of the run configuration that holds this model's settings.
    config_section = "controller"
    # Constructor arguments set in another config section (see build_from_checkpoint).
    config_keys = {"z_dim": "vae.z_dim", "hidden_size": "mdrnn.hidden_size"}
    # Fixed by the environment: (steer, gas, brake).
    action_dim = 3

    def __init__(self, z_dim: int = 32, hidden_size: int = 256) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.hidden_size = hidden_size
        self.linear = nn.Linear(z_dim + hidden_size, self.action_dim)

    def config(self) -> dict[str, int]:
        """Constructor arguments, so a checkpoint can rebuild it with `Controller(**config)`."""
        return {"z_dim": self.z_dim, "hidden_size": self.hidden_size}

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Actions (B, 3) for latents z (B, z_dim) and LSTM hidden states h (B, hidden_size)."""
        return squash_actions(self.linear(torch.cat([z, h], dim=-1)))

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def get_flat(self) -> np.ndarray:
        """All parameters as one float64 vector: the weight matrix row by row, then the bias."""
        flat = nn.utils.parameters_to_vector(self.parameters())
        return flat.detach().cpu().numpy().astype(np.float64)

    def set_flat(self, vector: np.ndarray | Sequence[float] | torch.Tensor) -> None:
        """Load parameters from a flat vector laid out as in `get_flat`."""
        if isinstance(vector, torch.Tensor):
            values = vector.detach().flatten()
        else:
            values = torch.as_tensor(np.asarray(vector, dtype=np.float64).ravel())
        if values.numel() != self.num_params:
            raise ValueError(
                f"controller needs {self.num_params} parameters "
                f"(z_dim={self.z_dim}, hidden_size={self.hidden_size}), got {values.numel()}"
            )
        with torch.no_grad():
            weight = self.linear.weight
            nn.utils.vector_to_parameters(values.to(weight.device, weight.dtype), self.parameters())


def squash_actions(raw: torch.Tensor) -> torch.Tensor:
    """Map linear outputs (..., 3) to (steer, gas, brake) within CarRacing's action bounds."""
    squashed = torch.tanh(raw)
    steer = squashed[..., 0]
    gas = (squashed[..., 1] + 1) / 2
    brake = squashed[..., 2].clamp(0, 1)
    return torch.stack([steer, gas, brake], dim=-1)


def act_batch(params: torch.Tensor, zh: torch.Tensor) -> torch.Tensor:
    """Actions of P different controllers at once, e.g. a CMA-ES population.

    params: (P, n_params), each row a flat vector as from `Controller.get_flat`.
    zh: (P, B, z_dim + hidden_size), the inputs [z, h] each controller sees.
    Returns (P, B, 3), equal to running each controller on its own inputs.
    """
    if params.dim() != 2 or zh.dim() != 3 or params.shape[0] != zh.shape[0]:
        raise ValueError(
            f"expected params (P, n_params) and zh (P, B, inputs), "
            f"got {tuple(params.shape)} and {tuple(zh.shape)}"
        )
    num_inputs = zh.shape[-1]
    action_dim = Controller.action_dim
    expected = action_dim * num_inputs + action_dim
    if params.shape[1] != expected:
        raise ValueError(
            f"controllers on {num_inputs} inputs need {expected} parameters, got {params.shape[1]}"
        )
    params = params.to(zh.dtype)
    weight = params[:, : action_dim * num_inputs].view(-1, action_dim, num_inputs)
    bias = params[:, action_dim * num_inputs :]
    raw = torch.baddbmm(bias.unsqueeze(1), zh, weight.transpose(1, 2))
    return squash_actions(raw)
