"""Inference timing: time to first image split into phases, and throughput over batch sizes.

For each dtype, the models are loaded once and measured three ways, in this order:
  base        the transformer as loaded;
  lora        with the trained LoRA loaded as a peft adapter (`load_lora_adapter`): extra matmuls;
  lora_fused  the same LoRA fused into the base weights (`fuse_lora`): the base model's cost again.
Phases: `load_s` (building the transformer, VAE and both text encoders on the device, plus loading
and fusing the LoRA where it applies), `text_s` (T5 + CLIP for the batch's prompts), `denoise_s`
(`inference_steps` transformer calls, Euler, guidance off: schnell), `decode_s` (VAE). Each is the
median of `repeats` device-synchronised runs after one warm-up. `first_image_s` = load_s + the
warm-up (first) call of each phase: what a user waits for the first image, kernel selection and
autotuning included (cold for the first batch of the base weights; the rows after it reuse the
process's warm CUDA context). `images_per_s` = batch / (text_s + denoise_s + decode_s). Batch
sizes grow until they run out of memory: that row says `oom` and larger ones are not tried. Peak
memory: the device's (CUDA), or the process's peak RSS on CPUs.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path

from diffscale import atomic, hardware, models, provenance
from diffscale.flux import lora as lora_io
from diffscale.flux.flow import decode, denoise
from diffscale.timing import synchronize
from diffscale.flux.sample import seeded_noise
from diffscale.flux.settings import DTYPES, check_infer_config
from diffscale.flux.text import FluxText
from diffscale.io import csv_text
from diffscale.train.core import compat

COLUMNS = ["hw", "model", "batch_size", "dtype", "resolution", "load_s", "text_s", "denoise_s", "decode_s",
           "first_image_s", "images_per_s", "peak_mem_mb", "repeats", "status", "device", "random_weights"]


def median_time(fn, repeats: int, device: str) -> tuple[float, object, float]:
    """Median seconds of `repeats` synchronised calls after one warm-up, the last result
    (diffscale.timing.measure, keeping what the call returned: the next phase's input), and the
    warm-up call's own seconds (the first image's share of this phase)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result, first


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_models(settings: dict, device: str, dtype):
    """(transformer, vae, text) on the device; seconds taken."""
    start = time.perf_counter()
    build_dtype = None if dtype is not None and str(dtype) == "torch.float32" else dtype
    transformer = models.build("flux_transformer", settings["models"]["flux_transformer"], device=device,
                               dtype=build_dtype, on_device=True)
    vae = models.build("flux_vae", settings["models"]["flux_vae"], device=device, dtype=build_dtype)
    text = FluxText(settings["models"]["flux_clip"], settings["models"]["flux_t5"],
                    settings["max_sequence_length"], device=device, dtype=build_dtype)
    synchronize(device)
    return transformer, vae, text, time.perf_counter() - start


def measure_batches(transformer, vae, text, settings: dict, device: str, dtype, dtype_name: str, model: str,
                    load_s: float, random_weights: bool) -> list[dict]:
    """One row per batch size, stopping at the first that runs out of memory."""
    import torch

    rows = []
    res, steps, repeats = settings["resolution"], settings["inference_steps"], settings["repeats"]
    channels = transformer.config.in_channels // 4
    for batch in settings["batch_sizes"]:
        row = {"hw": settings["hw"], "model": model, "batch_size": batch, "dtype": dtype_name, "resolution": res,
               "repeats": repeats, "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
               "random_weights": random_weights}
        _peak_reset(device)
        try:
            prompts = [settings["prompt"]] * batch
            text_s, (t5, pooled), text_first = median_time(lambda: text(prompts), repeats, device)
            noise = seeded_noise(settings["seed"], channels, res, res, batch).to(device)
            denoise_s, latents, denoise_first = median_time(
                lambda: denoise(transformer, noise, t5.to(dtype), pooled.to(dtype), steps, dtype), repeats, device)
            decode_s, _, decode_first = median_time(lambda: decode(vae, latents), repeats, device)
        except compat.oom_errors():
            rows.append({**row, "status": "oom"})
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            break
        busy = text_s + denoise_s + decode_s
        rows.append({**row, "load_s": load_s, "text_s": text_s, "denoise_s": denoise_s, "decode_s": decode_s,
                     "first_image_s": load_s + text_first + denoise_first + decode_first,
                     "images_per_s": batch / busy, "peak_mem_mb": _peak_mb(device), "status": "ok"})
        print(f"{model:>10} {dtype_name} batch {batch:>3}: text {text_s:.3f}s denoise {denoise_s:.3f}s "
              f"decode {decode_s:.3f}s, {batch / busy:.2f} images/s", flush=True)
    return rows


def run_infer(settings: dict, lora_path: str | Path, out_dir: str | Path) -> list[dict]:
    """All rows for one hardware key; writes infer.csv and run.json into out_dir."""
    import torch

    hw = check_infer_config(settings)["hw"]
    atomic.check_folder_path(out_dir)  # before minutes of timing, not after them
    lora_io.check_file(lora_path, "--lora")  # before minutes of timing the base model
    placement = hardware.resolve(settings, hw, 1)
    device = placement.device_for(0)
    dtypes = settings["dtypes"] if placement.device == "cuda" else [settings["cpu_dtype"]]
    random_weights = models.parse_spec("flux_transformer", settings["models"]["flux_transformer"]).pretrained is None
    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, DTYPES[dtype_name])
        try:
            transformer, vae, text, load_s = load_models(settings, device, dtype)
        except compat.oom_errors():  # e.g. fp32 FLUX + T5-XXL on a 48 GB card: say so, go on
            rows.append({"hw": hw, "model": "base", "batch_size": settings["batch_sizes"][0], "dtype": dtype_name,
                         "resolution": settings["resolution"], "status": "oom (loading)",
                         "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
                         "random_weights": random_weights})
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            continue
        rows += measure_batches(transformer, vae, text, settings, device, dtype, dtype_name, "base", load_s,
                                random_weights)
        start = time.perf_counter()
        lora_io.load_adapter(transformer, lora_path, "lora", "--lora")
        if dtype != torch.float32:
            transformer.to(dtype)  # the LoRA file is fp32; run it in the model's dtype
        synchronize(device)
        lora_s = time.perf_counter() - start
        rows += measure_batches(transformer, vae, text, settings, device, dtype, dtype_name, "lora",
                                load_s + lora_s, random_weights)
        start = time.perf_counter()
        transformer.fuse_lora(lora_scale=1.0)
        synchronize(device)
        fuse_s = time.perf_counter() - start
        rows += measure_batches(transformer, vae, text, settings, device, dtype, dtype_name, "lora_fused",
                                load_s + lora_s + fuse_s, random_weights)
        del transformer, vae, text
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    out = Path(out_dir)
    atomic.write_text(out / "infer.csv", csv_text(rows, COLUMNS))
    provenance.write_run_json(out / "run.json", config_slice=settings, results=rows, data={"lora": str(lora_path)},
                              models=[models.parse_spec(r, settings["models"][r]).describe()
                                      for r in ("flux_transformer", "flux_vae", "flux_clip", "flux_t5")])
    return rows
