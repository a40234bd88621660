"""The DDPM training loop of study 3, run for a measured window of steps, on the shared core.

Ho et al.'s CIFAR-10 recipe: epsilon prediction, 1000 linear betas 1e-4..0.02, Adam, gradient
clipping, EMA of the weights (dropout is the model spec's: config/full.yaml sets Ho's 0.1; their
5,000-step learning-rate warm-up is left out: a window measures speed, not a whole run). One window is `warmup_steps` untimed steps (torch.compile compiles
here) and then `steps` timed ones in `repeats` blocks. The core's meter (diffscale.train.core)
writes a row at step 1, at the end of the warm-up and at the end of every block; each row
averages the losses over processes and reads them back, which synchronises the device, so a
block's time is real device time while the CPU runs ahead inside the block; the step time is the
median block's.

  launch      diffscale.train.core.launch: gpus = 1 here; gpus > 1 one process per device
              (mp.spawn or torchrun; NCCL on GPUs, gloo on CPUs, where `gpus` counts processes).
              The batch is per device: the global batch is batch x gpus (the study's setting).
  precision   core.precision: fp32 (TF32 off), tf32 (fp32 with TF32 on), bf16 autocast, fp16
              autocast + GradScaler; cudnn.benchmark on GPUs.
  each step   a uint8 batch from the loader (time spent waiting for it is metered), converted on
              the device; timesteps and noise drawn for the global batch from (seed, step) and
              sliced per process, so every variant trains on the same draws; the loss, backward,
              clipping, Adam (fused on GPUs), EMA every `ema_every` steps (one fused lerp).
  guards      core.guards: a NaN/inf loss names its step; out of memory names the batch.
Time to first step runs from the model on the device (built, not yet compiled or wrapped in DDP)
to the end of the first optimizer step: DDP set-up, compilation, the loader's start, the first
kernels' autotuning. Returns rank 0's measurements: steps/s, images/s, time to first step,
warm-up overhead, peak memory (device memory on GPUs, peak RSS on CPUs), MFU where the GPU's peak
is known, the loss of every step, the data wait, and the DataLoader worker ids seen in the batches.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from diffscale import atomic, hardware, models
from diffscale.ddpm import data as ddata
from diffscale.errors import UserError
from diffscale.train.core import compat, flops, guards, launch, precision
from diffscale.train.core.meter import Meter

NUM_TIMESTEPS = 1000
BETAS = (1e-4, 0.02)
TrainingError = guards.TrainingError
ADVICE = "Lower ddpm.lr or ddpm.grad_clip, or train in bf16 instead of fp16"


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

def uses_tf32(name: str) -> bool:
    """Whether a study precision lets fp32 matmuls and convolutions use TF32 tensor cores: all but
    `fp32`, the study's TF32-off reference (autocast leaves some ops in fp32)."""
    return name != "fp32"


def precision_for(name: str, device_type: str) -> precision.Precision:
    """The core's Precision; tf32 is fp32 arithmetic with TF32 tensor cores, fp32 has them off."""
    precision.allow_tf32(device_type, uses_tf32(name))
    return precision.Precision("fp32" if name == "tf32" else name, device_type)


def peak_for(device_name: str, name: str) -> float | None:
    """The device's peak FLOP/s at a study precision, for MFU: fp32 runs with TF32 off are judged
    against the plain fp32 peak, not the TF32 one (8x higher on an A100)."""
    return flops.peak_flops(device_name, name, tf32=uses_tf32(name))


def build_model(spec: dict, seed: int, device, channels_last: bool):
    import torch

    model = models.build("ddpm_unet", spec, seed=seed, device=device).train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def predict(net, x, t):
    """Noise prediction of a diffusers UNet2DModel, or of any model returning a tensor."""
    out = net(x, t)
    return out if not hasattr(out, "sample") else out.sample


def denoising_loss(net, schedule: Schedule, x0, noise, t, prec):
    """Ho et al.'s simple objective: the model sees x_0 noised to step t and predicts the noise
    (epsilon), scored by MSE in fp32."""
    import torch.nn.functional as F

    with prec.autocast():
        prediction = predict(net, schedule.add_noise(x0, noise, t), t)
    return F.mse_loss(prediction.float(), noise)


def maybe_compile(model, mode: str, backend: str):
    """torch.compile the module in place (nn.Module.compile): parameter names stay as they are, so
    EMA copies (ours, ema-pytorch's) and DDP see the same module; returns it."""
    if mode == "off":
        return model
    extra = {} if mode == "default" or backend != "inductor" else {"mode": mode}
    model.compile(backend=backend, **extra)
    return model


def adam(params, rc: dict, device_type: str):
    import torch

    d = rc["ddpm"]
    return torch.optim.Adam(params, lr=d["lr"], betas=tuple(d["adam_betas"]), fused=device_type == "cuda")


# --- measuring ------------------------------------------------------------------------------------

class Window:
    """Which steps end a metrics row: step 1, the warm-up's end, every block's end."""

    def __init__(self, ddpm: dict):
        self.warmup = ddpm["warmup_steps"]
        self.block = max(1, ddpm["steps"] // ddpm["repeats"])
        self.total = self.warmup + self.block * max(1, min(ddpm["repeats"], ddpm["steps"]))

    def row_due(self, done: int) -> bool:
        return done in (1, self.warmup) or (done > self.warmup and (done - self.warmup) % self.block == 0)

    def summary(self, rows: list[dict], losses: list[float], global_batch: int) -> dict:
        """The window's figures from the meter's rows (samples/s, data-wait fraction, elapsed)."""
        at = {r["step"]: r for r in rows}
        blocks = [r for r in rows if r["step"] > self.warmup]
        step_s = statistics.median(global_batch / r["samples_per_s"] for r in blocks)
        block_s = [self.block * global_batch / r["samples_per_s"] for r in blocks]
        wait_s = sum(r["data_wait_frac"] * b for r, b in zip(blocks, block_s))
        warmup_s = at[self.warmup]["elapsed_s"]
        mfus = [r["mfu"] for r in blocks if r["mfu"] is not None]
        return {
            "step_s": step_s, "steps_per_s": 1.0 / step_s, "images_per_s": global_batch / step_s,
            "time_to_first_step_s": at[1]["elapsed_s"], "warmup_s": warmup_s,
            "overhead_s": warmup_s - self.warmup * step_s, "block_s": block_s,
            "block_spread": max(block_s) / min(block_s),  # 1 = steady; well above: disturbed, see the report
            "data_wait_s_per_step": wait_s / (self.total - self.warmup), "data_wait_frac": wait_s / sum(block_s),
            "mfu": statistics.median(mfus) if mfus else None,
            "loss_end": statistics.fmean(losses[-self.block:]), "losses": losses, "run_steps": self.total - self.warmup,
        }


def peak_memory_mb(device) -> tuple[float, str]:
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20, "device"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss"


def update_ema(ema_params: list, params: list, step: int, d: dict) -> bool:
    """After every `ema_every`-th optimiser step (`step` counts from 0), move the EMA weights toward
    the model's by 1 - `ema_decay` in one fused lerp: ema-pytorch's `update_every` cadence, without its
    warm-up (the window is a timing, not a model to keep). Returns whether it updated."""
    if (step + 1) % d["ema_every"]:
        return False
    compat.lerp_(ema_params, params, 1.0 - d["ema_decay"])
    return True


def flops_per_sample(model, device) -> int | None:
    """3 x a counted batch-1 forward (core.flops)."""
    import torch

    forward = flops.forward_flops(model, torch.zeros(1, 3, ddata.SIZE, ddata.SIZE, device=device),
                                  torch.zeros(1, dtype=torch.long, device=device))
    return None if forward is None else 3 * forward


def fit(ctx: launch.Context, rc: dict, cache, source, model=None, profiler=None, result_path=None) -> dict:
    """Train for one measured window; every process runs this; rank 0 returns (and writes) the result."""
    import torch

    d, v, seed = rc["ddpm"], rc["variant"], rc["seed"]
    batch, device, global_batch = v["batch"], ctx.device, v["batch"] * ctx.world
    prec = precision_for(v["precision"], ctx.device_type)
    window = Window(d)
    if ctx.device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # this window's peak, not an earlier one's in this process
    dataset = ddata.dataset_for(d, cache, source)
    torch.manual_seed(seed + ctx.rank)  # dropout (Ho's 0.1 in the full study) draws from the global generators
    if model is None:
        model = build_model(rc["model"], seed, device, d["channels_last"])
    fps = flops_per_sample(model, device)
    peak = peak_for(ctx.device_name, v["precision"]) if ctx.device_type == "cuda" else None
    rows, losses, workers_seen = [], [], set()
    meter = Meter(rows, global_batch, ctx.world, fps, peak, 0, verbose=ctx.is_main)  # the clock starts here
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    params, ema_params = list(model.parameters()), list(ema.parameters())
    optimizer = adam(params, rc, ctx.device_type)
    net = ctx.wrap(maybe_compile(model, v["compile"], d["compile_backend"]), gradient_as_bucket_view=True)
    schedule = Schedule(device)
    sampler = ddata.StepSampler(len(dataset), batch, ctx.world, ctx.rank, seed, 0, window.total)
    batches = iter(ddata.make_loader(dataset, sampler, v["workers"], pin_memory=ctx.device_type == "cuda"))
    mine = slice(ctx.rank * batch, (ctx.rank + 1) * batch)
    cuda_graphs = v["compile"] == "reduce-overhead" and ctx.device_type == "cuda"
    last_good = guards.LastGood()

    with guards.out_of_memory(device, batch, f"ddpm batch {batch} per device", "lower ddpm.batch_sizes"):
        for step in range(window.total):
            if step == window.warmup and profiler is not None:
                profiler.start()
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are done with
            with meter.waiting():
                item = next(batches)
            workers_seen.update(item["workers"].tolist())
            x0 = ddata.to_model_input(item["images"], device, d["channels_last"])
            t, noise = step_draws(seed, step, global_batch, device)
            t, noise = t[mine], noise[mine]
            loss = denoising_loss(net, schedule, x0, noise, t, prec)
            prec.backward(loss)
            grad_norm = prec.clip(params, optimizer, d["grad_clip"])
            prec.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
            update_ema(ema_params, params, step, d)
            meter.add(loss.detach(), grad_norm, d["lr"])
            if profiler is not None and step >= window.warmup:
                profiler.step()
            if window.row_due(step + 1):
                step_losses = ctx.mean(meter.pending_losses().float()).tolist()  # synchronises the device
                guards.check_finite(step_losses, step + 1, last_good, ADVICE)
                losses += step_losses
                meter.row(step + 1, step_losses, last_good)
    if profiler is not None:
        profiler.stop()
    result = window.summary(rows, losses, global_batch)
    result["peak_mem_mb"], result["peak_mem_kind"] = peak_memory_mb(device)
    result["workers_seen"] = sorted(ctx.gather(sorted(workers_seen))[0])
    result |= {"params": sum(p.numel() for p in params), "flops_per_sample": fps, "world": ctx.world,
               "device": ctx.device_name if ctx.device_type == "cuda" else "cpu", "device_detail": ctx.device_name,
               "threads": torch.get_num_threads()}
    if ctx.is_main and result_path is not None:
        atomic.write_json(result_path, result)
    return result


# --- processes ----------------------------------------------------------------------------------

COMPILE_CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


@contextlib.contextmanager
def cold_compile_cache(mode: str):
    """For a compiled window, a fresh, empty Inductor and Triton cache (inherited by spawned
    processes), removed afterwards: the FX-graph, AOTAutograd, autotuning and kernel caches persist
    under /tmp/torchinductor_<user> by default, so an earlier job on the same node would otherwise
    make compile time (and the break-even) look shorter than a first compile's."""
    if mode == "off":
        yield None
        return
    saved = {name: os.environ.get(name) for name in COMPILE_CACHE_VARS}
    folder = tempfile.mkdtemp(prefix="diffscale-compile-cache-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    os.environ["TRITON_CACHE_DIR"] = os.path.join(folder, "triton")
    try:
        yield folder
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def run(rc: dict, cache, source=None, model=None, profiler=None) -> dict:
    """Measure one window as the run config says: here (gpus 1, or one torchrun rank), or in `gpus`
    spawned processes, whose rank 0 hands its result back through a file; a compiled window
    compiles cold (`cold_compile_cache`)."""
    world = int(rc["variant"]["gpus"])
    placement = hardware.resolve(rc, rc["hw"], world)
    ddata.dataset_for(rc["ddpm"], cache, source)  # a data error is one line before any process starts
    with cold_compile_cache(rc["variant"]["compile"]):
        if launch.mode(world, "ddpm gpus") != "spawn":
            return launch.run(fit, world, placement.device, rc, cache, source, model, profiler)
        if profiler is not None or model is not None:
            raise UserError("the profiler and an explicit model run in one process (gpus 1)")
        with tempfile.TemporaryDirectory(prefix="diffscale-ddpm-") as tmp:
            path = Path(tmp) / "result.json"
            launch.run(fit, world, placement.device, rc, str(cache), source, None, None, str(path))
            return json.loads(path.read_text())
