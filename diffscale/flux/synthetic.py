"""A synthetic prepared dataset and cache in the real formats (random tensors): what the benchmark
trains on, so it needs no images, text encoders or VAE."""

from __future__ import annotations

import json
from pathlib import Path

from diffscale import atomic
from diffscale.flux import cache as cache_io
from diffscale.flux import dataset as ds


def write_synthetic(root: str | Path, images: int, resolution: int, latent_channels: int, text_length: int,
                    t5_dim: int, pooled_dim: int, prompts: int = 0, seed: int = 0) -> tuple[Path, Path]:
    """(dataset folder, cache folder) of `images` square images at `resolution` px. The dataset
    lists no items, so a run on it samples only the `prompts` (none by default)."""
    import torch
    from safetensors.torch import save_file

    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    side = resolution // 8
    names = [f"image_{i:03d}" for i in range(images)]
    dataset, cache = root / "dataset", root / "cache"
    atomic.write_json(dataset / ds.DATASET_FILE, {"items": []})
    cache.mkdir(parents=True, exist_ok=True)
    save_file({n: torch.randn(latent_channels, side, side, generator=g) for n in names}, str(cache / cache_io.LATENTS))
    text = {}
    for n in names:
        text[f"{n}.t5"] = torch.randn(text_length, t5_dim, generator=g)
        text[f"{n}.pooled"] = torch.randn(pooled_dim, generator=g)
    save_file(text, str(cache / cache_io.TEXT))
    prompt_tensors = {}
    for i in range(prompts):
        prompt_tensors[f"prompt_{i}.t5"] = torch.randn(text_length, t5_dim, generator=g)
        prompt_tensors[f"prompt_{i}.pooled"] = torch.randn(pooled_dim, generator=g)
    save_file(prompt_tensors, str(cache / cache_io.PROMPTS))
    manifest = {"items": [{"name": n, "caption": f"synthetic {i}", "bucket": [resolution, resolution]}
                          for i, n in enumerate(names)],
                "sample_prompts": [f"prompt {i}" for i in range(prompts)], "latent_channels": latent_channels,
                "synthetic": True}
    (cache / cache_io.MANIFEST).write_text(json.dumps(manifest, indent=2))
    return dataset, cache
