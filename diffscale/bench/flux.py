"""FLUX LoRA: the training loop and the sampler against bare steps of the same model.

Train (one row per gradient-checkpointing setting): `loop_steps_per_s` is the steady rate of the
real loop (diffscale.flux.loop.train: cache reads, batch draws, DDP-ready loss, metrics rows) on a
synthetic cache, between checkpoints; `bare_steps_per_s` is the LoRA forward + backward + AdamW
step of the same model, batch and resolution on resident tensors under the same SDPA kernels.
`ratio` = loop / bare (target >= 0.9).
Infer (base, then with a LoRA of the same rank): `loop_denoise_s` is diffscale.flux.flow.denoise
(the sampler the loop and the inference stage use) for `--inference-steps` steps; `bare_denoise_s`
is that many transformer calls on resident tensors. `ratio` = bare / loop (target >= 0.9).
Times are device-synchronised medians after warm-up. The transformer is built on the device with
random weights (`--preset`, seeded), in `--dtype`: figures are timings, not quality.

The GPU check (one H200/H100, about 2-3 minutes with the 11.9B transformer):
  python -m diffscale.bench --out-dir results/benchmarks flux --device cuda --preset flux.1-schnell \\
      --resolution 512 --rank 16 --batch 1 --dtype bf16
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from diffscale import models
from diffscale.config import schema
from diffscale.timing import measure, synchronize

LORA_TARGETS = schema()["properties"]["flux"]["properties"]["lora_targets"]["default"]  # the study's default
T5_WIDTH = {"tiny": 32, "flux.1-schnell": 4096}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--preset", default="tiny", choices=sorted(models.ROLES["flux_transformer"].presets),
                        help="transformer preset, random weights (default tiny)")
    parser.add_argument("--resolution", type=int, default=64, help="image side, px, a multiple of 16 (default 64)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--batch", type=int, default=1, help="images per step (default 1)")
    parser.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"],
                        help="compute dtype (default bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--text-length", type=int, default=256, help="T5 tokens (schnell 256)")
    parser.add_argument("--steps", type=int, default=20, help="loop steps per setting (default 20)")
    parser.add_argument("--log-every", type=int, default=5, help="loop steps per metrics row (default 5)")
    parser.add_argument("--inference-steps", type=int, default=4, help="sampler steps timed (default 4: schnell's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of bare steps and sampling (default 5)")
    parser.add_argument("--checkpointing", default="off,on", help="gradient checkpointing settings (default off,on)")
    parser.add_argument("--sdpa", default="flash,efficient", help="SDPA kernels for training (default flash,efficient)")
    parser.add_argument("--skip-infer", action="store_true", help="time the training loop only, not the sampler")


def _dtype_name(args) -> str:
    return args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")


def _flux_settings(args, checkpointing: bool) -> dict:
    return {"lora_rank": args.rank, "lora_alpha": args.rank, "lora_dropout": 0.0, "lora_targets": LORA_TARGETS,
            "caption_dropout": 0.0, "grad_clip": 1.0, "lr": 1e-4, "weight_decay": 1e-4, "optimizer": "adamw", "batch_size": args.batch,
            "grad_checkpointing": checkpointing, "timestep_sampling": "logit_normal", "logit_mean": 0.0,
            "logit_std": 1.0, "timestep_shift": 1.0, "dtype": _dtype_name(args), "cpu_dtype": _dtype_name(args),
            "sdpa_kernels": args.sdpa.split(","), "training_adapter": None, "inference_steps": args.inference_steps,
            "log_every": args.log_every, "checkpoint_every": args.steps, "quality_images": None}


def run_config(args, checkpointing: bool) -> dict:
    return {"run": {"hw": "bench", "gpus": 1, "steps": args.steps}, "seed": 0,
            "hardware": {"bench": {"partition": "bench", "device": "cuda" if args.device.startswith("cuda") else "cpu"}},
            "models": {"flux_transformer": {"random": args.preset}, "flux_vae": {"random": args.preset}},
            "flux": _flux_settings(args, checkpointing)}


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def median_seconds(fn, repeats: int, warmup: int, device: str) -> float:
    return measure(fn, repeats=repeats, warmup=warmup, device=device)["median_s"]


def build_transformer(args, device: str, dtype):
    import torch

    start = time.perf_counter()
    model = models.build("flux_transformer", {"random": args.preset}, device=device,
                         dtype=None if dtype == torch.float32 else dtype, on_device=True)
    synchronize(device)
    return model, time.perf_counter() - start


def _inputs(args, transformer, device: str, dtype):
    import torch

    g = torch.Generator().manual_seed(0)
    channels, side = transformer.config.in_channels // 4, args.resolution // 8
    latents = torch.randn(args.batch, channels, side, side, generator=g).to(device)
    t5 = torch.randn(args.batch, args.text_length, transformer.config.joint_attention_dim, generator=g).to(device)
    pooled = torch.randn(args.batch, transformer.config.pooled_projection_dim, generator=g).to(device)
    return latents, t5, pooled


def bare_train(args, checkpointing: bool, device: str) -> dict:
    """Steps/s of LoRA forward + backward + AdamW on resident tensors; build seconds; peak MB."""
    import torch

    from diffscale.flux import lora
    from diffscale.flux.flow import flow_loss
    from diffscale.flux.loop import make_optimizer, sdpa_context, update
    from diffscale.flux.settings import DTYPES
    from diffscale.train.core import precision

    precision.allow_tf32("cuda" if device.startswith("cuda") else "cpu", True)
    dtype = getattr(torch, DTYPES[_dtype_name(args)])
    transformer, build_s = build_transformer(args, device, dtype)
    flux = _flux_settings(args, checkpointing)
    params = lora.add_lora(transformer, flux, 0)
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = make_optimizer(params, flux, device)
    latents, t5, pooled = _inputs(args, transformer, device, dtype)
    noise = torch.randn_like(latents)
    sigmas = torch.full((args.batch,), 0.5, device=device)

    prec = precision.Precision(_dtype_name(args), "cuda" if device.startswith("cuda") else "cpu")

    def step() -> None:  # what the loop does per step, without data, metrics or checkpoints
        with sdpa_context(flux["sdpa_kernels"]), prec.autocast():
            loss = flow_loss(transformer, latents, noise, sigmas, t5, pooled, dtype)
        with sdpa_context(flux["sdpa_kernels"]):
            prec.backward(loss)
        update(prec, optimizer, params, flux["grad_clip"])

    seconds = median_seconds(step, args.repeats * 2, 3, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else None
    del transformer, optimizer, params
    _free(device)
    return {"steps_per_s": 1 / seconds, "build_s": build_s, "peak_mem_mb": peak}


def loop_train(args, checkpointing: bool, tmp: Path, device: str) -> dict:
    from diffscale.flux.loop import train
    from diffscale.flux.synthetic import write_synthetic

    arch = models.preset_config(models.parse_spec("flux_transformer", {"random": args.preset}))
    dataset, cache = write_synthetic(tmp / f"data-{int(checkpointing)}", max(4, args.batch), args.resolution,
                                     arch["in_channels"] // 4, args.text_length, arch["joint_attention_dim"],
                                     arch["pooled_projection_dim"])
    summary = train(run_config(args, checkpointing), cache, dataset, tmp / f"run-{int(checkpointing)}")
    _free(device)
    return summary


def infer_rows(args, device: str) -> list[dict]:
    """Denoise seconds of the sampler against bare transformer calls, base and with a LoRA."""
    import torch

    from diffscale.flux import flow, lora
    from diffscale.flux.settings import DTYPES

    dtype = getattr(torch, DTYPES[_dtype_name(args)])
    transformer, build_s = build_transformer(args, device, dtype)
    latents, t5, pooled = _inputs(args, transformer, device, dtype)
    t5, pooled = t5.to(dtype), pooled.to(dtype)
    side = latents.shape[-1]
    packed = flow.pack(latents.to(dtype))
    img, txt = flow.image_ids(side, side, device, dtype), flow.text_ids(args.text_length, device, dtype)
    sigmas = [torch.full((args.batch,), s, device=device, dtype=dtype)
              for s in flow.schnell_sigmas(args.inference_steps)[:-1].tolist()]
    rows = []
    for model in ("base", "lora"):
        if model == "lora":
            lora.add_lora(transformer, {"lora_rank": args.rank, "lora_alpha": args.rank, "lora_dropout": 0.0,
                                        "lora_targets": LORA_TARGETS}, 0)
            if dtype != torch.float32:
                transformer.to(dtype)
        transformer.eval()

        def bare() -> None:
            with torch.inference_mode():
                for t in sigmas:
                    flow.predict(transformer, packed, t, t5, pooled, img, txt)

        def sampler() -> None:
            flow.denoise(transformer, latents, t5, pooled, args.inference_steps, dtype)

        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        bare_s = median_seconds(bare, args.repeats, 2, device)
        loop_s = median_seconds(sampler, args.repeats, 1, device)
        rows.append({"kind": "infer", "model": model, "preset": args.preset, "resolution": args.resolution,
                     "batch": args.batch, "dtype": _dtype_name(args), "inference_steps": args.inference_steps,
                     "loop_denoise_s": loop_s, "bare_denoise_s": bare_s, "ratio": bare_s / loop_s,
                     "build_s": build_s, "status": "ok",
                     "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else None})
    del transformer
    _free(device)
    return rows


def check_arguments(args: argparse.Namespace) -> None:
    """--checkpointing and --sdpa lists of known values, as one line naming the flag."""
    from diffscale.errors import ConfigError
    from diffscale.flux.settings import SDPA_KERNELS

    for flag, value, allowed in (("--checkpointing", args.checkpointing, ("off", "on")),
                                 ("--sdpa", args.sdpa, tuple(SDPA_KERNELS))):
        items = [item.strip() for item in value.split(",")]
        if not all(items) or any(item not in allowed for item in items):
            raise ConfigError(f"bench flux: {flag}: expected a comma-separated list of {', '.join(allowed)}, "
                              f"not {value!r}")
        setattr(args, flag[2:], ",".join(items))  # the stage splits it on commas alone


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    device = "cuda:0" if args.device.startswith("cuda") else "cpu"
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="diffscale-bench-flux-") as tmp:
        for setting in args.checkpointing.split(","):
            checkpointing = setting.strip() == "on"
            head = {"kind": "train", "model": "lora", "preset": args.preset, "resolution": args.resolution,
                    "batch": args.batch, "dtype": _dtype_name(args), "rank": args.rank,
                    "grad_checkpointing": checkpointing, "sdpa": args.sdpa}
            try:  # one failing setting (e.g. out of memory) must not lose the others' figures
                loop = loop_train(args, checkpointing, Path(tmp), device)
                bare = bare_train(args, checkpointing, device)
            except Exception as exc:  # noqa: BLE001  (reported in the row, the run goes on)
                rows.append({**head, "status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
                _free(device)
                continue
            rows.append({**head, "loop_steps_per_s": loop["steps_per_s"], "bare_steps_per_s": bare["steps_per_s"],
                         "ratio": loop["steps_per_s"] / bare["steps_per_s"], "loop_setup_s": loop["setup_s"],
                         "build_s": bare["build_s"], "loop_peak_mem_mb": loop["peak_mem_mb"],
                         "peak_mem_mb": bare["peak_mem_mb"], "status": "ok"})
    if not args.skip_infer:
        try:
            rows += infer_rows(args, device)
        except Exception as exc:  # noqa: BLE001
            rows.append({"kind": "infer", "status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    for row in rows:
        row["device"] = name
        row["random_weights"] = True
    print(f"bench flux: {time.perf_counter() - started:.1f} s on {name}", flush=True)
    return rows
