"""Raw model throughput: forward passes of each factory model on synthetic inputs.

This is the ceiling each pipeline stage is compared with (its `ratio` column): a stage that
decodes, tokenizes and writes around the model should come close to the bare model's rate.
"""

from __future__ import annotations

import argparse
from typing import Any

from diffscale import models
from diffscale.timing import measure

DEFAULT_ROLES = ["vae", "text_encoder", "unet", "ddpm_unet", "flux_transformer"]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def example_inputs(role: str, model, batch: int, resolution: int) -> tuple[tuple, dict]:
    """(args, kwargs) for one forward pass of `model` at `batch` items."""
    import torch

    cfg = model.config
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if role in ("vae", "flux_vae"):
        return (torch.randn(batch, 3, resolution, resolution, device=dev, dtype=dtype),), {}
    if role in ("text_encoder", "flux_clip", "flux_t5"):
        length = 77 if role != "flux_t5" else 256
        return (torch.randint(0, cfg.vocab_size, (batch, length), device=dev),), {}
    if role == "unet":
        side = resolution // 8
        return (
            torch.randn(batch, cfg.in_channels, side, side, device=dev, dtype=dtype),
            torch.randint(0, 1000, (batch,), device=dev),
        ), {"encoder_hidden_states": torch.randn(batch, 77, cfg.cross_attention_dim, device=dev, dtype=dtype)}
    if role == "ddpm_unet":
        side = cfg.sample_size
        return (torch.randn(batch, cfg.in_channels, side, side, device=dev, dtype=dtype),
                torch.randint(0, 1000, (batch,), device=dev)), {}
    if role == "flux_transformer":
        side = resolution // 16  # VAE /8, then 2x2 packing
        tokens, text = side * side, 256
        img_ids = torch.zeros(tokens, 3, device=dev)
        img_ids[:, 1] = torch.arange(side, device=dev).repeat_interleave(side)
        img_ids[:, 2] = torch.arange(side, device=dev).repeat(side)
        return (), dict(
            hidden_states=torch.randn(batch, tokens, cfg.in_channels, device=dev, dtype=dtype),
            encoder_hidden_states=torch.randn(batch, text, cfg.joint_attention_dim, device=dev, dtype=dtype),
            pooled_projections=torch.randn(batch, cfg.pooled_projection_dim, device=dev, dtype=dtype),
            timestep=torch.full((batch,), 0.5, device=dev, dtype=dtype),
            img_ids=img_ids,
            txt_ids=torch.zeros(text, 3, device=dev),
        )
    raise ValueError(f"no example inputs for role {role!r}")


def forward_fn(role: str, model):
    if role in ("vae", "flux_vae"):
        return lambda *a, **k: model.encode(*a, **k).latent_dist.mean
    return model


def raw_throughput(role: str, spec: dict, batch: int, resolution: int = 64, device: str = "cpu",
                   dtype: str = "fp32", repeats: int = 3) -> dict[str, Any]:
    """Items/s of the bare model forward (inference mode) for one spec."""
    import torch

    model = models.build(role, spec, device=device, dtype=getattr(torch, DTYPES[dtype]))
    args, kwargs = example_inputs(role, model, batch, resolution)
    fn = forward_fn(role, model)
    with torch.inference_mode():
        timing = measure(lambda: fn(*args, **kwargs), repeats=repeats, warmup=1, device=device)
    return {
        "role": role,
        "model": models.parse_spec(role, spec).label,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "resolution": resolution,
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        **timing,
        "items_per_s": batch / timing["median_s"],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--roles", nargs="+", default=DEFAULT_ROLES, choices=sorted(models.ROLES),
                        help=f"the models to time (default {' '.join(DEFAULT_ROLES)})")
    parser.add_argument("--preset", default="tiny", help="random preset for every role (default tiny)")
    parser.add_argument("--batch", type=int, default=4, help="items per forward pass (default 4)")
    parser.add_argument("--resolution", type=int, default=64, help="image side, px, a multiple of 16 (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="compute dtype (default fp32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes (median; default 3)")


def run(args: argparse.Namespace) -> list[dict]:
    return [
        raw_throughput(role, {"random": args.preset}, args.batch, args.resolution, args.device, args.dtype,
                       args.repeats)
        for role in args.roles
    ]
