"""Training a text-conditioned U-Net on cached latents and caption embeddings.

One loop, in the style of nanoGPT and DiT's train.py, on the shared training core
(diffscale.train.core: launch, precision, checkpoint, guards, meter), run by one process per device:

  launch          `train()` checks the job (prepare), then runs `fit` in this process (1 device),
                  under torchrun, or in `gpus` spawned processes (core/launch.py). NCCL on GPUs,
                  gloo on CPUs; on a CPU hardware key `gpus` is the number of gloo processes.
  fit             setup (data, models, optimizer, schedules), restore (from a checkpoint), then
                  train_step per step and save every checkpoint_every steps; finish on rank 0.
  each step       the global batch (train.batch_size) is split into grad_accum micro-batches per
                  process; the gradients of all but the last are not synchronised (no_sync); one
                  autocast context (bf16, or fp16 with a GradScaler); the latent is sampled from
                  the stored distribution (mean + std * eps) and scaled by the VAE's scaling
                  factor; DDPM noise, epsilon prediction; captions dropped with probability
                  caption_dropout are replaced by the empty prompt's embedding (see text.py);
                  on ragged text (only real tokens stored) the U-Net attends with the token mask
                  (encoder_attention_mask; the empty prompt's for dropped captions);
                  gradient clipping; AdamW; linear warm-up; EMA of the weights.
  every log_every the losses since the last row are reduced over processes in one call (so the
                  GPU is not synchronised every step), checked for NaN/inf (the run stops naming
                  the step, keeping the last good checkpoint), and written as a metrics row.
  checkpoints     every checkpoint_every steps, atomically, by rank 0 (see checkpoint.py);
                  `resume=True` continues from the run directory's last one, so a killed job
                  re-run ends with the same weights as one never interrupted (bitwise on CPU).
"""

from __future__ import annotations

import contextlib
import copy
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffscale import atomic, attempts, hardware, models, provenance, timing
from diffscale.errors import ConfigError, ModelSpecError
from diffscale.metrics import achieved, cpus_used
from diffscale.train import checkpoint as ckpt_io
from diffscale.train.config import check_run_config, differences, micro_batch, trajectory, trajectory_hash
from diffscale.train.core import checkpoint, compat, guards, launch, precision
from diffscale.train.core.flops import peak_flops
from diffscale.train.core.guards import TrainingError
from diffscale.train.core.meter import Meter, final_loss, metrics_csv, steady_rate
from diffscale.train.data import LatentTextDataset, StepBatches, make_loader
from diffscale.train.diffusion import noise_scheduler, step_noise
from diffscale.train.flops import unet_train_flops_per_sample
from diffscale.train.text import PromptEncoder, as_stored

__all__ = ["Job", "TrainingError", "train", "prepare", "fit"]


@dataclass
class Job:
    """One training run: what to train (run config), on which embeddings, and where to write."""

    run_config: dict
    images_dir: Path
    text_dir: Path
    out_dir: Path
    resume: bool = False  # continue from out_dir/resume/last.pt when it fits this run config
    resume_from: Path | None = None  # continue from this checkpoint; another architecture is an error
    stop_after: int | None = None  # end this invocation after this step (checkpointed)
    earlier_tries: list = field(default_factory=list)  # the job's tries before this one (diffscale.attempts)
    start_checkpoint: Path | None = field(default=None, repr=False)  # decided by prepare()


def train(run_config: dict, images_dir, text_dir, out_dir, *, resume: bool = False, resume_from=None,
          stop_after: int | None = None, earlier_tries: list | None = None) -> dict | None:
    """Run one training job; return rank 0's summary (None on other torchrun ranks, and when
    the invocation stopped before the last step). `earlier_tries`: the job's tries before this
    one (diffscale.attempts), which its run time counts."""
    job = Job(check_run_config(run_config), Path(images_dir), Path(text_dir), atomic.check_folder_path(out_dir), resume,
              Path(resume_from) if resume_from else None, stop_after, list(earlier_tries or []))
    world = int(job.run_config["run"]["gpus"])
    how = launch.mode(world, "run.gpus")
    placement = prepare(job, verbose=launch.env_rank() in (None, 0))
    summary = launch.run(fit, world, placement.device, job)
    if how != "spawn":
        return summary
    finished = job.stop_after is None or job.stop_after >= job.run_config["train"]["steps"]
    return provenance.read_results(job.out_dir, "training run") if finished else None


def _say(message: str, on: bool = True) -> None:
    if on:
        print(message, flush=True)


# --- checks before any process starts -----------------------------------------------------------

def prepare(job: Job, verbose: bool = True) -> hardware.Placement:
    """Fail fast with one line: hardware, data, model/data fit, and which checkpoint to start from."""
    cfg = job.run_config
    run = cfg["run"]
    placement = hardware.resolve(cfg, run["hw"], int(run["gpus"]))
    data = LatentTextDataset(job.images_dir, job.text_dir)
    _say(f"{data.unmatched_captions} captions of {job.text_dir} have no latent in {job.images_dir}; skipped",
         verbose and data.unmatched_captions > 0)
    arch = models.architecture_config(models.parse_spec("unet", cfg["models"]["unet"]))
    check_data_fits(arch, data)
    job.start_checkpoint = _choose_checkpoint(job, arch, verbose)
    return placement


def check_data_fits(arch: dict, data: LatentTextDataset) -> None:
    channels, height, width = data.latent_shape
    if arch["in_channels"] != channels:
        raise ModelSpecError(f"models.unet: in_channels {arch['in_channels']} but the latents of "
                             f"{data.images.run_dir} have {channels} channels")
    if arch["cross_attention_dim"] != data.hidden_shape[-1]:
        raise ModelSpecError(f"models.unet: cross_attention_dim {arch['cross_attention_dim']} but the text "
                             f"embeddings of {data.text.run_dir} have width {data.hidden_shape[-1]}")
    factor = 2 ** (len(arch["block_out_channels"]) - 1)
    if height % factor or width % factor:
        raise ModelSpecError(f"models.unet: {len(arch['block_out_channels'])} resolution levels need latents "
                             f"divisible by {factor}; {data.images.run_dir} has {height}x{width}")


def _choose_checkpoint(job: Job, arch: dict, verbose: bool) -> Path | None:
    cfg, steps = job.run_config, job.run_config["train"]["steps"]
    own = ckpt_io.resume_path(job.out_dir)
    other = job.resume_from is not None and Path(job.resume_from).resolve() != own.resolve()
    if other and job.resume and own.is_file():
        raise ConfigError(f"--resume and --resume-from {job.resume_from}: {own} is this run's own checkpoint, which "
                          f"a run from the other would replace; give one of the two")
    if job.resume_from is not None:
        ckpt = ckpt_io.load(job.resume_from)
        full_arch = ckpt_io.full_unet_config(arch)
        changed = ckpt_io.architecture_differences(ckpt["unet_config"], full_arch)
        if changed:
            key = changed[0]
            raise ModelSpecError(
                f"{job.resume_from}: a U-Net of another size than models.unet "
                f"({models.parse_spec('unet', cfg['models']['unet']).label}): {key} is "
                f"{ckpt['unet_config'].get(key)!r} in the checkpoint, {full_arch.get(key)!r} in the config")
        if ckpt["step"] > steps:
            raise ConfigError(f"{job.resume_from}: already at step {ckpt['step']}, past train.steps {steps}")
        diffs = differences(trajectory(ckpt["run_config"]), trajectory(cfg))
        _say(f"resuming from {job.resume_from} at step {ckpt['step']}"
             + (f"; settings changed: {', '.join(diffs)}" if diffs else ""), verbose)
        return job.resume_from
    path = own
    if not job.resume or not path.is_file():
        return None
    ckpt = ckpt_io.load(path)
    if ckpt.get("trajectory_hash") != trajectory_hash(cfg):
        diffs = differences(trajectory(ckpt["run_config"]), trajectory(cfg))
        _say(f"not resuming: {path} was made with other settings ({', '.join(diffs)}); starting over", verbose)
        return None
    if ckpt["step"] > steps:
        _say(f"not resuming: {path} is at step {ckpt['step']}, past train.steps {steps}; starting over", verbose)
        return None
    _say(f"resuming from {path} at step {ckpt['step']}", verbose)
    return path


# --- one process --------------------------------------------------------------------------------

def fit(ctx: launch.Context, job: Job) -> dict | None:
    """The loop of one process: setup, restore, train_step per step, save; rank 0's summary at the end."""
    import torch

    fit_start = time.perf_counter()
    cfg, train = job.run_config, job.run_config["train"]
    steps, batch, accum, micro = train["steps"], train["batch_size"], train["grad_accum"], micro_batch(cfg)
    precision.allow_tf32(ctx.device_type, train["tf32"])
    torch.manual_seed(cfg["seed"] + ctx.rank)  # only stray randomness (e.g. dropout) uses the global generators
    s = setup(ctx, job)
    start_step, rows, segments = restore(s, job.start_checkpoint, ctx.rank)
    model = ctx.wrap(s.unet, gradient_as_bucket_view=True)
    end_step = min(steps, job.stop_after) if job.stop_after is not None else steps
    order = StepBatches(len(s.data), batch, accum, ctx.world, ctx.rank, cfg["seed"], start_step, end_step)
    batches = iter(make_loader(s.data, order, train["loader_workers"], pin_memory=ctx.device_type == "cuda"))

    run_start = time.perf_counter()
    # set-up: from the job script's start (interpreter, imports, spawn; else this call's) to the first step
    job_start = timing.job_started_at()
    setup_s = time.time() - job_start if job_start is not None else run_start - fit_start
    segment = {"start_step": start_step, "host": socket.gethostname(), "world": ctx.world, "device": s.device_name,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "setup_s": setup_s,
               "job_started_at": job_start}  # matches this invocation's try record (diffscale.attempts)
    ran = lambda done: segments + [{**segment, "end_step": done, "seconds": time.perf_counter() - run_start}]  # noqa: E731
    meter = Meter(rows, batch, ctx.world, s.flops_per_sample, s.peak, start_step,
                  elapsed_before=sum(seg["seconds"] for seg in segments), verbose=ctx.is_main)
    last_good = guards.LastGood(job.start_checkpoint, start_step)
    ctx.say(f"rank 0/{ctx.world} on {s.device_name}: steps {start_step}..{end_step} of {steps}, global batch {batch} "
            f"= {ctx.world} x {accum} x {micro}, {cfg['run']['precision']}, {len(s.data)} captions"
            + (f", {s.flops_per_sample / 1e9:.3g} GFLOP/sample" if s.flops_per_sample else ""))

    saved = False
    with guards.out_of_memory(ctx.device, micro, f"train.batch_size {batch} / ({ctx.world} processes x grad_accum "
                              f"{accum})", "lower train.batch_size or raise grad_accum "
                              "(train.grad_accum, or the run's matrix entry's)"):
        for step in range(start_step, end_step):
            meter.add(*train_step(ctx, s, model, batches, step, meter))
            done = step + 1
            checkpoint_now = done % train["checkpoint_every"] == 0 or done == end_step
            if done % train["log_every"] == 0 or checkpoint_now:
                meter.row(done, ctx.mean(meter.pending_losses()).tolist(), last_good)
            if checkpoint_now:
                save(ctx, s, done, rows, ran(done), last_good)
                meter.restart()  # checkpoint I/O is not part of the measured rate
                saved = True
    if not saved and job.start_checkpoint != ckpt_io.resume_path(job.out_dir):
        save(ctx, s, end_step, rows, ran(end_step), last_good)  # nothing left to train; the directory needs one

    if end_step < steps or not ctx.is_main:
        return None
    return finish(job, s, rows, ran(end_step))


@dataclass
class Setup:
    """What one process trains with, built by `setup`."""

    job: Job
    data: LatentTextDataset
    unet: Any
    ema: Any
    null: Any  # the empty prompt's embedding, for dropped captions
    schedule: Any  # the DDPM noise schedule
    optimizer: Any
    lr_schedule: Any
    prec: precision.Precision
    flops_per_sample: int | None
    device_name: str
    peak: float | None
    null_mask: Any = None  # the empty prompt's token mask, when the text is ragged (attend with masks)


def setup(ctx: launch.Context, job: Job) -> Setup:
    """Data, the U-Net and its EMA, the empty prompt, the noise and lr schedules, AdamW, precision, FLOPs."""
    import torch

    cfg, train = job.run_config, job.run_config["train"]
    data = LatentTextDataset(job.images_dir, job.text_dir)
    unet = models.build("unet", cfg["models"]["unet"], seed=cfg["seed"], device=ctx.device)
    unet.train()
    ema = copy.deepcopy(unet).requires_grad_(False).eval()
    encoder = PromptEncoder(cfg["models"]["text_encoder"], device=ctx.device)
    null = as_stored(encoder.null_embedding(), data.text_dtype)  # as precise as the captions it stands in for
    null_mask = encoder.null_mask() if data.text_mask else None
    del encoder
    schedule = noise_scheduler()
    optimizer = compat.adamw(unet.parameters(), train["lr"], train["weight_decay"], fused=ctx.device_type == "cuda")
    warmup = train["warmup_steps"]
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_factor(step, warmup))
    prec = precision.Precision(cfg["run"]["precision"], ctx.device_type)
    flops_per_sample = unet_train_flops_per_sample(unet, data.latent_shape, data.hidden_shape, ctx.device)
    device_name = ctx.device_name
    peak = peak_flops(device_name, cfg["run"]["precision"], train["tf32"]) if ctx.device_type == "cuda" else None
    return Setup(job, data, unet, ema, null, schedule, optimizer, lr_schedule, prec, flops_per_sample, device_name,
                 peak, null_mask)


def restore(s: Setup, path: Path | None, rank: int) -> tuple[int, list[dict], list[dict]]:
    """Load weights, EMA, optimizer, scaler, lr schedule and this process's RNG states from `path`;
    the step, metrics rows and segments so far (0, [], [] without a checkpoint)."""
    if path is None:
        return 0, [], []
    state = ckpt_io.load(path)
    ckpt_io.check_weights(state["model"], s.unet, str(path), "models.unet")
    s.unet.load_state_dict(state["model"])
    s.ema.load_state_dict(state["ema"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.prec.load_state_dict(state["scaler"])
    s.lr_schedule.load_state_dict(state["lr_scheduler"])
    checkpoint.restore_rng(state["rng"], rank)
    return state["step"], state["metrics"], state["segments"]


def train_step(ctx: launch.Context, s: Setup, model, batches, step: int, meter: Meter):
    """One optimizer step over grad_accum micro-batches: (loss on the device, grad norm or None, lr)."""
    cfg, train = s.job.run_config, s.job.run_config["train"]
    batch, accum = train["batch_size"], train["grad_accum"]
    draws = step_noise(cfg["seed"], step, batch, s.data.latent_shape, s.schedule.config.num_train_timesteps,
                       train["caption_dropout"], ctx.device)
    step_loss = 0.0
    for micro_step in range(accum):
        with meter.waiting():
            micro_batch_data = next(batches)
        sync = model.no_sync() if ctx.ddp and micro_step < accum - 1 else contextlib.nullcontext()
        with sync:
            loss = loss_of(ctx, s, model, micro_batch_data, draws, micro_step) / accum
            s.prec.backward(loss)
        step_loss = step_loss + loss.detach()
    grad_norm = s.prec.clip(s.unet.parameters(), s.optimizer, train["grad_clip"])
    lr = s.lr_schedule.get_last_lr()[0]
    s.prec.step(s.optimizer)
    s.optimizer.zero_grad(set_to_none=True)
    s.lr_schedule.step()
    update_ema(s.ema, s.unet, step, train["ema_decay"])
    return step_loss, grad_norm, lr


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The lr's share at optimiser step `step` (0-based): linear up to 1 over `warmup_steps`, the
    first step already at 1 / warmup_steps (a step at lr 0 would be wasted)."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def update_ema(ema, model, step: int, ema_decay: float) -> None:
    """EMA of the weights after optimiser step `step`, its decay warmed up as (1 + step) / (10 +
    step) up to `ema_decay` (diffusers' EMAModel warm-up): early on the average follows the model
    instead of staying near the random start, so a short run's EMA samples mean something."""
    decay = min(ema_decay, (1 + step) / (10 + step))
    compat.lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def loss_of(ctx: launch.Context, s: Setup, model, batch: dict, draws: dict, micro_step: int):
    """This process's loss on its slice of the global batch at `micro_step`."""
    import torch
    import torch.nn.functional as F

    train = s.job.run_config["train"]
    micro, per_micro_step = micro_batch(s.job.run_config), train["batch_size"] // train["grad_accum"]
    start = micro_step * per_micro_step + ctx.rank * micro
    at = slice(start, start + micro)
    mean = batch["latent_mean"].to(ctx.device, non_blocking=True).float()
    std = batch["latent_std"].to(ctx.device, non_blocking=True).float()
    hidden = batch["hidden"].to(ctx.device, non_blocking=True).float()
    latents = (mean + std * draws["latent_eps"][at]) * s.data.scaling_factor
    hidden = torch.where(draws["drop"][at, None, None], s.null, hidden)
    mask = None
    if s.null_mask is not None:  # ragged text: padded positions are zeros that must carry no meaning
        mask = torch.where(draws["drop"][at, None], s.null_mask, batch["mask"].to(ctx.device, non_blocking=True).long())
    noise, timesteps = draws["noise"][at], draws["timesteps"][at]
    noisy = s.schedule.add_noise(latents, noise, timesteps)
    with s.prec.autocast():
        prediction = model(noisy, timesteps, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
    return F.mse_loss(prediction.float(), noise)


def save(ctx: launch.Context, s: Setup, done: int, rows: list[dict], segments: list[dict],
         last_good: guards.LastGood) -> None:
    """Gather every process's RNG state (a collective); rank 0 writes the checkpoint atomically."""
    rng = checkpoint.gather_rng(ctx)
    if not ctx.is_main:
        return
    cfg = s.job.run_config
    path = ckpt_io.save(ckpt_io.resume_path(s.job.out_dir), {
        "step": done, "model": s.unet.state_dict(), "ema": s.ema.state_dict(),
        "optimizer": s.optimizer.state_dict(), "scaler": s.prec.state_dict(),
        "lr_scheduler": s.lr_schedule.state_dict(), "rng": rng,
        "run_config": cfg, "trajectory_hash": trajectory_hash(cfg),
        "unet_config": dict(s.unet.config), "noise_schedule": dict(s.schedule.config),
        "null_embedding": s.null.detach().cpu(), "text_mask": s.null_mask is not None,
        "text_dtype": s.data.text_dtype,
        "latent_shape": list(s.data.latent_shape),
        "text_shape": list(s.data.hidden_shape), "scaling_factor": s.data.scaling_factor,
        "flops_per_sample": s.flops_per_sample, "metrics": rows, "segments": segments,
    })
    last_good.update(path, done)


# --- outputs ------------------------------------------------------------------------------------

def _held(segment: dict) -> float:
    """A segment's seconds from its script's start to its last checkpoint: set-up and training."""
    return segment["seconds"] + segment.get("setup_s", 0.0)


def finish(job: Job, s: Setup, rows: list[dict], segments: list[dict]) -> dict:
    """Write config.json, metrics.csv and run.json, then move the last checkpoint into place."""
    import torch

    cfg, out, data = job.run_config, job.out_dir, s.data
    world = int(cfg["run"]["gpus"])
    rate = steady_rate(rows)
    tflops, mfu = achieved(s.flops_per_sample, rate, s.peak, world)
    unet_spec = models.parse_spec("unet", cfg["models"]["unet"])
    threads = torch.get_num_threads() if next(s.unet.parameters()).device.type == "cpu" else None
    summary = {
        **cfg["run"],
        "device": s.device_name,
        "cpus": cpus_used(world, threads),  # a CPU run's processes x threads: what its efficiency divides by
        "samples_per_s": rate,
        "samples_per_s_per_device": rate / world,
        "final_loss": final_loss(rows),
        "tflops": tflops,
        "mfu": mfu,
        "flops_per_sample": s.flops_per_sample,
        "params": sum(p.numel() for p in s.unet.parameters()),
        "model": unet_spec.label,
        "steps": cfg["train"]["steps"],
        "global_batch": cfg["train"]["batch_size"],
        "micro_batch": micro_batch(cfg),
        "train_time_s": sum(s["seconds"] for s in segments),
        "resumed": len(segments) > 1,
        # what the run held its devices for, its failed and stopped tries included (Snakemake's
        # benchmark file keeps only the last); each segment's set-up (data, models, restore) and
        # training is the lower bound where the tries' records do not cover every invocation
        **attempts.run_time(job.earlier_tries, [(seg.get("job_started_at"), _held(seg)) for seg in segments[:-1]],
                            this_s=_held(segments[-1])),
    }
    data_info = {"images": str(job.images_dir), "text": str(job.text_dir), "samples": len(data),
                 "unmatched_captions": data.unmatched_captions, "latent_shape": list(data.latent_shape),
                 "text_shape": list(data.hidden_shape), "scaling_factor": data.scaling_factor,
                 "text_mask": data.text_mask}
    atomic.write_json(out / "config.json", {**cfg, "data": data_info})
    atomic.write_text(out / "metrics.csv", metrics_csv(rows))
    provenance.write_run_json(
        out / "run.json", config_slice=cfg,
        models=[{**unet_spec.describe(), "params": summary["params"]},
                models.parse_spec("text_encoder", cfg["models"]["text_encoder"]).describe()],
        results=summary, data=data_info, segments=segments,
        timings={"train_s": summary["train_time_s"], "steady_samples_per_s": rate})
    checkpoint.finalize(out)  # the run's last act: see core/checkpoint.py
    _say(f"done: {rate:.2f} samples/s, final loss {summary['final_loss']:.4f}; wrote {out}")
    return summary
