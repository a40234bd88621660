"""Images from cached conditioning: seeded noise, Euler denoising (flow.denoise), VAE decoding.

Noise comes from a CPU generator seeded per image, so the same seed gives the same starting
noise on every device and at every checkpoint: samples of one run line up across checkpoints,
and runs on different hardware start from the same noise.
"""

from __future__ import annotations

from contextlib import nullcontext

from diffscale.flux.flow import decode, denoise

VAE_FACTOR = 8


def seeded_noise(seed: int, channels: int, width: int, height: int, batch: int = 1):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height // VAE_FACTOR, width // VAE_FACTOR, generator=generator)


def generate(transformer, vae, t5, pooled, size: tuple[int, int], steps: int, seed: int, dtype, sdpa=None):
    """`sdpa`: a function returning the attention-kernel context, or None. One image [3, H, W] in [0, 1] (fp32, CPU) for conditioning t5 [L, D] / pooled [D] at size (w, h)."""
    device = next(transformer.parameters()).device
    channels = transformer.config.in_channels // 4
    noise = seeded_noise(seed, channels, *size).to(device)
    with sdpa() if sdpa else nullcontext():
        latents = denoise(transformer, noise, t5[None].to(device), pooled[None].to(device), steps, dtype)
    return decode(vae, latents)[0].cpu()
