"""The diffusion process: DDPM noise schedule, the noise each training step draws, and sampling.

Training: epsilon prediction under Stable Diffusion's DDPM schedule (1000 steps, scaled-linear
betas 0.00085..0.012), which is what latent diffusion models of SD's layout are trained with. The
schedule's config is stored in every checkpoint, and the samplers are built from it.

Randomness of a training step (timesteps, the latent sample, the noise, which captions are
dropped) is drawn for the whole global batch from a generator seeded by (seed, step) and then
sliced per process and micro-step, so it is the same for 1 or N processes and for a resumed run.
"""

from __future__ import annotations

import numpy as np

NOISE_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    prediction_type="epsilon",
    clip_sample=False,
)
SAMPLERS = ("ddpm", "ddim", "euler")


def noise_scheduler(config: dict | None = None):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(config or NOISE_SCHEDULE)


def sampler(name: str, config: dict | None = None):
    """A sampling scheduler with the training schedule (`config`, a checkpoint's noise_schedule)."""
    from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
    if name not in classes:
        raise ValueError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")
    # "trailing" spacing reaches the last training timestep at any step count (few-step sampling).
    return classes[name].from_config(config or NOISE_SCHEDULE, timestep_spacing="trailing")


def step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> 1)


def step_noise(seed: int, step: int, global_batch: int, latent_shape: tuple, num_timesteps: int,
               caption_dropout: float, device) -> dict:
    """The random draws of one optimizer step for the whole global batch."""
    import torch

    gen = torch.Generator(device=device).manual_seed(step_seed(seed, step))
    shape = (global_batch, *latent_shape)
    return {
        "timesteps": torch.randint(0, num_timesteps, (global_batch,), generator=gen, device=device),
        "latent_eps": torch.randn(shape, generator=gen, device=device),
        "noise": torch.randn(shape, generator=gen, device=device),
        "drop": torch.rand(global_batch, generator=gen, device=device) < caption_dropout,
    }


def predict_noise(unet, latents, timestep, cond, uncond, guidance_scale: float, cond_mask=None, uncond_mask=None):
    """Classifier-free guidance: eps_u + g (eps_c - eps_u). At g = 1 that is the conditional
    prediction, so only the conditional pass runs. With masks (a model trained on ragged text)
    the U-Net attends only to the prompts' real tokens, as in training."""
    import torch

    if guidance_scale == 1.0:
        return unet(latents, timestep, encoder_hidden_states=cond, encoder_attention_mask=cond_mask).sample
    mask = None if cond_mask is None else torch.cat([uncond_mask, cond_mask])
    both = unet(torch.cat([latents, latents]), timestep, encoder_hidden_states=torch.cat([uncond, cond]),
                encoder_attention_mask=mask).sample
    eps_uncond, eps_cond = both.chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)
