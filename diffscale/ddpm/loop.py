"""The DDPM training loop of study 3, run for a measured window of steps.

Ho et al.'s CIFAR-10 recipe: epsilon prediction, 1000 linear betas 1e-4..0.02, Adam, gradient
clipping, EMA of the weights. One window is `warmup_steps` untimed steps (torch.compile compiles
here) and then `steps` timed ones in `repeats` blocks; the device is synchronised at each block's
end, so a block's time is real device time while the CPU still runs ahead inside the block; the
step time is the median block time / block length.

  launch      gpus = 1: this process; gpus > 1: one process per device (mp.spawn; NCCL on GPUs,
              gloo on CPUs, where `gpus` counts processes). The batch is per device: the global
              batch is batch x gpus (the study's setting).
  precision   fp32 (TF32 off), tf32, bf16 autocast, fp16 autocast + GradScaler.
  each step   a uint8 batch from the loader (time spent waiting for it is metered), converted on
              the device; timesteps and noise drawn for the global batch from (seed, step) and
              sliced per process, so every variant trains on the same draws; the loss, backward,
              clipping, Adam (fused on GPUs), EMA every `ema_every` steps.
  each block  losses checked for NaN/inf (a TrainingError names the step) and reduced across
              processes; nothing else synchronises the device.
Time to first step runs from the model on the device (built, not yet compiled or wrapped in DDP)
to the end of the first optimizer step: DDP set-up, compilation, the loader's start, the first
kernels' autotuning. Returns rank 0's measurements: steps/s, images/s, time to first step, warm-up overhead, peak
memory (device memory on GPUs, peak RSS on CPUs), the loss of every step, the data wait, and the
DataLoader worker ids seen in the batches.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import socket
import statistics
import time
from pathlib import Path

from diffscale import hardware, models, provenance
from diffscale.ddpm import data as ddata
from diffscale.errors import UserError

NUM_TIMESTEPS = 1000
BETAS = (1e-4, 0.02)
AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class TrainingError(UserError):
    """The window cannot go on: the loss diverged, or a batch does not fit in memory."""


# --- the diffusion process ----------------------------------------------------------------------

class Schedule:
    """Ho et al.'s linear schedule as device tensors: q(x_t | x_0) in two gathers."""

    def __init__(self, device):
        import torch

        betas = torch.linspace(*BETAS, NUM_TIMESTEPS, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.sqrt_ac = alphas_cumprod.sqrt().float().to(device)
        self.sqrt_1m_ac = (1.0 - alphas_cumprod).sqrt().float().to(device)

    def add_noise(self, x0, noise, t):
        return self.sqrt_ac[t].view(-1, 1, 1, 1) * x0 + self.sqrt_1m_ac[t].view(-1, 1, 1, 1) * noise


def step_draws(seed: int, step: int, global_batch: int, device):
    """Timesteps and noise of one step for the whole global batch, from (seed, step)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(ddata.step_seed(seed, step + 1_000_003))
    t = torch.randint(0, NUM_TIMESTEPS, (global_batch,), generator=gen, device=device)
    noise = torch.randn((global_batch, 3, ddata.SIZE, ddata.SIZE), generator=gen, device=device)
    return t, noise


# --- precision, model, optimizer ----------------------------------------------------------------

def set_matmul_precision(precision: str, device_type: str) -> None:
    """TF32 on for tf32 (and under autocast, for the ops it leaves in fp32); off for fp32."""
    import torch

    if device_type == "cuda":
        on = precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
        torch.backends.cudnn.benchmark = True


def autocast(precision: str, device_type: str):
    import torch

    if precision not in AMP_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=getattr(torch, AMP_DTYPES[precision]))


def grad_scaler(precision: str, device_type: str):
    import torch

    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")


def build_model(spec: dict, seed: int, device, channels_last: bool):
    import torch

    model = models.build("ddpm_unet", spec, seed=seed, device=device).train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def predict(net, x, t):
    """Noise prediction of a diffusers UNet2DModel, or of any model returning a tensor."""
    out = net(x, t)
    return out if not hasattr(out, "sample") else out.sample


def maybe_compile(net, mode: str, backend: str):
    import torch

    if mode == "off":
        return net
    extra = {} if mode == "default" or backend != "inductor" else {"mode": mode}
    return torch.compile(net, backend=backend, **extra)


def adam(params, rc: dict, device_type: str):
    import torch

    d = rc["ddpm"]
    return torch.optim.Adam(params, lr=d["lr"], betas=tuple(d["adam_betas"]), fused=device_type == "cuda")


# --- measuring ------------------------------------------------------------------------------------

class WindowMeter:
    """Times the window: first step, warm-up, then timed blocks synchronised at their ends."""

    def __init__(self, device, warmup: int, steps: int, repeats: int):
        self.device, self.warmup = device, warmup
        self.block = max(1, steps // repeats)
        self.total = warmup + self.block * max(1, min(repeats, steps))
        self.losses, self.block_s, self.data_wait = [], [], 0.0
        self.workers_seen: set[int] = set()
        self._pending = []
        self.started = time.perf_counter()
        self.first_step_s = self.warmup_s = None

    def sync(self) -> None:
        if str(self.device).startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def waiting(self, step: int):
        start = time.perf_counter()
        yield
        if step >= self.warmup:
            self.data_wait += time.perf_counter() - start

    def step_done(self, step: int, loss, reduce) -> None:
        self._pending.append(loss.detach())
        done = step + 1
        if done == 1:
            self.sync()
            self.first_step_s = time.perf_counter() - self.started
            self._flush(done, reduce)
        if done == self.warmup:
            self.sync()
            self.warmup_s = time.perf_counter() - self.started
            self._flush(done, reduce)
            self._block_start = time.perf_counter()
        elif done > self.warmup and (done - self.warmup) % self.block == 0:
            self.sync()
            now = time.perf_counter()
            self.block_s.append(now - self._block_start)
            self._flush(done, reduce)
            self._block_start = time.perf_counter()

    def _flush(self, done: int, reduce) -> None:
        import torch

        if not self._pending:
            return
        values = reduce(torch.stack(self._pending).float()).tolist()
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise TrainingError(f"loss is {value} at step {done - len(values) + i + 1}; lower ddpm.lr "
                                    "or train in bf16 instead of fp16")
        self.losses += values
        self._pending = []

    def summary(self, global_batch: int, steps_timed: int) -> dict:
        step_s = statistics.median(self.block_s) / self.block
        return {
            "step_s": step_s, "steps_per_s": 1.0 / step_s, "images_per_s": global_batch / step_s,
            "time_to_first_step_s": self.first_step_s, "warmup_s": self.warmup_s,
            "overhead_s": self.warmup_s - self.warmup * step_s, "block_s": self.block_s,
            "data_wait_s_per_step": self.data_wait / steps_timed,
            "data_wait_frac": self.data_wait / sum(self.block_s),
            "loss_end": statistics.fmean(self.losses[-self.block:]), "losses": self.losses,
            "workers_seen": sorted(self.workers_seen), "run_steps": steps_timed,
        }


def peak_memory_mb(device) -> tuple[float, str]:
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20, "device"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss"


def window(rc: dict, rank: int, world: int, device: str, dataset, model=None, profiler=None) -> dict:
    """Train for one measured window; every process runs this, rank 0's result is returned."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    d, v, seed = rc["ddpm"], rc["variant"], rc["seed"]
    batch, precision, device_type = v["batch"], v["precision"], "cuda" if device.startswith("cuda") else "cpu"
    global_batch = batch * world
    set_matmul_precision(precision, device_type)
    torch.manual_seed(seed + rank)
    if model is None:
        model = build_model(rc["model"], seed, device, d["channels_last"])
    meter = WindowMeter(device, d["warmup_steps"], d["steps"], d["repeats"])  # the clock starts here
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    params, ema_params = list(model.parameters()), list(ema.parameters())
    optimizer = adam(params, rc, device_type)
    scaler = grad_scaler(precision, device_type)
    net = DistributedDataParallel(model, device_ids=[device] if device_type == "cuda" else None,
                                  gradient_as_bucket_view=True) if world > 1 else model
    net = maybe_compile(net, v["compile"], d["compile_backend"])
    schedule = Schedule(device)
    sampler = ddata.StepSampler(len(dataset), batch, world, rank, seed, 0, meter.total)
    batches = iter(ddata.make_loader(dataset, sampler, v["workers"], pin_memory=device_type == "cuda"))

    def reduce(values):
        if world > 1:
            dist.all_reduce(values)
            values /= world
        return values

    try:
        for step in range(meter.total):
            if step == meter.warmup and profiler is not None:
                profiler.__enter__()
            with meter.waiting(step):
                item = next(batches)
            meter.workers_seen.update(item["workers"].tolist())
            x0 = ddata.to_model_input(item["images"], device, d["channels_last"])
            t, noise = step_draws(seed, step, global_batch, device)
            t, noise = t[rank * batch:(rank + 1) * batch], noise[rank * batch:(rank + 1) * batch]
            with autocast(precision, device_type):
                prediction = predict(net, schedule.add_noise(x0, noise, t), t)
            loss = F.mse_loss(prediction.float(), noise)
            scaler.scale(loss).backward()
            if d["grad_clip"] > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, d["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if (step + 1) % d["ema_every"] == 0:
                torch._foreach_lerp_(ema_params, params, 1.0 - d["ema_decay"])
            meter.step_done(step, loss, reduce)
            if profiler is not None and step >= meter.warmup:
                profiler.step()
    except torch.OutOfMemoryError:
        raise TrainingError(f"out of memory on {device} at batch {batch} per device; lower ddpm.batch_sizes") from None
    finally:
        if profiler is not None and meter.total > meter.warmup:
            profiler.__exit__(None, None, None)
    result = meter.summary(global_batch, meter.total - meter.warmup)
    result["peak_mem_mb"], result["peak_mem_kind"] = peak_memory_mb(device)
    result["params"] = sum(p.numel() for p in params)
    return result


# --- processes ----------------------------------------------------------------------------------

def run(rc: dict, cache, source=None, model=None, profiler=None) -> dict:
    """Measure one window as the run config says: here, or in `gpus` spawned processes."""
    world = int(rc["variant"]["gpus"])
    placement = hardware.resolve(rc, rc["hw"], world)
    dataset = ddata.dataset_for(rc["ddpm"], cache, source)
    if world == 1:
        return _one(rc, 0, 1, placement, dataset, model, profiler)
    if profiler is not None or model is not None:
        raise UserError("the profiler and an explicit model run in one process (gpus 1)")
    return _spawn(rc, world, placement, dataset)


def _one(rc, rank, world, placement, dataset, model=None, profiler=None) -> dict:
    import torch

    device = placement.device_for(rank)
    if placement.device == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, provenance.usable_cpus() // world))
    result = window(rc, rank, world, device, dataset, model, profiler)
    result["device"] = torch.cuda.get_device_name(device) if placement.device == "cuda" else "cpu"
    result["device_detail"] = result["device"] if placement.device == "cuda" else provenance.cpu_model()
    result["threads"] = torch.get_num_threads()
    return result


def _spawn(rc, world, placement, dataset) -> dict:
    import torch.multiprocessing as mp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    ctx = mp.get_context("spawn")
    results, errors = ctx.SimpleQueue(), ctx.SimpleQueue()
    try:
        mp.spawn(_spawned, args=(world, rc, placement, dataset, results, errors), nprocs=world, join=True)
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        if not errors.empty():
            raise UserError(errors.get()) from None
        raise
    return results.get()


def _spawned(rank, world, rc, placement, dataset, results, errors) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    backend = "nccl" if placement.device == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        result = _one(rc, rank, world, placement, dataset)
        if rank == 0:
            results.put(result)
    except UserError as exc:
        errors.put(str(exc))
        raise SystemExit(exc.exit_code) from None
    finally:
        dist.destroy_process_group()


def default_cache(out_dir: str | Path) -> Path:
    return Path(out_dir) / "cifar-uint8.npy"
