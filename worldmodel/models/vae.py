"""The vision model V: a convolutional VAE that compresses a 64x64 RGB frame into a latent z.

Ha & Schmidhuber (2018), section 2.1 ("VAE (V) Model") and appendix A.1 (architecture figure).
The encoder is four stride-2 4x4 convolutions (32, 64, 128, 256 channels) down to 2x2x256,
followed by two linear heads for the mean and log-variance of q(z | x). The decoder maps z to a
1024-vector, treats it as a 1x1 image with 1024 channels and grows it back to 64x64x3 with four
stride-2 transposed convolutions (kernels 5, 5, 6, 6). At z_dim=32 this is 4,348,547 parameters.

Images are float NCHW in [0, 1]; `frames_to_tensor` converts the uint8 NHWC frames the
environment and the datasets hold.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class VAE(nn.Module):
    """Convolutional VAE for 64x64x3 images in [0, 1]."""

    # The section of the run configuration that holds this model's settings.
    config_section = "vae"

    def __init__(self, z_dim: int = 32) -> None:
        super().__init__()
        self.z_dim = z_dim

        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=4, stride=2),  # 64 -> 31
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),  # 31 -> 14
            nn.ReLU(),
            nn.Conv2d(64, 128, kernel_size=4, stride=2),  # 14 -> 6
            nn.ReLU(),
            nn.Conv2d(128, 256, kernel_size=4, stride=2),  # 6 -> 2
            nn.ReLU(),
            nn.Flatten(),
        )
        encoded_size = 256 * 2 * 2
        self.to_mu = nn.Linear(encoded_size, z_dim)
        self.to_logvar = nn.Linear(encoded_size, z_dim)

        self.from_z = nn.Linear(z_dim, encoded_size)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(encoded_size, 128, kernel_size=5, stride=2),  # 1 -> 5
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, kernel_size=5, stride=2),  # 5 -> 13
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, kernel_size=6, stride=2),  # 13 -> 30
            nn.ReLU(),
            nn.ConvTranspose2d(32, 3, kernel_size=6, stride=2),  # 30 -> 64
            nn.Sigmoid(),
        )

    def config(self) -> dict[str, int]:
        """Constructor arguments, so a checkpoint can rebuild the model with `VAE(**config)`."""
        return {"z_dim": self.z_dim}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x), each (B, z_dim), for images x (B, 3, 64, 64)."""
        features = self.encoder(x)
        return self.to_mu(features), self.to_logvar(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed images (B, 3, 64, 64) in [0, 1] for latents z (B, z_dim)."""
        features = self.from_z(z)
        return self.decoder(features.view(-1, features.shape[-1], 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample z by reparameterisation, decode: returns (x_hat, mu, logvar)."""
        mu, logvar = self.encode(x)
        z = sample_latent(mu, logvar)
        return self.decode(z), mu, logvar


def sample_latent(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw z ~ N(mu, exp(logvar)) as mu + sigma * eps, so gradients flow into mu and logvar."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def vae_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    kl_tolerance: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Reconstruction + KL loss of the original implementation, with its KL tolerance.

    rec: squared error summed over the pixels of an image, averaged over the batch.
    kl: KL(q(z|x) || N(0, I)) summed over latent dimensions, averaged over the batch. This is
        the plain value, for logging.
    kl_term: the KL that enters the loss. Each image's KL is floored at kl_tolerance * z_dim
        ("free bits", 0.5 per dimension in the original), so an image whose posterior is already
        that close to the prior gets no KL gradient and the encoder keeps that much information.
    loss: rec + kl_term.
    """
    rec = (x - x_hat).pow(2).flatten(start_dim=1).sum(dim=1).mean()
    kl_per_image = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
    kl_floor = kl_tolerance * mu.shape[-1]
    kl_term = kl_per_image.clamp(min=kl_floor).mean()
    return {"loss": rec + kl_term, "rec": rec, "kl": kl_per_image.mean(), "kl_term": kl_term}


def frames_to_tensor(
    frames: np.ndarray | torch.Tensor,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 frames (N, H, W, C) -> float32 images (N, C, H, W) in [0, 1] on `device`.

    The uint8 batch is moved to the device first (a quarter of the bytes of float32) and then
    converted in one pass. With channels_last=True the result keeps the NHWC layout in memory
    (torch's channels_last format), which is exactly the layout of the input, so no transpose is
    needed at all and CPU convolutions run faster on it; pair it with
    `model.to(memory_format=torch.channels_last)`.
    """
    if frames.ndim != 4:
        raise ValueError(f"expected frames of shape (N, H, W, C), got shape {tuple(frames.shape)}")
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    if device is not None:
        frames = frames.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = frames.permute(0, 3, 1, 2).to(torch.float32, memory_format=memory_format)
    return images.div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images (N, C, H, W) in [0, 1] -> uint8 (N, H, W, C)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
