"""The U-Net's training FLOPs per sample (for MFU; the counting itself is diffscale.train.core.flops)."""

from __future__ import annotations

from diffscale.train.core.flops import forward_flops


def unet_train_flops_per_sample(unet, latent_shape: tuple, text_shape: tuple, device) -> int | None:
    """Training FLOPs per sample of a conditional U-Net: 3 x a counted batch-1 forward."""
    import torch

    latents = torch.zeros(1, *latent_shape, device=device)
    hidden = torch.zeros(1, *text_shape, device=device)
    timestep = torch.zeros(1, dtype=torch.long, device=device)
    forward = forward_flops(unet, latents, timestep, encoder_hidden_states=hidden)
    return None if forward is None else 3 * forward
