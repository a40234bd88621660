"""FLUX's latent layout and rectified-flow objective, for training and sampling.

Layout (as diffusers' FluxPipeline: `_pack_latents`, `_unpack_latents`, `_prepare_latent_image_ids`):
latents [B, C, H, W] become sequences of 2x2 patches [B, H/2 * W/2, 4C]; each patch has a
position id (0, row, col) for the rotary embedding, each text token the id (0, 0, 0).

Objective (flow matching, as diffusers' train_dreambooth_lora_flux.py): draw sigma in (0, 1), mix
x_sigma = (1 - sigma) x0 + sigma noise, and regress the transformer's output on the velocity
noise - x0, with sigma itself as the timestep (the pipeline passes t / 1000, t = 1000 sigma).
Sigma sampling: uniform, logit-normal (sigmoid of N(mean, std), "sigmoid" in ai-toolkit, SD3's
default), each optionally shifted sigma -> s sigma / (1 + (s - 1) sigma) (schnell: s = 1).

Sampling: schnell's scheduler (FlowMatchEulerDiscreteScheduler, shift 1, no dynamic shifting) is
Euler on sigmas linspace(1, 1/n, n) then 0; `denoise` is that loop without the pipeline around
it, and tests check it against FluxPipeline.
"""

from __future__ import annotations


def pack(latents):
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(packed, height: int, width: int):
    """Packed [B, N, 4C] back to latents [B, C, height, width] (latent sizes)."""
    b, _, d = packed.shape
    x = packed.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


def image_ids(height: int, width: int, device=None, dtype=None):
    """Position ids [H/2 * W/2, 3] of the packed patches of a latent of `height` x `width`."""
    import torch

    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] += torch.arange(height // 2)[:, None]
    ids[..., 2] += torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def text_ids(length: int, device=None, dtype=None):
    import torch

    return torch.zeros(length, 3, device=device, dtype=dtype)


def sample_sigmas(n: int, generator, scheme: str, logit_mean: float = 0.0, logit_std: float = 1.0,
                  shift: float = 1.0):
    """n noise levels in (0, 1) drawn with `generator` (on the CPU: the same draws on every device)."""
    import torch

    if scheme == "logit_normal":
        sigmas = torch.sigmoid(torch.randn(n, generator=generator) * logit_std + logit_mean)
    elif scheme in ("uniform", "shift"):
        sigmas = torch.rand(n, generator=generator)
    else:
        raise ValueError(f"unknown timestep sampling {scheme!r}")
    if shift != 1.0:
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas


def predict(transformer, packed, sigmas, t5, pooled, img_ids, txt_ids):
    """The transformer's velocity prediction for packed noisy latents at noise levels `sigmas`."""
    return transformer(hidden_states=packed, timestep=sigmas, guidance=None, pooled_projections=pooled,
                       encoder_hidden_states=t5, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]


def flow_loss(transformer, latents, noise, sigmas, t5, pooled, dtype):
    """MSE between the predicted and the true velocity (noise - latents), in fp32."""
    import torch.nn.functional as F

    _, _, h, w = latents.shape
    s = sigmas.view(-1, 1, 1, 1)
    noisy = pack((1 - s) * latents + s * noise).to(dtype)
    target = pack(noise - latents).float()
    out = predict(transformer, noisy, sigmas.to(dtype), t5.to(dtype), pooled.to(dtype),
                  image_ids(h, w, latents.device, dtype), text_ids(t5.shape[1], latents.device, dtype))
    return F.mse_loss(out.float(), target)


def schnell_sigmas(steps: int):
    import torch

    return torch.cat([torch.linspace(1.0, 1.0 / steps, steps), torch.zeros(1)])


def denoise(transformer, noise, t5, pooled, steps: int, dtype):
    """Euler sampling from packed-shape `noise` [B, C, H, W] latents; returns latents [B, C, H, W]."""
    import torch

    b, c, h, w = noise.shape
    device = noise.device
    x = pack(noise.to(dtype))
    img, txt = image_ids(h, w, device, dtype), text_ids(t5.shape[1], device, dtype)
    t5, pooled = t5.to(dtype), pooled.to(dtype)
    sigmas = schnell_sigmas(steps).tolist()
    with torch.inference_mode():
        for sigma, nxt in zip(sigmas[:-1], sigmas[1:]):
            t = torch.full((b,), sigma, device=device, dtype=dtype)
            v = predict(transformer, x, t, t5, pooled, img, txt)
            x = (x.float() + (nxt - sigma) * v.float()).to(dtype)
    return unpack(x, h, w)


def decode(vae, latents):
    """Latents (scaled and shifted, as the cache stores them) to images in [0, 1], [B, 3, H, W] fp32."""
    import torch

    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.inference_mode():
        z = latents.to(vae.dtype) / vae.config.scaling_factor + shift
        images = vae.decode(z, return_dict=False)[0]
    return (images.float() / 2 + 0.5).clamp(0, 1)


def encode(vae, images, generator=None):
    """Images in [0, 1] [B, 3, H, W] to latents with the VAE's scaling and shift applied (the mean
    of the latent distribution: deterministic, as the cache needs)."""
    import torch

    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.inference_mode():
        dist = vae.encode((images * 2 - 1).to(vae.dtype)).latent_dist
        return ((dist.mode().float() - shift) * vae.config.scaling_factor).clone()


def lora_train_flops_per_sample(transformer, params, latents, t5, pooled, dtype) -> int | None:
    """Model FLOPs of one LoRA training sample: a counted batch-1 forward and backward of the flow
    loss (core.flops.train_step_flops). The frozen base's backward computes its activations'
    gradients (attention's costs more than its forward) but none of its weights'; the LoRA's own
    are counted. Recomputation under gradient checkpointing is not (MFU counts the model's FLOPs,
    not the hardware's), but checkpointing stays on while counting: without it the 12B model's
    activations (~24 GiB at 512 px) would not fit beside its weights on an A40. The recomputed
    blocks' forward is counted apart and taken off (checkpointed_forward_flops). Global generators
    are left as they were (LoRA dropout draws from them), and so are the LoRA's gradients
    (`params`: none after). `latents` [1, C, H, W], `t5` [1, L, D], `pooled` [1, D]; None where
    PyTorch has no FLOP counter."""
    import torch

    from diffscale.train.core.flops import train_step_flops

    noise, sigmas = torch.zeros_like(latents), torch.full((1,), 0.5, device=latents.device)
    with torch.random.fork_rng(devices=[latents.device] if latents.device.type == "cuda" else []):
        counted = train_step_flops(flow_loss, params, transformer, latents, noise, sigmas, t5, pooled, dtype)
        if counted is None or not transformer.is_gradient_checkpointing:
            return counted
        recomputed = checkpointed_forward_flops(transformer, latents, t5, pooled, dtype)
        return counted - recomputed if recomputed else None  # no block found by name: no MFU, not a wrong one


def checkpointed_forward_flops(transformer, latents, t5, pooled, dtype) -> int:
    """The forward FLOPs of the blocks diffusers' Flux recomputes under gradient checkpointing
    (every dual- and single-stream block), from a counted forward without gradients (which stores
    no activations)."""
    import re

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    _, _, h, w = latents.shape
    sigmas, device = torch.full((1,), 0.5, device=latents.device, dtype=dtype), latents.device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        predict(transformer, pack(latents).to(dtype), sigmas, t5.to(dtype), pooled.to(dtype),
                image_ids(h, w, device, dtype), text_ids(t5.shape[1], device, dtype))
    block = re.compile(rf"{type(transformer).__name__}\.(transformer_blocks|single_transformer_blocks)\.\d+")
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if block.fullmatch(name))
