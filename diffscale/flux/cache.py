"""Encode a prepared dataset once: VAE latents and text conditioning, as safetensors.

Every training run (each hardware, GPU count and step count) reads the same cache, so a run holds
only the transformer (and, for sampling, the VAE decoder) on its device, and the runs train on
identical inputs. Files in the cache folder:
  latents.safetensors   one tensor [C, h, w] per image, keyed by the image's name; the VAE's
                        scaling_factor and shift_factor applied (what the transformer sees)
  text.safetensors      `<name>.t5` [L, D] and `<name>.pooled` [D] per image: its own caption,
                        under its own name, so a latent can never be paired with another caption
  prompts.safetensors   `prompt_<i>.t5` / `.pooled` for the sample prompts, and `empty.t5` /
                        `.pooled`: the empty caption, what a dropped caption is replaced with
                        (flux.caption_dropout; as ai-toolkit drops a caption to "")
  cache.json            names, captions, buckets, sample prompts, models, shapes, timing
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from diffscale import atomic, models, provenance
from diffscale.errors import DataError
from diffscale.flux import dataset as ds
from diffscale.flux.flow import encode
from diffscale.io import read_image
from diffscale.flux.settings import CACHE_LAYOUT, DTYPES, check_cache_config
from diffscale.flux.text import FluxText

LATENTS, TEXT, PROMPTS, MANIFEST = "latents.safetensors", "text.safetensors", "prompts.safetensors", "cache.json"
EMPTY = "empty"  # the empty caption's key in prompts.safetensors


def load_image(path: Path):
    """An image as a [1, 3, H, W] tensor in [0, 1]; a DataError naming a missing or damaged file."""
    import numpy as np
    import torch

    array = np.asarray(read_image(path), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def build_cache(prepared: str | Path, out: str | Path, cache_cfg: dict, device: str = "cpu",
                dtype: str = "fp32") -> dict:
    """Encode every image and caption of `prepared` and the sample prompts into `out`."""
    import torch
    from safetensors.torch import save_file

    check_cache_config(cache_cfg)
    items = ds.load(prepared)
    atomic.check_replaceable(out, MANIFEST)  # before the encoders load: a wrong --out is one line, not lost work
    torch_dtype = getattr(torch, DTYPES[dtype])
    timings: dict[str, float] = {}
    start = time.perf_counter()
    torch_dtype = None if dtype == "fp32" else torch_dtype  # to(fp32) would only warn
    vae = models.build("flux_vae", cache_cfg["models"]["flux_vae"], device=device, dtype=torch_dtype)
    text = FluxText(cache_cfg["models"]["flux_clip"], cache_cfg["models"]["flux_t5"],
                    cache_cfg["max_sequence_length"], device=device, dtype=torch_dtype)
    timings["load_s"] = time.perf_counter() - start

    start = time.perf_counter()
    latents = {item.name: encode(vae, load_image(ds.image_path(prepared, item)).to(device))[0].cpu()
               for item in items}
    timings["latents_s"] = time.perf_counter() - start
    start = time.perf_counter()
    captions, prompts = {}, {}
    for item in items:
        hidden, pooled = text([item.caption])
        captions[f"{item.name}.t5"], captions[f"{item.name}.pooled"] = hidden[0].cpu(), pooled[0].cpu()
    for i, prompt in enumerate(cache_cfg["sample_prompts"]):
        hidden, pooled = text([prompt])
        prompts[f"prompt_{i}.t5"], prompts[f"prompt_{i}.pooled"] = hidden[0].cpu(), pooled[0].cpu()
    hidden, pooled = text([""])
    prompts[f"{EMPTY}.t5"], prompts[f"{EMPTY}.pooled"] = hidden[0].cpu(), pooled[0].cpu()
    timings["text_s"] = time.perf_counter() - start

    manifest = {
        "dataset": str(prepared),
        "items": [{"name": it.name, "caption": it.caption, "bucket": list(it.bucket)} for it in items],
        "sample_prompts": list(cache_cfg["sample_prompts"]),
        "layout": CACHE_LAYOUT,
        "latent_channels": int(next(iter(latents.values())).shape[0]),
        "scaling_factor": vae.config.scaling_factor,
        "shift_factor": getattr(vae.config, "shift_factor", None),
        "text_shape": list(next(iter(captions.values())).shape),
        "pooled_dim": int(captions[f"{items[0].name}.pooled"].shape[-1]),
        "dtype": dtype,
        "device": device,
    }
    with atomic.atomic_dir(out, MANIFEST) as tmp:
        for name, tensors in ((LATENTS, latents), (TEXT, captions), (PROMPTS, prompts)):
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / name))
        provenance.write_run_json(tmp / "run.json", config_slice=cache_cfg, timings=timings,
                                  models=[models.parse_spec("flux_vae", cache_cfg["models"]["flux_vae"]).describe(),
                                          *text.describe()])
        (tmp / MANIFEST).write_text(json.dumps({**manifest, "timings": timings}, indent=2, sort_keys=True) + "\n")
    return {**manifest, "timings": timings}


@dataclass
class Cache:
    """A cache folder read back: tensors on the CPU, keyed by item name."""

    root: Path
    manifest: dict
    latents: dict
    text: dict
    prompts: dict

    @property
    def names(self) -> list[str]:
        return [item["name"] for item in self.manifest["items"]]

    def item(self, name: str):
        """(latent [C, h, w], T5 [L, D], pooled [D]) of one image: its own caption's embeddings."""
        return self.latents[name], self.text[f"{name}.t5"], self.text[f"{name}.pooled"]

    def prompt(self, i: int):
        return self.prompts[f"prompt_{i}.t5"], self.prompts[f"prompt_{i}.pooled"]

    def empty_caption(self):
        """(T5 [L, D], pooled [D]) of the empty caption: a dropped caption's conditioning."""
        if f"{EMPTY}.t5" not in self.prompts:
            raise DataError(f"{self.root}: this FLUX cache has no empty-caption embeddings (made before "
                            f"layout {CACHE_LAYOUT}), which flux.caption_dropout needs; run the flux_cache stage again")
        return self.prompts[f"{EMPTY}.t5"], self.prompts[f"{EMPTY}.pooled"]

    def caption(self, name: str) -> str:
        return next(item["caption"] for item in self.manifest["items"] if item["name"] == name)

    @property
    def buckets(self) -> dict[tuple[int, int], list[int]]:
        """Image indices per bucket (width, height)."""
        found: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(self.manifest["items"]):
            found.setdefault(tuple(item["bucket"]), []).append(i)
        return found


def load_cache(root: str | Path) -> Cache:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("items"), list):
            raise ValueError(f"{MANIFEST} has no list of items")
        tensors = [load_file(str(root / name)) for name in (LATENTS, TEXT, PROMPTS)]
    except (OSError, ValueError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{root}: not a complete FLUX cache ({first}); run the flux_cache stage first") from None
    return Cache(root, manifest, *tensors)
