"""The FLUX LoRA training loop: one run of {hw}/{gpus}/{steps}, one process per device.

Built on the shared training core (diffscale.train.core): launch, precision, checkpoint store,
guards (NaN/OOM), meter.

  launch        `train()` runs in this process (1 device), under torchrun, or spawns `gpus`
                processes (core.launch); NCCL on GPUs, gloo on CPUs (on a CPU hardware key `gpus`
                counts gloo processes). Data parallel: the global batch `flux.batch_size` is split
                evenly, DDP averages the LoRA gradients.
  setup         the transformer is built on its device in the compute dtype (bf16 on GPUs), frozen;
                peft LoRA added (lora.py), trained in fp32 under autocast to the compute dtype
                (core.precision; fp16 with a GradScaler); AdamW (or bitsandbytes' 8-bit AdamW);
                gradient checkpointing on request; the VAE for sampling (rank 0).
  each step     the batch is drawn from (seed, step) alone (`draw`): a bucket, its images, noise,
                sigmas and which captions are dropped for the empty one (flux.caption_dropout);
                each process takes its slice. So a resumed run sees exactly the batches
                an uninterrupted one would, and 2 processes see what 1 does. The flow-matching loss
                (flow.py) runs under the configured SDPA kernels (flash / memory-efficient: cuDNN
                attention crashed in this backward on torch 2.11).
  every log_every   losses are averaged over processes in one call, checked for NaN/inf (the run
                stops naming the step and the last good checkpoint) and written as a metrics row.
  checkpoints   every checkpoint_every steps and at the end: the LoRA as
                lora/step-NNNNN.safetensors (FluxPipeline format), samples of the sample prompts
                and the quality of the training captions (quality.py), and resume/last.pt (LoRA,
                optimizer, scaler, step, every process's RNG states, metrics, timings; core
                checkpoint store) for `resume=True`, renamed checkpoint.pt at the end. Step 0 is
                sampled too: the base model's quality is the baseline.
  timing        setup, cache loading, training, sampling and saving are timed apart (timing.json);
                the steps/s of a metrics row count training only (the meter restarts after a
                checkpoint). Each invocation (segment) records its seconds from its script's
                start to its last checkpoint, and each try its whole time (diffscale.attempts),
                so `job_time_s` bills every invocation (Snakemake's benchmark file holds only
                the last): exactly where the tries' records cover them, else as a lower bound.
Declared outputs (metrics.csv, quality.csv, timing.json, lora.safetensors, run.json) are written at
the end; lora/, samples/ and resume/ are not declared, so a job Snakemake re-runs after a kill keeps
them and continues.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffscale import atomic, attempts, hardware, models, provenance, timing
from diffscale.config import config_hash
from diffscale.errors import ConfigError, DataError
from diffscale.flux import dataset as ds
from diffscale.flux import lora as lora_io
from diffscale.flux.cache import Cache, load_cache
from diffscale.flux.flow import flow_loss, lora_train_flops_per_sample, sample_sigmas
from diffscale.flux.quality import grid, psnr, ssim, to_pil
from diffscale.flux.sample import generate
from diffscale.flux.settings import DTYPES, SDPA_KERNELS, check_run_config, compute_dtype, trajectory
from diffscale.timing import PhaseTimer
from diffscale.train.core import checkpoint as core_ckpt
from diffscale.train.core import compat, guards, launch, precision
from diffscale.train.core.guards import TrainingError  # noqa: F401  (the loop's stop: NaN, out of memory)
from diffscale.train.core.meter import COLUMNS as CORE_COLUMNS
from diffscale.train.core.meter import Meter, final_loss, steady_rate
from diffscale.io import csv_text
from diffscale.metrics import achieved
from diffscale.train.core.flops import peak_flops

METRICS_COLUMNS = [*CORE_COLUMNS, "steps_per_s", "images_per_s", "peak_mem_mb"]
QUALITY_COLUMNS = ["checkpoint_step", "psnr", "ssim", "n_images"]
RESUME_FORMAT = "diffscale-flux-lora-resume"
DIVERGED = "Lower flux.lr, or train in bf16/fp32 instead of fp16"


@dataclass
class Job:
    run_config: dict
    cache_dir: Path
    dataset_dir: Path
    out_dir: Path
    resume: bool = False
    stop_after: int | None = None  # end this invocation after this step (checkpointed)
    earlier_tries: list = field(default_factory=list)  # the job's tries before this one (diffscale.attempts)

    @property
    def store(self) -> core_ckpt.Store:
        return core_ckpt.Store(self.out_dir, format=RESUME_FORMAT, kind="FLUX LoRA resume")


# --- launching ----------------------------------------------------------------------------------

def train(run_config: dict, cache_dir, dataset_dir, out_dir, *, resume: bool = False,
          stop_after: int | None = None, earlier_tries: list | None = None) -> dict | None:
    """Run one LoRA training job; return rank 0's summary (None on other torchrun ranks, and when
    the invocation stopped before the last step). `earlier_tries`: the job's tries before this
    one (diffscale.attempts), which its run time counts."""
    job = Job(check_run_config(run_config), Path(cache_dir), Path(dataset_dir), Path(out_dir), resume, stop_after,
              list(earlier_tries or []))
    cfg = job.run_config
    world = int(cfg["run"]["gpus"])
    kind = launch.mode(world)
    placement = hardware.resolve(cfg, cfg["run"]["hw"], world)
    if cfg["flux"]["optimizer"] == "adamw8bit":
        _bitsandbytes()
    load_cache(job.cache_dir)  # a missing cache fails here, once, not in every process
    result = launch.run(fit, world, placement.device, job)
    if kind != "spawn":
        return result
    finished = job.stop_after is None or job.stop_after >= cfg["run"]["steps"]
    return provenance.read_results(job.out_dir, "FLUX training run") if finished else None


def cpu_threads(world: int) -> int | None:
    """Threads per process from OMP_NUM_THREADS when it is set (it wins over the core's usable
    cores // processes; on a shared, loaded machine 1 thread can be far faster than 2 spinning
    ones). It is the job's budget, split among its `world` processes: Snakemake sets it to the
    rule's threads for every process the job starts, so 2 processes x 2 threads would oversubscribe
    a 2-CPU job."""
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(explicit) // world) if explicit.isdigit() and int(explicit) > 0 else None


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError:
        raise ConfigError("flux.optimizer: adamw8bit needs bitsandbytes, which is not installed here; "
                          "use adamw") from None
    return bitsandbytes


# --- small named helpers of the loop -----------------------------------------------------------

@contextlib.contextmanager
def kernel_errors(flux: dict, device: str):
    """Inside: PyTorch's error that none of flux.sdpa_kernels can run here becomes one config line."""
    try:
        yield
    except RuntimeError as exc:
        if "No available kernel" in str(exc) or "No viable backend" in str(exc):
            raise ConfigError(f"flux.sdpa_kernels: none of {flux['sdpa_kernels']} can run this attention on "
                              f"{device} (add 'math' to allow PyTorch's reference kernel)") from None
        raise


def sdpa_context(names: list[str]):
    """Only the configured SDPA kernels (flux.sdpa_kernels) may run inside this context."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_KERNELS[name]) for name in names])


def make_optimizer(params: list, flux: dict, device: str):
    if flux["optimizer"] == "adamw8bit":
        return _bitsandbytes().optim.AdamW8bit(params, lr=flux["lr"], weight_decay=flux["weight_decay"])
    return compat.adamw(params, flux["lr"], flux["weight_decay"], fused=device.startswith("cuda"))


def update(prec: precision.Precision, optimizer, params: list, max_norm: float):
    """After the backward: clip the LoRA's global gradient norm at `max_norm` (as diffusers'
    example, max_grad_norm 1.0; 0 = off), the optimizer step, zero the gradients; the norm before
    clipping (None when off)."""
    norm = prec.clip(params, optimizer, max_norm)
    prec.step(optimizer)
    optimizer.zero_grad(set_to_none=True)
    return norm


def draw(cache: Cache, seed: int, step: int, batch: int, flux: dict):
    """The global batch of `step`, from (seed, step) alone: image indices (all of one bucket),
    noise [B, C, h, w], sigmas [B] and which captions are dropped [B] (flux.caption_dropout). Each
    step picks a bucket with probability proportional to its size, then `batch` of its images
    without replacement (with replacement if it has fewer). The drops are drawn last, so the
    images, noise and sigmas of a step do not depend on the dropout rate."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    buckets = sorted(cache.buckets.items())
    sizes = torch.tensor([len(members) for _, members in buckets], dtype=torch.float64)
    members = buckets[int(torch.multinomial(sizes, 1, generator=generator))][1]
    if len(members) >= batch:
        picks = torch.randperm(len(members), generator=generator)[:batch]
    else:
        picks = torch.randint(len(members), (batch,), generator=generator)
    indices = [members[int(i)] for i in picks]
    latent = cache.latents[cache.names[indices[0]]]
    noise = torch.randn(batch, *latent.shape, generator=generator)
    sigmas = sample_sigmas(batch, generator, flux["timestep_sampling"], flux["logit_mean"], flux["logit_std"],
                           flux["timestep_shift"])
    dropped = (torch.rand(batch, generator=generator) < flux["caption_dropout"]).tolist()
    return indices, noise, sigmas, dropped


def batch_tensors(cache: Cache, indices: list[int], device: str, dropped: list[bool] | None = None):
    """Latents, T5 and pooled embeddings of these images, each image with its own caption, or with
    the empty caption where `dropped` says so."""
    import torch

    items = []
    for k, i in enumerate(indices):
        latent, t5, pooled = cache.item(cache.names[i])
        if dropped and dropped[k]:
            t5, pooled = cache.empty_caption()
        items.append((latent, t5, pooled))
    return [torch.stack(parts).to(device) for parts in zip(*items)]


def bucket_mean_flops(transformer, params, cache: Cache, device: str, dtype) -> float | None:
    """Model FLOPs per training sample, averaged over the buckets as `draw` picks them (in
    proportion to their sizes): a bucket's token count sets its cost."""
    counted = {}
    for bucket, members in cache.buckets.items():
        counted[bucket] = lora_train_flops_per_sample(transformer, params, *batch_tensors(cache, members[:1], device),
                                                      dtype)
        if counted[bucket] is None:
            return None
    sizes = {bucket: len(members) for bucket, members in cache.buckets.items()}
    return sum(counted[b] * sizes[b] for b in counted) / sum(sizes.values())


def reset_peak_memory(device: str) -> None:
    """Start a new peak on CUDA, so the rows' peak is training's, not set-up's or sampling's (the
    VAE decode, the FLOP-counting forward); a CPU's peak RSS cannot be reset."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: str) -> float:
    """The device's peak allocation since the last reset (CUDA), or this process's peak RSS (CPU)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


# --- the loop -----------------------------------------------------------------------------------

def build_parts(ctx: launch.Context, job: Job, dtype, timer: PhaseTimer):
    """The LoRA-wrapped transformer in training mode, its LoRA parameters and their optimizer, the
    cache, the dataset's items (rank 0: quality) and the VAE (rank 0, when there is something to
    sample), each phase timed."""
    import torch

    cfg, flux, device = job.run_config, job.run_config["flux"], ctx.device
    weights = None if dtype == torch.float32 else dtype
    with timer.phase("setup"):
        transformer = models.build("flux_transformer", cfg["models"]["flux_transformer"], device=device,
                                   dtype=weights, on_device=True)
        params = lora_io.add_lora(transformer, flux, cfg["seed"])
        if flux["grad_checkpointing"]:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        optimizer = make_optimizer(params, flux, device)
    with timer.phase("cache"):
        cache = load_cache(job.cache_dir)
        if flux["caption_dropout"] > 0:
            cache.empty_caption()  # a cache without it fails now, not at the first dropped caption
        items = ds.load(job.dataset_dir) if ctx.is_main else []
    with timer.phase("setup"):
        vae = models.build("flux_vae", cfg["models"]["flux_vae"], device=device, dtype=weights) \
            if ctx.is_main and (items or cache.manifest["sample_prompts"]) else None
    return transformer, params, optimizer, cache, items, vae


def restore(resume: dict, transformer, optimizer, prec: precision.Precision, ctx: launch.Context) -> tuple:
    """Put a resume checkpoint's LoRA, optimizer, scaler and RNG state back. Returns where the run
    stands: (start step, metrics rows, quality rows, checkpoints, earlier segments, last good LoRA)."""
    lora_io.load_lora_state(transformer, resume["lora"])
    optimizer.load_state_dict(resume["optimizer"])
    prec.load_state_dict(resume["scaler"])
    core_ckpt.restore_rng(resume["rng"], ctx.rank)
    saved = [c for c in resume["checkpoints"] if c.get("lora")]
    last_good = guards.LastGood(saved[-1]["lora"], saved[-1]["step"]) if saved else guards.LastGood()
    return (resume["step"], resume["metrics"], resume["quality"], resume["checkpoints"], resume.get("segments", []),
            last_good)


def train_step(ctx: launch.Context, model, cache: Cache, seed: int, step: int, dtype, prec: precision.Precision,
               optimizer, params: list, flux: dict):
    """One optimiser step on this rank's share of step `step`'s global batch (drawn from (seed,
    step) alone, so a resumed run draws what the straight one would); (loss, grad norm)."""
    micro = flux["batch_size"] // ctx.world
    indices, noise, sigmas, dropped = draw(cache, seed, step, flux["batch_size"], flux)
    mine = slice(ctx.rank * micro, (ctx.rank + 1) * micro)
    latents, t5, pooled = batch_tensors(cache, indices[mine], ctx.device, dropped[mine])
    with sdpa_context(flux["sdpa_kernels"]), prec.autocast():
        loss = flow_loss(model, latents, noise[mine].to(ctx.device), sigmas[mine].to(ctx.device), t5, pooled, dtype)
    with sdpa_context(flux["sdpa_kernels"]):
        prec.backward(loss)
    return loss.detach(), update(prec, optimizer, params, flux["grad_clip"])


def fit(ctx: launch.Context, job: Job) -> dict | None:
    import torch

    began = timing.job_started_at() or time.time()  # the script's start (imports included), else this call's
    cfg, flux = job.run_config, job.run_config["flux"]
    seed, steps, batch = cfg["seed"], cfg["run"]["steps"], flux["batch_size"]
    micro, device = batch // ctx.world, ctx.device
    if ctx.device_type == "cpu" and cpu_threads(ctx.world):
        torch.set_num_threads(cpu_threads(ctx.world))
    precision.allow_tf32(ctx.device_type, True)
    dtype_name = compute_dtype(flux, device)
    dtype = getattr(torch, DTYPES[dtype_name])
    prec = precision.Precision(dtype_name, ctx.device_type)  # autocast to the frozen base's dtype
    resume = _resume_state(job, ctx) if job.resume else None
    timer = PhaseTimer(device)
    timer.seconds.update(resume["timings"] if resume else {})
    torch.manual_seed(seed + ctx.rank)  # only stray randomness (LoRA dropout) uses the global generators

    transformer, params, optimizer, cache, items, vae = build_parts(ctx, job, dtype, timer)
    sdpa = functools.partial(sdpa_context, flux["sdpa_kernels"])
    with timer.phase("setup"), kernel_errors(flux, device), sdpa(), prec.autocast():  # as a training step runs
        flops_per_sample = bucket_mean_flops(transformer, params, cache, device, dtype)
    peak = peak_flops(ctx.device_name, dtype_name) if ctx.device_type == "cuda" else None
    start_step, rows, quality_rows, checkpoints, segments, last_good = (
        restore(resume, transformer, optimizer, prec, ctx) if resume else (0, [], [], [], [], guards.LastGood()))
    if resume:
        ctx.say(f"resuming from {job.store.resume_path} at step {start_step}")

    model = ctx.wrap(transformer)
    end_step = min(steps, job.stop_after) if job.stop_after is not None else steps
    meter = Meter(rows, batch, ctx.world, flops_per_sample, peak, start_step, rows[-1]["elapsed_s"] if rows else 0.0,
                  verbose=ctx.is_main)

    def ran(done: int) -> list[dict]:  # the earlier segments and this one, up to step `done`
        return segments + [{"start_step": start_step, "end_step": done, "job_s": time.time() - began,
                            "job_started_at": timing.job_started_at()}]  # matches this try's record

    ctx.say(f"rank 0/{ctx.world} on {ctx.device_name}: steps {start_step}..{end_step} of {steps}, global batch "
            f"{batch} = {ctx.world} x {micro}, {len(cache.names)} images, "
            f"{sum(p.numel() for p in params):,} LoRA parameters, {DTYPES[dtype_name]}")

    def checkpoint(done: int) -> None:
        if ctx.is_main:
            with timer.phase("sampling"):
                samples, quality = sample_checkpoint(transformer, vae, cache, items, job, done, dtype, sdpa)
            quality_rows.append({"checkpoint_step": done, **quality})
        rng = core_ckpt.gather_rng(ctx)
        if ctx.is_main:
            with timer.phase("saving"):
                entry = {"step": done, "samples": samples}
                if done > 0:
                    entry["lora"] = str(lora_io.save(lora_io.lora_state(transformer), lora_path(job.out_dir, done),
                                                    lora_io.lora_metadata(transformer)))
                    last_good.update(entry["lora"], done)
                checkpoints.append(entry)
                job.store.save({"step": done, "lora": lora_io.lora_state(transformer),
                                "optimizer": optimizer.state_dict(), "scaler": prec.state_dict(), "rng": rng,
                                "metrics": rows, "quality": quality_rows, "checkpoints": checkpoints,
                                "timings": timer.seconds, "segments": ran(done),
                                "trajectory_hash": config_hash(trajectory(cfg))})
        meter.restart()  # sampling and saving are not part of the measured rate or peak memory
        reset_peak_memory(device)

    how = f"flux.batch_size {batch} / {ctx.world} processes, {cache.manifest['items'][0]['bucket']} px"
    advice = "turn on flux.grad_checkpointing, lower flux.batch_size or flux.resolution, or use more GPUs"
    reset_peak_memory(device)  # set-up's peak is not training's
    with kernel_errors(flux, device), guards.out_of_memory(device, micro, how, advice):
        if resume is None:
            checkpoint(0)  # the base model's samples and quality: the baseline
        for step in range(start_step, end_step):
            with timer.phase("train"):
                loss, grad_norm = train_step(ctx, model, cache, seed, step, dtype, prec, optimizer, params, flux)
                meter.add(loss, grad_norm, flux["lr"])
                done = step + 1
                checkpoint_now = done % flux["checkpoint_every"] == 0 or done == end_step
                if done % flux["log_every"] == 0 or checkpoint_now:
                    losses = ctx.mean(meter.pending_losses()).tolist()
                    guards.check_finite(losses, done, last_good, DIVERGED)
                    extend_row(meter.row(done, losses, last_good), batch, device)
            if checkpoint_now:
                checkpoint(done)
    if end_step < steps or not ctx.is_main:
        return None
    return finish(job, rows, quality_rows, checkpoints, timer, ctx, params, flops_per_sample, peak, ran(end_step))


def extend_row(row: dict, batch: int, device: str) -> None:
    """The study's columns beside the core meter's: steps/s, images/s, peak memory."""
    row.update(steps_per_s=row["samples_per_s"] / batch, images_per_s=row["samples_per_s"],
               peak_mem_mb=peak_memory_mb(device))


def lora_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / "lora" / f"step-{step:05d}.safetensors"


def sample_checkpoint(transformer, vae, cache: Cache, items: list, job: Job, step: int, dtype, sdpa):
    """Samples of the sample prompts (saved) and the PSNR/SSIM of each training caption's image
    against its training image (quality.py has the protocol)."""
    from diffscale.flux.cache import load_image

    flux, seed = job.run_config["flux"], job.run_config["seed"]
    size = max(cache.buckets, key=lambda bucket: len(cache.buckets[bucket]))  # the most common bucket
    samples = []
    folder = job.out_dir / "samples" / f"step-{step:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    with lora_io.sampling(transformer, flux):
        for i, _ in enumerate(cache.manifest["sample_prompts"]):
            image = generate(transformer, vae, *cache.prompt(i), size, flux["inference_steps"], seed * 1000 + i,
                             dtype, sdpa)
            path = folder / f"prompt_{i}.png"
            with atomic.atomic_path(path) as tmp:
                to_pil(image).save(tmp, format="PNG")
            samples.append(str(path))
        if len(samples) > 1:  # the checkpoint's prompts side by side
            with atomic.atomic_path(folder / "grid.png") as tmp:
                grid([samples]).save(tmp, format="PNG")
        scores = []
        for index, item in enumerate(items[: flux.get("quality_images") or len(items)]):
            _, t5, pooled = cache.item(item.name)
            image = generate(transformer, vae, t5, pooled, item.bucket, flux["inference_steps"],
                             seed * 1000 + 500 + index, dtype, sdpa)
            target = load_image(ds.image_path(job.dataset_dir, item))[0]
            scores.append((psnr(image, target), ssim(image, target)))
    quality = {"psnr": statistics.fmean(s[0] for s in scores), "ssim": statistics.fmean(s[1] for s in scores),
               "n_images": len(scores)} if scores else {"psnr": None, "ssim": None, "n_images": 0}
    return samples, quality


def _resume_state(job: Job, ctx) -> dict | None:
    """The resume checkpoint of this run directory, if it was made with the same trajectory."""
    path = job.store.resume_path
    if not path.is_file():
        return None
    try:
        state = job.store.load()
    except DataError as exc:
        ctx.say(f"not resuming: {exc}; starting over")
        return None
    if state.get("trajectory_hash") != config_hash(trajectory(job.run_config)):
        ctx.say(f"not resuming: {path} was made with other settings; starting over")
        return None
    if state["step"] > job.run_config["run"]["steps"]:
        ctx.say(f"not resuming: {path} is at step {state['step']}, past {job.run_config['run']['steps']}; "
                "starting over")
        return None
    return state


# --- outputs ------------------------------------------------------------------------------------


def finish(job: Job, rows, quality_rows, checkpoints, timer: PhaseTimer, ctx, params, flops_per_sample: int | None,
           peak: float | None, segments: list[dict]) -> dict:
    import torch

    cfg, out = job.run_config, job.out_dir
    batch = cfg["flux"]["batch_size"]
    final = checkpoints[-1]["lora"]
    spec = models.parse_spec("flux_transformer", cfg["models"]["flux_transformer"])
    timings = {f"{k}_s": v for k, v in timer.seconds.items()}
    timings["total_s"] = timer.total
    images_per_s = steady_rate(rows)
    tflops, mfu = achieved(flops_per_sample, images_per_s, peak, ctx.world)
    summary = {
        **cfg["run"], "device": ctx.device_name if ctx.device_type == "cuda" else "cpu",
        "cpu_model": ctx.device_name if ctx.device_type == "cpu" else None,
        "threads": torch.get_num_threads() if ctx.device_type == "cpu" else None,
        "random_weights": spec.pretrained is None,
        "steps_per_s": images_per_s / batch, "images_per_s": images_per_s,
        "flops_per_sample": flops_per_sample, "tflops": tflops, "mfu": mfu,
        "batch_size": batch, "lora_rank": cfg["flux"]["lora_rank"],
        "grad_checkpointing": cfg["flux"]["grad_checkpointing"], "lora_params": sum(p.numel() for p in params),
        "final_loss": final_loss(rows), "peak_mem_mb": max(r["peak_mem_mb"] for r in rows),
        "resolution": resolution(job), "model": spec.label, "checkpoints": checkpoints, "final_lora": final,
        # what the run held its devices for, its failed and stopped tries included; every invocation
        # from its script's start to its last checkpoint is the lower bound where the tries'
        # records do not cover every invocation (diffscale.attempts)
        "resumed": len(segments) > 1,
        **attempts.run_time(job.earlier_tries, [(seg.get("job_started_at"), seg["job_s"]) for seg in segments[:-1]],
                            this_s=segments[-1]["job_s"]),
        **timings,
    }
    atomic.write_text(out / "metrics.csv", csv_text(rows, METRICS_COLUMNS))
    atomic.write_text(out / "quality.csv", csv_text(quality_rows, QUALITY_COLUMNS))
    atomic.write_json(out / "timing.json", timings)
    provenance.write_run_json(out / "run.json", config_slice=cfg, results=summary, timings=timings,
                              models=[{**spec.describe(), "lora_params": summary["lora_params"]}],
                              data={"cache": str(job.cache_dir), "dataset": str(job.dataset_dir)})
    with atomic.atomic_path(out / "lora.safetensors") as tmp:
        tmp.write_bytes(Path(final).read_bytes())
    job.store.finalize()  # resume/last.pt -> checkpoint.pt: the run's last act
    ctx.say(f"done: {summary['steps_per_s']:.3f} steps/s, final loss {summary['final_loss']:.4f}; wrote {out}")
    return summary


def resolution(job: Job) -> int:
    """The side of the square of the same area as the dataset's most common bucket (flux.resolution)."""
    buckets = [tuple(item["bucket"]) for item in load_cache(job.cache_dir).manifest["items"]]
    width, height = max(set(buckets), key=buckets.count)
    return round(math.sqrt(width * height))
