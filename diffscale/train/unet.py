"""Training a text-conditioned U-Net on cached latents and caption embeddings.

One loop, in the style of nanoGPT and DiT's train.py, run by one process per device:

  launch          `train()` runs in this process (1 device), under torchrun (DDP from the
                  environment: RANK, LOCAL_RANK, WORLD_SIZE), or spawns `gpus` processes with
                  torch.multiprocessing.spawn. NCCL on GPUs, gloo on CPUs; on a CPU hardware key
                  the `gpus` count is the number of gloo processes.
  each step       the global batch (train.batch_size) is split into grad_accum micro-batches per
                  process; the gradients of all but the last are not synchronised (no_sync); one
                  autocast context (bf16, or fp16 with a GradScaler); the latent is sampled from
                  the stored distribution (mean + std * eps) and scaled by the VAE's scaling
                  factor; DDPM noise, epsilon prediction; captions dropped with probability
                  caption_dropout are replaced by the empty prompt's embedding (see text.py);
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
import csv
import io
import math
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffscale import atomic, hardware, models, provenance
from diffscale.errors import ConfigError, DataError, HardwareError, ModelSpecError, UserError
from diffscale.train import checkpoint as ckpt_io
from diffscale.train import compat
from diffscale.train.config import check_run_config, differences, micro_batch, trajectory, trajectory_hash
from diffscale.train.data import LatentTextDataset, StepBatches, make_loader
from diffscale.train.diffusion import noise_scheduler, step_noise
from diffscale.train.flops import peak_flops, unet_train_flops_per_sample
from diffscale.train.text import PromptEncoder

AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
METRICS_COLUMNS = ["step", "loss", "lr", "grad_norm", "samples_per_s", "tflops", "mfu", "data_wait_frac",
                   "elapsed_s", "warmup"]


class TrainingError(UserError):
    """The run cannot go on: the loss diverged, or a batch does not fit in memory."""


ERRORS = {cls.__name__: cls for cls in (UserError, ConfigError, DataError, ModelSpecError, HardwareError,
                                         TrainingError)}


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
    start_checkpoint: Path | None = field(default=None, repr=False)  # decided by prepare()


# --- launching ----------------------------------------------------------------------------------

def train(run_config: dict, images_dir, text_dir, out_dir, *, resume: bool = False, resume_from=None,
          stop_after: int | None = None) -> dict | None:
    """Run one training job; return rank 0's summary (None on other torchrun ranks)."""
    job = Job(check_run_config(run_config), Path(images_dir), Path(text_dir), Path(out_dir), resume,
              Path(resume_from) if resume_from else None, stop_after)
    world = int(job.run_config["run"]["gpus"])
    env_world = os.environ.get("WORLD_SIZE")
    if env_world is not None and "LOCAL_RANK" in os.environ:  # torchrun
        if int(env_world) != world:
            raise ConfigError(f"torchrun started {env_world} processes but the run asks for {world} (run.gpus)")
        rank = int(os.environ["RANK"])
        prepare(job, verbose=rank == 0)
        return _process(job, rank, int(os.environ["LOCAL_RANK"]), world)
    prepare(job, verbose=True)
    if world == 1:
        return _process(job, 0, 0, 1)
    _spawn(job, world)
    finished = job.stop_after is None or job.stop_after >= job.run_config["train"]["steps"]
    return read_summary(job.out_dir) if finished else None


def _spawn(job: Job, world: int) -> None:
    import torch.multiprocessing as mp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _say(message: str, on: bool = True) -> None:
    if on:
        print(message, flush=True)


# --- checks before any process starts -----------------------------------------------------------

def prepare(job: Job, verbose: bool = True) -> None:
    """Fail fast with one line: hardware, data, model/data fit, and which checkpoint to start from."""
    cfg = job.run_config
    run = cfg["run"]
    hardware.resolve(cfg, run["hw"], int(run["gpus"]))
    data = LatentTextDataset(job.images_dir, job.text_dir)
    _say(f"{data.unmatched_captions} captions of {job.text_dir} have no latent in {job.images_dir}; skipped",
         verbose and data.unmatched_captions > 0)
    arch = models.architecture_config(models.parse_spec("unet", cfg["models"]["unet"]))
    check_data_fits(arch, data)
    job.start_checkpoint = _choose_checkpoint(job, arch, verbose)


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
    path = ckpt_io.resume_path(job.out_dir)
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

def _process(job: Job, rank: int, local_rank: int, world: int) -> dict | None:
    import torch
    import torch.distributed as dist

    cfg = job.run_config
    placement = hardware.resolve(cfg, cfg["run"]["hw"], int(cfg["run"]["gpus"]))
    device = placement.device_for(local_rank)
    if placement.device == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = cfg["train"]["tf32"]
        torch.backends.cudnn.allow_tf32 = cfg["train"]["tf32"]
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(max(1, provenance.usable_cpus() // world))
    if world > 1:
        backend = "nccl" if placement.device == "cuda" else "gloo"
        compat.init_process_group(backend, rank, world, torch.device(device) if placement.device == "cuda" else None)
    try:
        return fit(job, rank, world, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


def fit(job: Job, rank: int, world: int, device: str) -> dict | None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    cfg, train = job.run_config, job.run_config["train"]
    precision, seed = cfg["run"]["precision"], cfg["seed"]
    steps, batch, accum = train["steps"], train["batch_size"], train["grad_accum"]
    micro = micro_batch(cfg)
    is_main, ddp = rank == 0, world > 1
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    torch.manual_seed(seed + rank)  # only stray randomness (e.g. dropout) uses the global generators

    data = LatentTextDataset(job.images_dir, job.text_dir)
    unet = models.build("unet", cfg["models"]["unet"], seed=seed, device=device)
    unet.train()
    ema = copy.deepcopy(unet).requires_grad_(False).eval()
    encoder = PromptEncoder(cfg["models"]["text_encoder"], device=device)
    null = encoder.null_embedding()
    del encoder
    schedule = noise_scheduler()
    optimizer = compat.adamw(unet.parameters(), train["lr"], train["weight_decay"], fused=device_type == "cuda")
    warmup = train["warmup_steps"]
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    scaler = compat.grad_scaler(device_type, enabled=precision == "fp16")
    flops_per_sample = unet_train_flops_per_sample(unet, data.latent_shape, data.hidden_shape, device)
    device_name = torch.cuda.get_device_name(device) if device_type == "cuda" else provenance.cpu_model()
    peak = peak_flops(device_name, precision, train["tf32"]) if device_type == "cuda" else None

    start_step, rows, segments = 0, [], []
    if job.start_checkpoint is not None:
        state = ckpt_io.load(job.start_checkpoint)
        ckpt_io.check_weights(state["model"], unet, str(job.start_checkpoint), "models.unet")
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        lr_schedule.load_state_dict(state["lr_scheduler"])
        if rank < len(state["rng"]):
            ckpt_io.set_rng_state(state["rng"][rank])
        start_step, rows, segments = state["step"], state["metrics"], state["segments"]
        del state

    model = DistributedDataParallel(unet, device_ids=[device] if device_type == "cuda" else None,
                                    gradient_as_bucket_view=True) if ddp else unet
    end_step = min(steps, job.stop_after) if job.stop_after is not None else steps
    sampler = StepBatches(len(data), batch, accum, world, rank, seed, start_step, end_step)
    batches = iter(make_loader(data, sampler, train["loader_workers"], pin_memory=device_type == "cuda"))
    amp = precision in AMP_DTYPES
    amp_dtype = getattr(torch, AMP_DTYPES.get(precision, "float32"))
    scale = data.scaling_factor

    per_micro_step = batch // accum  # samples of one micro-step over all processes

    def loss_of(batch: dict, draws: dict, micro_step: int):
        """This process's loss on its slice of the global batch at `micro_step`."""
        at = slice(micro_step * per_micro_step + rank * micro, micro_step * per_micro_step + (rank + 1) * micro)
        mean = batch["latent_mean"].to(device, non_blocking=True).float()
        std = batch["latent_std"].to(device, non_blocking=True).float()
        hidden = batch["hidden"].to(device, non_blocking=True).float()
        latents = (mean + std * draws["latent_eps"][at]) * scale
        hidden = torch.where(draws["drop"][at, None, None], null, hidden)
        noise, timesteps = draws["noise"][at], draws["timesteps"][at]
        noisy = schedule.add_noise(latents, noise, timesteps)
        with torch.autocast(device_type, dtype=amp_dtype, enabled=amp):
            prediction = model(noisy, timesteps, encoder_hidden_states=hidden).sample
        return F.mse_loss(prediction.float(), noise)

    segment = {"start_step": start_step, "host": socket.gethostname(), "world": world, "device": device_name,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    run_start = time.perf_counter()
    meter = Meter(rows, batch, world, flops_per_sample, peak, start_step,
                  elapsed_before=sum(s["seconds"] for s in segments), verbose=is_main)
    last_good = (job.start_checkpoint, start_step) if job.start_checkpoint else (None, None)
    _say(f"rank 0/{world} on {device_name}: steps {start_step}..{end_step} of {steps}, global batch {batch} "
         f"= {world} x {accum} x {micro}, {precision}, {len(data)} captions"
         + (f", {flops_per_sample / 1e9:.3g} GFLOP/sample" if flops_per_sample else ""), is_main)

    def save_checkpoint(done: int) -> None:
        """Gather every process's RNG state; rank 0 writes the checkpoint atomically."""
        nonlocal last_good
        rng = [None] * world
        if ddp:
            dist.all_gather_object(rng, ckpt_io.rng_state())
        else:
            rng = [ckpt_io.rng_state()]
        if is_main:
            path = ckpt_io.resume_path(job.out_dir)
            ckpt_io.save(path, {
                "step": done, "model": unet.state_dict(), "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "lr_scheduler": lr_schedule.state_dict(), "rng": rng,
                "run_config": cfg, "trajectory_hash": trajectory_hash(cfg),
                "unet_config": dict(unet.config), "noise_schedule": dict(schedule.config),
                "null_embedding": null.detach().cpu(), "latent_shape": list(data.latent_shape),
                "text_shape": list(data.hidden_shape), "scaling_factor": scale,
                "flops_per_sample": flops_per_sample, "metrics": rows,
                "segments": segments + [{**segment, "end_step": done, "seconds": time.perf_counter() - run_start}],
            })
            last_good = (path, done)
        meter.restart()  # checkpoint I/O is not part of the measured rate

    ema_params, params = list(ema.parameters()), list(unet.parameters())
    saved = False
    try:
        for step in range(start_step, end_step):
            draws = step_noise(seed, step, batch, data.latent_shape, schedule.config.num_train_timesteps,
                               train["caption_dropout"], device)
            step_loss = 0.0
            for micro_step in range(accum):
                with meter.waiting():
                    micro_batch_data = next(batches)
                sync = model.no_sync() if ddp and micro_step < accum - 1 else contextlib.nullcontext()
                with sync:
                    loss = loss_of(micro_batch_data, draws, micro_step) / accum
                    scaler.scale(loss).backward()
                step_loss = step_loss + loss.detach()
            grad_norm = None
            if train["grad_clip"] > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, train["grad_clip"])
            lr = lr_schedule.get_last_lr()[0]
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr_schedule.step()
            decay = min(train["ema_decay"], (1 + step) / (10 + step))
            compat.lerp_(ema_params, params, 1.0 - decay)
            meter.add(step_loss, grad_norm, lr)

            done = step + 1
            checkpoint_now = done % train["checkpoint_every"] == 0 or done == end_step
            if done % train["log_every"] == 0 or checkpoint_now:
                losses = meter.pending_losses()
                if ddp:
                    dist.all_reduce(losses)
                    losses /= world
                meter.row(done, losses.tolist(), last_good)
            if checkpoint_now:
                save_checkpoint(done)
                saved = True
    except compat.oom_errors():
        raise TrainingError(
            f"out of memory on {device} with micro-batch {micro} (train.batch_size {batch} / ({world} processes x "
            f"grad_accum {accum})); lower train.batch_size or raise train.grad_accum") from None
    if not saved and job.start_checkpoint != ckpt_io.resume_path(job.out_dir):
        save_checkpoint(end_step)  # nothing left to train, but the run directory needs its checkpoint

    if end_step < steps or not is_main:
        return None
    return finish(job, rows, segments + [{**segment, "end_step": end_step,
                                          "seconds": time.perf_counter() - run_start}],
                  data, flops_per_sample, device_name, peak, unet)


class Meter:
    """The metrics rows. Losses stay on the device between rows, so the loop synchronises once per
    row (not per step); each row checks every step's loss for NaN/inf before anything is saved."""

    def __init__(self, rows: list[dict], batch: int, world: int, flops_per_sample: int, peak: float | None,
                 start_step: int, elapsed_before: float, verbose: bool):
        self.rows, self.batch, self.world = rows, batch, world
        self.flops_per_sample, self.peak, self.verbose = flops_per_sample, peak, verbose
        self.elapsed_before, self.started = elapsed_before, time.perf_counter()
        self.last_step, self.first = start_step, True
        self._losses, self._norms, self._lr = [], [], None
        self.restart()

    def restart(self) -> None:
        self.clock, self.data_wait = time.perf_counter(), 0.0

    @contextlib.contextmanager
    def waiting(self):
        start = time.perf_counter()
        yield
        self.data_wait += time.perf_counter() - start

    def add(self, loss, grad_norm, lr: float) -> None:
        self._losses.append(loss)
        if grad_norm is not None:
            self._norms.append(grad_norm)
        self._lr = lr

    def pending_losses(self):
        """This process's losses since the last row, one per step, as one tensor to reduce."""
        import torch

        return torch.stack(self._losses)

    def row(self, done: int, losses: list[float], last_good: tuple) -> dict:
        """Check the (process-averaged) losses and append a row; raise TrainingError on NaN/inf."""
        import torch

        for i, value in enumerate(losses):
            if not math.isfinite(value):
                path, at = last_good
                kept = f"the last good checkpoint (step {at}) is kept at {path}" if path else "no checkpoint was written"
                raise TrainingError(f"loss is {value} at step {done - len(losses) + i + 1}; stopped ({kept}). Lower "
                                    "train.lr, raise train.warmup_steps or train.grad_clip, or train in bf16 instead "
                                    "of fp16")
        seconds = time.perf_counter() - self.clock
        rate = (done - self.last_step) * self.batch / seconds
        norms = torch.stack(self._norms).tolist() if self._norms else []
        tflops, mfu = achieved(self.flops_per_sample, rate, self.peak, self.world)
        row = {"step": done, "loss": statistics.fmean(losses), "lr": self._lr,
               "grad_norm": statistics.fmean(norms) if norms else None, "samples_per_s": rate,
               "tflops": tflops, "mfu": mfu,
               "data_wait_frac": self.data_wait / seconds,
               "elapsed_s": self.elapsed_before + time.perf_counter() - self.started, "warmup": int(self.first)}
        self.rows.append(row)
        _say(f"step {done:>6}  loss {row['loss']:.4f}  lr {row['lr']:.3g}  {rate:8.2f} samples/s"
             + (f"  MFU {mfu:.1%}" if mfu is not None else f"  {tflops:.3g} TFLOP/s" if tflops is not None else "")
             + f"  data wait {row['data_wait_frac']:.1%}", self.verbose)
        self._losses, self._norms = [], []
        self.last_step, self.first = done, False
        self.restart()
        return row


# --- outputs ------------------------------------------------------------------------------------

def achieved(flops_per_sample: int | None, samples_per_s: float, peak: float | None,
             devices: int) -> tuple[float | None, float | None]:
    """Achieved TFLOP/s and MFU (model FLOPs over the devices' peak); None where unknown."""
    if not flops_per_sample:
        return None, None
    flops = flops_per_sample * samples_per_s
    return flops / 1e12, (flops / (peak * devices) if peak else None)


def steady_rate(rows: list[dict]) -> float:
    """Samples/s after warm-up: the median over metrics rows, each process start's first row left out."""
    rates = [r["samples_per_s"] for r in rows if not r["warmup"]] or [r["samples_per_s"] for r in rows]
    return statistics.median(rates)


def final_loss(rows: list[dict]) -> float:
    """Mean loss of the last tenth of the metrics rows (at least the last row)."""
    tail = rows[-max(1, len(rows) // 10):]
    return statistics.fmean(r["loss"] for r in tail)


def metrics_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRICS_COLUMNS})
    return buf.getvalue()


def finish(job: Job, rows: list[dict], segments: list[dict], data: LatentTextDataset, flops_per_sample: int,
           device_name: str, peak: float | None, unet) -> dict:
    """Write config.json, metrics.csv and run.json, then move the last checkpoint into place."""
    cfg, out = job.run_config, job.out_dir
    world = int(cfg["run"]["gpus"])
    rate = steady_rate(rows)
    tflops, mfu = achieved(flops_per_sample, rate, peak, world)
    unet_spec = models.parse_spec("unet", cfg["models"]["unet"])
    summary = {
        **cfg["run"],
        "device": device_name,
        "samples_per_s": rate,
        "samples_per_s_per_device": rate / world,
        "final_loss": final_loss(rows),
        "tflops": tflops,
        "mfu": mfu,
        "flops_per_sample": flops_per_sample,
        "params": sum(p.numel() for p in unet.parameters()),
        "model": unet_spec.label,
        "steps": cfg["train"]["steps"],
        "global_batch": cfg["train"]["batch_size"],
        "micro_batch": micro_batch(cfg),
        "train_time_s": sum(s["seconds"] for s in segments),
        "resumed": len(segments) > 1,
    }
    data_info = {"images": str(job.images_dir), "text": str(job.text_dir), "samples": len(data),
                 "unmatched_captions": data.unmatched_captions, "latent_shape": list(data.latent_shape),
                 "text_shape": list(data.hidden_shape), "scaling_factor": data.scaling_factor}
    atomic.write_json(out / "config.json", {**cfg, "data": data_info})
    atomic.write_text(out / "metrics.csv", metrics_csv(rows))
    provenance.write_run_json(
        out / "run.json", config_slice=cfg,
        models=[{**unet_spec.describe(), "params": summary["params"]},
                models.parse_spec("text_encoder", cfg["models"]["text_encoder"]).describe()],
        results=summary, data=data_info, segments=segments,
        timings={"train_s": summary["train_time_s"], "steady_samples_per_s": rate})
    resume = ckpt_io.resume_path(out)
    os.replace(resume, out / ckpt_io.FINAL_FILE)  # the run's last act: see checkpoint.py
    with contextlib.suppress(OSError):
        resume.parent.rmdir()
    _say(f"done: {rate:.2f} samples/s, final loss {summary['final_loss']:.4f}; wrote {out}")
    return summary


def read_summary(out_dir: str | Path) -> dict[str, Any]:
    import json

    path = Path(out_dir) / "run.json"
    try:
        return json.loads(path.read_text())["results"]
    except (OSError, KeyError, ValueError):
        raise DataError(f"{path}: missing or unreadable; the run did not finish") from None
