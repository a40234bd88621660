"""The FLUX LoRA training loop: one run of {hw}/{gpus}/{steps}, one process per device.

  launch        `train()` runs in this process (1 device), under torchrun (RANK/LOCAL_RANK/
                WORLD_SIZE from the environment), or spawns `gpus` processes; NCCL on GPUs, gloo on
                CPUs (on a CPU hardware key `gpus` counts gloo processes). Data parallel: the global
                batch `flux.batch_size` is split evenly, DDP averages the LoRA gradients.
  setup         the transformer is built on its device in the compute dtype (bf16 on GPUs), frozen;
                peft LoRA added (lora.py), trained in fp32; AdamW (or bitsandbytes' 8-bit AdamW);
                gradient checkpointing on request; the VAE for sampling (rank 0).
  each step     the batch is drawn from (seed, step) alone (`draw`): a bucket, its images, noise
                and sigmas; each process takes its slice. So a resumed run sees exactly the batches
                an uninterrupted one would, and 2 processes see what 1 does. The flow-matching loss
                (flow.py) runs under the configured SDPA kernels (flash / memory-efficient: cuDNN
                attention crashed in this backward on torch 2.11).
  every log_every   losses are averaged over processes in one call, checked for NaN/inf (the run
                stops naming the step and the last good checkpoint) and written as a metrics row.
  checkpoints   every checkpoint_every steps and at the end: the LoRA as
                lora/step-NNNNN.safetensors (FluxPipeline format), samples of the sample prompts
                and the quality of the training captions (quality.py), and resume/last.pt (LoRA,
                optimizer, step, RNG states, metrics, timings) for `resume=True`. Step 0 is sampled
                too: the base model's quality is the baseline.
  timing        setup, cache loading, training, sampling and saving are timed apart (timing.json);
                the steps/s of a metrics row count training only (the meter restarts after a
                checkpoint).
Declared outputs (metrics.csv, quality.csv, timing.json, lora.safetensors, run.json) are written at
the end; lora/, samples/ and resume/ are not declared, so a job Snakemake re-runs after a kill keeps
them and continues.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from diffscale import atomic, hardware, models, provenance
from diffscale.config import config_hash
from diffscale.errors import ConfigError, DataError, HardwareError, ModelSpecError, UserError
from diffscale.flux import dataset as ds
from diffscale.flux import lora as lora_io
from diffscale.flux.cache import Cache, load_cache
from diffscale.flux.flow import flow_loss, sample_sigmas
from diffscale.flux.quality import grid, psnr, ssim, to_pil
from diffscale.flux.sample import generate
from diffscale.flux.settings import DTYPES, SDPA_KERNELS, check_run_config, compute_dtype, trajectory
from diffscale.train import checkpoint as ckpt_io
from diffscale.train import compat

METRICS_COLUMNS = ["step", "loss", "lr", "steps_per_s", "images_per_s", "peak_mem_mb", "elapsed_s", "warmup"]
QUALITY_COLUMNS = ["checkpoint_step", "psnr", "ssim", "n_images"]
RESUME_FORMAT = "diffscale-flux-lora-resume"


class TrainingError(UserError):
    """The run cannot go on: the loss diverged, or a batch does not fit in memory."""


ERRORS = {cls.__name__: cls for cls in (UserError, ConfigError, DataError, ModelSpecError, HardwareError,
                                         TrainingError)}


@dataclass
class Job:
    run_config: dict
    cache_dir: Path
    dataset_dir: Path
    out_dir: Path
    resume: bool = False
    stop_after: int | None = None  # end this invocation after this step (checkpointed)


def _say(message: str, on: bool = True) -> None:
    if on:
        print(message, flush=True)


# --- launching ----------------------------------------------------------------------------------

def train(run_config: dict, cache_dir, dataset_dir, out_dir, *, resume: bool = False,
          stop_after: int | None = None) -> dict | None:
    """Run one LoRA training job; return rank 0's summary (None on other torchrun ranks)."""
    job = Job(check_run_config(run_config), Path(cache_dir), Path(dataset_dir), Path(out_dir), resume, stop_after)
    cfg = job.run_config
    world = int(cfg["run"]["gpus"])
    hardware.resolve(cfg, cfg["run"]["hw"], world)
    if cfg["flux"]["optimizer"] == "adamw8bit":
        _bitsandbytes()
    load_cache(job.cache_dir)  # a missing cache fails here, once, not in every process
    if "LOCAL_RANK" in os.environ and os.environ.get("WORLD_SIZE") is not None:  # torchrun
        if int(os.environ["WORLD_SIZE"]) != world:
            raise ConfigError(f"torchrun started {os.environ['WORLD_SIZE']} processes but the run asks for {world}")
        return _process(job, int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world)
    if world == 1:
        return _process(job, 0, 0, 1)
    _spawn(job, world)
    finished = job.stop_after is None or job.stop_after >= cfg["run"]["steps"]
    return read_summary(job.out_dir) if finished else None


def _spawn(job: Job, world: int) -> None:
    import torch.multiprocessing as mp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    errors = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_spawned, args=(world, job, errors), nprocs=world, join=True)
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        if not errors.empty():
            kind, message = errors.get()
            raise ERRORS.get(kind, UserError)(message) from None
        raise


def _spawned(rank: int, world: int, job: Job, errors) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    try:
        _process(job, rank, rank, world)
    except UserError as exc:
        errors.put((type(exc).__name__, str(exc)))
        raise SystemExit(exc.exit_code) from None


def _process(job: Job, rank: int, local_rank: int, world: int) -> dict | None:
    import torch
    import torch.distributed as dist

    cfg = job.run_config
    placement = hardware.resolve(cfg, cfg["run"]["hw"], world)
    device = placement.device_for(local_rank)
    if placement.device == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(cpu_threads(world))
    if world > 1:
        backend = "nccl" if placement.device == "cuda" else "gloo"
        compat.init_process_group(backend, rank, world, torch.device(device) if placement.device == "cuda" else None)
    try:
        return fit(job, rank, world, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


def cpu_threads(world: int) -> int:
    """Threads per process on CPUs: the job's CPUs split over its processes, unless the user set
    OMP_NUM_THREADS (an explicit setting wins; on a shared, loaded machine 1 thread can be far
    faster than 2 spinning ones)."""
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    return int(explicit) if explicit.isdigit() and int(explicit) > 0 else max(1, provenance.usable_cpus() // world)


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError:
        raise ConfigError("flux.optimizer: adamw8bit needs bitsandbytes, which is not installed here; "
                          "use adamw") from None
    return bitsandbytes


# --- small named helpers of the loop -----------------------------------------------------------

def sdpa_context(names: list[str]):
    """Only the configured SDPA kernels (flux.sdpa_kernels) may run inside this context."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_KERNELS[name]) for name in names])


def make_optimizer(params: list, flux: dict, device: str):
    if flux["optimizer"] == "adamw8bit":
        return _bitsandbytes().optim.AdamW8bit(params, lr=flux["lr"], weight_decay=flux["weight_decay"])
    return compat.adamw(params, flux["lr"], flux["weight_decay"], fused=device.startswith("cuda"))


def draw(cache: Cache, seed: int, step: int, batch: int, flux: dict):
    """The global batch of `step`, from (seed, step) alone: image indices (all of one bucket),
    noise [B, C, h, w] and sigmas [B]. Each step picks a bucket with probability proportional to
    its size, then `batch` of its images without replacement (with replacement if it has fewer)."""
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
    return indices, noise, sigmas


def batch_tensors(cache: Cache, indices: list[int], device: str):
    """Latents, T5 and pooled embeddings of these images, each image with its own caption."""
    import torch

    items = [cache.item(cache.names[i]) for i in indices]
    return [torch.stack(parts).to(device) for parts in zip(*items)]


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


class Phases:
    """Wall time per phase (setup, cache, train, sampling, saving), device-synchronised, cumulative
    across resumed segments."""

    def __init__(self, device: str, before: dict | None = None):
        self.device, self.seconds = device, dict(before or {})

    @contextlib.contextmanager
    def __call__(self, name: str):
        _sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class Meter:
    """Metrics rows. Losses stay on the device between rows (one synchronisation per row); each
    row checks every step's loss for NaN/inf before anything is saved."""

    def __init__(self, rows: list[dict], batch: int, device: str, elapsed_before: float, verbose: bool):
        self.rows, self.batch, self.device, self.verbose = rows, batch, device, verbose
        self.elapsed_before, self.started = elapsed_before, time.perf_counter()
        self.first, self.losses, self.lr = True, [], None
        self.restart(rows[-1]["step"] if rows else 0)

    def restart(self, step: int) -> None:
        self.clock, self.last_step = time.perf_counter(), step

    def add(self, loss, lr: float) -> None:
        self.losses.append(loss)
        self.lr = lr

    def row(self, done: int, losses: list[float], last_good: str) -> None:
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                raise TrainingError(f"loss is {value} at step {done - len(losses) + i + 1}; stopped ({last_good}). "
                                    "Lower flux.lr or train in bf16/fp32 instead of fp16")
        seconds = time.perf_counter() - self.clock
        rate = (done - self.last_step) / seconds
        row = {"step": done, "loss": statistics.fmean(losses), "lr": self.lr, "steps_per_s": rate,
               "images_per_s": rate * self.batch, "peak_mem_mb": peak_memory_mb(self.device),
               "elapsed_s": self.elapsed_before + time.perf_counter() - self.started, "warmup": int(self.first)}
        self.rows.append(row)
        _say(f"step {done:>6}  loss {row['loss']:.4f}  {rate:7.3f} steps/s  {row['images_per_s']:7.3f} img/s  "
             f"peak {row['peak_mem_mb']:.0f} MB", self.verbose)
        self.losses, self.first = [], False
        self.restart(done)


# --- the loop -----------------------------------------------------------------------------------

def fit(job: Job, rank: int, world: int, device: str) -> dict | None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    cfg, flux = job.run_config, job.run_config["flux"]
    seed, steps, batch = cfg["seed"], cfg["run"]["steps"], flux["batch_size"]
    micro, is_main, ddp = batch // world, rank == 0, world > 1
    dtype = getattr(torch, DTYPES[compute_dtype(flux, device)])
    resume = _resume_state(job) if job.resume else None
    phases = Phases(device, resume["timings"] if resume else None)
    torch.manual_seed(seed + rank)  # only stray randomness (LoRA dropout) uses the global generators

    with phases("setup"):
        transformer = models.build("flux_transformer", cfg["models"]["flux_transformer"], device=device,
                                   dtype=None if dtype == torch.float32 else dtype, on_device=True)
        params = lora_io.add_lora(transformer, flux, seed)
        if flux["grad_checkpointing"]:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        optimizer = make_optimizer(params, flux, device)
    with phases("cache"):
        cache = load_cache(job.cache_dir)
        items = ds.load(job.dataset_dir) if is_main else []
    with phases("setup"):  # the VAE decodes samples: rank 0, and only when there is something to sample
        vae = models.build("flux_vae", cfg["models"]["flux_vae"], device=device,
                           dtype=None if dtype == torch.float32 else dtype) \
            if is_main and (items or cache.manifest["sample_prompts"]) else None
    start_step, rows, quality_rows, checkpoints = 0, [], [], []
    if resume:
        lora_io.load_lora_state(transformer, resume["lora"])
        optimizer.load_state_dict(resume["optimizer"])
        if rank < len(resume["rng"]):
            ckpt_io.set_rng_state(resume["rng"][rank])
        start_step, rows = resume["step"], resume["metrics"]
        quality_rows, checkpoints = resume["quality"], resume["checkpoints"]
        _say(f"resuming from {ckpt_io.resume_path(job.out_dir)} at step {start_step}", is_main)

    model = DistributedDataParallel(transformer, device_ids=[device] if device.startswith("cuda") else None) \
        if ddp else transformer
    end_step = min(steps, job.stop_after) if job.stop_after is not None else steps

    def sdpa():
        return sdpa_context(flux["sdpa_kernels"])

    meter = Meter(rows, batch, device, rows[-1]["elapsed_s"] if rows else 0.0, is_main)
    last_good = f"the last good LoRA is {checkpoints[-1]['lora']}" if checkpoints else "no LoRA was saved"
    _say(f"rank 0/{world} on {device}: steps {start_step}..{end_step} of {steps}, global batch {batch} = "
         f"{world} x {micro}, {len(cache.names)} images, {sum(p.numel() for p in params):,} LoRA parameters, "
         f"{DTYPES[compute_dtype(flux, device)]}", is_main)

    def checkpoint(done: int) -> None:
        nonlocal last_good
        if is_main:
            with phases("sampling"):
                samples, quality = sample_checkpoint(transformer, vae, cache, items, job, done, dtype, sdpa)
            quality_rows.append({"checkpoint_step": done, **quality})
        rng = [None] * world
        if ddp:
            dist.all_gather_object(rng, ckpt_io.rng_state())
        else:
            rng = [ckpt_io.rng_state()]
        if is_main:
            with phases("saving"):
                entry = {"step": done, "samples": samples}
                if done > 0:
                    entry["lora"] = str(lora_io.save(lora_io.lora_state(transformer), lora_path(job.out_dir, done)))
                    last_good = f"the last good LoRA is {entry['lora']}"
                checkpoints.append(entry)
                save_resume(ckpt_io.resume_path(job.out_dir), {
                    "format": RESUME_FORMAT, "step": done, "lora": lora_io.lora_state(transformer),
                    "optimizer": optimizer.state_dict(), "rng": rng, "metrics": rows, "quality": quality_rows,
                    "checkpoints": checkpoints, "timings": phases.seconds,
                    "trajectory_hash": config_hash(trajectory(cfg))})
        meter.restart(done)  # sampling and saving are not part of the measured rate

    try:
        if resume is None:
            checkpoint(0)  # the base model's samples and quality: the baseline
        for step in range(start_step, end_step):
            with phases("train"):
                indices, noise, sigmas = draw(cache, seed, step, batch, flux)
                mine = slice(rank * micro, (rank + 1) * micro)
                latents, t5, pooled = batch_tensors(cache, indices[mine], device)
                with sdpa():
                    loss = flow_loss(model, latents, noise[mine].to(device), sigmas[mine].to(device), t5, pooled,
                                     dtype)
                    loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                meter.add(loss.detach(), flux["lr"])
                done = step + 1
                checkpoint_now = done % flux["checkpoint_every"] == 0 or done == end_step
                if done % flux["log_every"] == 0 or checkpoint_now:
                    losses = torch.stack(meter.losses)
                    if ddp:
                        dist.all_reduce(losses)
                        losses /= world
                    meter.row(done, losses.tolist(), last_good)
            if checkpoint_now:
                checkpoint(done)
    except compat.oom_errors():
        raise TrainingError(
            f"out of memory on {device} at {cache.manifest['items'][0]['bucket']} px, {micro} images per device; "
            "turn on flux.grad_checkpointing, lower flux.batch_size or flux.resolution, or use more GPUs") from None
    except RuntimeError as exc:
        if "No available kernel" in str(exc) or "No viable backend" in str(exc):
            raise ConfigError(f"flux.sdpa_kernels: none of {flux['sdpa_kernels']} can run this attention on "
                              f"{device} (add 'math' to allow PyTorch's reference kernel)") from None
        raise
    if end_step < steps or not is_main:
        return None
    return finish(job, rows, quality_rows, checkpoints, phases, device, params)


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
        for index, item in enumerate(items):
            _, t5, pooled = cache.item(item.name)
            image = generate(transformer, vae, t5, pooled, item.bucket, flux["inference_steps"],
                             seed * 1000 + 500 + index, dtype, sdpa)
            target = load_image(ds.image_path(job.dataset_dir, item))[0]
            scores.append((psnr(image, target), ssim(image, target)))
    quality = {"psnr": statistics.fmean(s[0] for s in scores), "ssim": statistics.fmean(s[1] for s in scores),
               "n_images": len(scores)} if scores else {"psnr": None, "ssim": None, "n_images": 0}
    return samples, quality


def save_resume(path: Path, state: dict) -> None:
    import torch

    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume_state(job: Job) -> dict | None:
    """The resume checkpoint of this run directory, if it was made with the same trajectory."""
    path = ckpt_io.resume_path(job.out_dir)
    if not path.is_file():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError):
        _say(f"not resuming: {path} is unreadable; starting over")
        return None
    if state.get("format") != RESUME_FORMAT or state.get("trajectory_hash") != config_hash(trajectory(job.run_config)):
        _say(f"not resuming: {path} was made with other settings; starting over")
        return None
    if state["step"] > job.run_config["run"]["steps"]:
        _say(f"not resuming: {path} is at step {state['step']}, past {job.run_config['run']['steps']}; starting over")
        return None
    return state


# --- outputs ------------------------------------------------------------------------------------

def csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()


def steady_rate(rows: list[dict]) -> float:
    """Steps/s after warm-up: the median over rows, each process start's first row left out."""
    rates = [r["steps_per_s"] for r in rows if not r["warmup"]] or [r["steps_per_s"] for r in rows]
    return statistics.median(rates)


def finish(job: Job, rows, quality_rows, checkpoints, phases: Phases, device: str, params) -> dict:
    import torch

    cfg, out = job.run_config, job.out_dir
    final = checkpoints[-1]["lora"]
    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    spec = models.parse_spec("flux_transformer", cfg["models"]["flux_transformer"])
    timings = {f"{k}_s": v for k, v in phases.seconds.items()}
    timings["total_s"] = sum(phases.seconds.values())
    tail = rows[-max(1, len(rows) // 10):]
    summary = {
        **cfg["run"], "device": device_name, "threads": torch.get_num_threads() if device == "cpu" else None, "random_weights": spec.pretrained is None,
        "steps_per_s": steady_rate(rows), "images_per_s": steady_rate(rows) * cfg["flux"]["batch_size"],
        "batch_size": cfg["flux"]["batch_size"], "lora_rank": cfg["flux"]["lora_rank"],
        "grad_checkpointing": cfg["flux"]["grad_checkpointing"], "lora_params": sum(p.numel() for p in params),
        "final_loss": statistics.fmean(r["loss"] for r in tail), "peak_mem_mb": max(r["peak_mem_mb"] for r in rows),
        "resolution": resolution(job), "model": spec.label, "checkpoints": checkpoints, "final_lora": final, **timings,
    }
    atomic.write_text(out / "metrics.csv", csv_text(rows, METRICS_COLUMNS))
    atomic.write_text(out / "quality.csv", csv_text(quality_rows, QUALITY_COLUMNS))
    atomic.write_json(out / "timing.json", timings)
    provenance.write_run_json(out / "run.json", config_slice=cfg, results=summary, timings=timings,
                              models=[{**spec.describe(), "lora_params": summary["lora_params"]}],
                              data={"cache": str(job.cache_dir), "dataset": str(job.dataset_dir)})
    with atomic.atomic_path(out / "lora.safetensors") as tmp:
        tmp.write_bytes(Path(final).read_bytes())
    resume = ckpt_io.resume_path(out)
    resume.unlink(missing_ok=True)  # the run's last act: a finished run does not resume
    with contextlib.suppress(OSError):
        resume.parent.rmdir()
    _say(f"done: {summary['steps_per_s']:.3f} steps/s, final loss {summary['final_loss']:.4f}; wrote {out}")
    return summary


def resolution(job: Job) -> int:
    """The side of the square of the same area as the dataset's most common bucket (flux.resolution)."""
    buckets = [tuple(item["bucket"]) for item in load_cache(job.cache_dir).manifest["items"]]
    width, height = max(set(buckets), key=buckets.count)
    return round(math.sqrt(width * height))


def read_summary(out_dir) -> dict:
    import json

    path = Path(out_dir) / "run.json"
    try:
        return json.loads(path.read_text())["results"]
    except (OSError, KeyError, ValueError):
        raise DataError(f"{path}: missing or unreadable; the run did not finish") from None
