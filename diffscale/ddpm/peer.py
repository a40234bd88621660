"""The study's own tool as the peer: denoising-diffusion-pytorch's GaussianDiffusion training step.

Installing it. Its wheel requires torchvision, pytorch-fid and scipy, which would replace or add
to our PyTorch; the training step needs none of them. It is installed with `--no-deps` plus its
pure-python needs einops and ema-pytorch (`pip install --no-deps denoising-diffusion-pytorch==2.3.4
ema-pytorch==0.8.3 einops==0.8.2`, the `peer` extra; accelerate is ours already).

Importing it (`import_peer`). The package's `__init__` imports the Trainer's module and several
others; that module imports `torchvision` (transforms, utils: the Trainer's image Dataset and
sample grids) and `scipy.optimize` (only for `immiscible=True`) at the top. So:
  1. the package is located with importlib.util.find_spec (which runs no code) and a bare
     package module with the real `__path__` is put in sys.modules under its name, so importing
     `denoising_diffusion_pytorch.denoising_diffusion_pytorch` loads only that module (and its
     `attend` and `version` siblings), never the package `__init__`;
  2. its other imports (einops, ema_pytorch, accelerate, tqdm) are imported first; then, for
     exactly the import of that module, `torchvision`, `torchvision.transforms`, `torchvision.utils`,
     `scipy` and `scipy.optimize` are stand-in modules when (and only when) they are not
     installed; any use of them raises PeerUnavailable. The stand-ins are removed from sys.modules
     right after the import, so nothing else ever sees them.
What is used: `Unet` and `GaussianDiffusion`, and the Trainer's step re-stated below line by line
(the Trainer itself needs its torchvision Dataset).

Like with like. Its defaults differ from Ho et al.'s (objective pred_v, sigmoid schedule, Adam
betas (0.9, 0.99), EMA 0.995 every 10 steps from step 100, mixed precision off). The peer runs
with objective pred_noise and the linear 1000-step schedule (Ho's betas 1e-4..0.02), the same model,
batch, precision, learning rate, Adam betas, gradient clipping and EMA interval as our side; its
step is the Trainer's: Accelerate's autocast, backward and clip_grad_norm_, `loss.item()` every
step, Adam (PyTorch's default implementation), ema-pytorch's EMA. `settings` in each row says so.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

from diffscale.errors import UserError

PACKAGE = "denoising_diffusion_pytorch"
MODULE = f"{PACKAGE}.{PACKAGE}"
INSTALL = "pip install --no-deps denoising-diffusion-pytorch==2.3.4 ema-pytorch==0.8.3 einops==0.8.2"
STAND_INS = ("torchvision", "torchvision.transforms", "torchvision.utils", "scipy", "scipy.optimize")


class PeerUnavailable(UserError):
    """The peer cannot run here; the rule records this as the row's status."""


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def missing(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise PeerUnavailable(f"{name}.{attr} is not installed; the peer's training step does not need it")

    module.__getattr__ = missing  # PEP 562: module-level __getattr__
    return module


def import_peer():
    """The peer's `denoising_diffusion_pytorch.denoising_diffusion_pytorch` module (see above)."""
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable(f"denoising-diffusion-pytorch is not installed ({INSTALL})")
    for needed in ("einops", "ema_pytorch", "accelerate", "tqdm", "PIL"):
        if importlib.util.find_spec(needed) is None:
            raise PeerUnavailable(f"{needed} is not installed; the peer needs it ({INSTALL})")
    # Its other imports first, so their own import-time probes never meet a stand-in.
    for needed in ("einops", "einops.layers.torch", "ema_pytorch", "accelerate", "tqdm.auto"):
        importlib.import_module(needed)
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__, package.__file__ = spec, spec.origin
        sys.modules[PACKAGE] = package
    absent = {top for top in {n.split(".")[0] for n in STAND_INS}
              if top not in sys.modules and importlib.util.find_spec(top) is None}
    added = {name: _stand_in(name) for name in STAND_INS if name.split(".")[0] in absent}
    sys.modules.update(added)
    for name, module in added.items():  # `from torchvision import transforms` reads the attribute
        parent, _, child = name.rpartition(".")
        if parent in added:
            setattr(added[parent], child, module)
    if "scipy.optimize" in added:
        added["scipy.optimize"].linear_sum_assignment = None  # immiscible=True only; never used here
    try:
        return importlib.import_module(MODULE)
    except ImportError as exc:
        raise PeerUnavailable(f"cannot import {MODULE}: {exc}") from None
    finally:
        for name in added:
            sys.modules.pop(name, None)


def peer_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("denoising-diffusion-pytorch")
    except metadata.PackageNotFoundError:
        return None


def as_peer_unet(unet):
    """Our diffusers UNet2DModel behind the interface GaussianDiffusion expects of its model."""
    import torch

    class PeerInterface(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.unet = inner
            self.channels = inner.config.in_channels
            self.out_dim = inner.config.out_channels
            self.self_condition = False

        def forward(self, x, time, x_self_cond=None):
            return self.unet(x, time).sample

    return PeerInterface(unet)


def peer_unet(dim: int = 64, dim_mults=(1, 2, 4, 8)):
    """The peer's own Unet (dim 64, mults 1,2,4,8: 35.7M parameters, the study's model)."""
    return import_peer().Unet(dim=dim, dim_mults=tuple(dim_mults))


MIXED = {"fp32": "no", "tf32": "no", "bf16": "bf16", "fp16": "fp16"}


def settings_text(rc: dict) -> str:
    d, v = rc["ddpm"], rc["variant"]
    return (f"objective eps, linear betas 1e-4..0.02 x1000, batch {v['batch']}, {v['precision']}, compile "
            f"{v['compile']} ({d['compile_backend']}), Adam lr {d['lr']:g} betas {tuple(d['adam_betas'])}, clip "
            f"{d['grad_clip']:g}, EMA {d['ema_decay']:g} every {d['ema_every']} (peer: ema-pytorch warm-up, from "
            f"step 100), ours: fused Adam on GPUs, no per-step sync, cudnn.benchmark; peer: Accelerate, loss.item() "
            f"per step")


def window(rc: dict, dataset, device: str, model=None) -> dict:
    """The peer's Trainer step for one window of rc's settings, timed by the same meter as ours."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from diffscale.ddpm import data as ddata
    from diffscale.ddpm import loop
    from diffscale.train.core.guards import LastGood
    from diffscale.train.core.meter import Meter

    peer = import_peer()
    from ema_pytorch import EMA

    d, v, seed = rc["ddpm"], rc["variant"], rc["seed"]
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if device_type == "cuda":  # the same TF32 setting as ours; cudnn.benchmark stays PyTorch's default
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = loop.uses_tf32(v["precision"])
        torch.backends.cudnn.benchmark = False
        torch.cuda.reset_peak_memory_stats(device)
    win, rows, losses = loop.Window(d), [], []
    torch.manual_seed(seed)
    own = model is None
    if own:
        model = loop.build_model(rc["model"], seed, device, channels_last=False)
    meter = Meter(rows, v["batch"], 1, None, None, 0, verbose=False)  # the clock starts here
    # the U-Net is compiled in place, as ours is (the same graph: each gets an empty on-disk cache, but
    # Dynamo's and Inductor's in-process caches may still serve the second compile)
    model = loop.maybe_compile(model, v["compile"], d["compile_backend"])
    model = as_peer_unet(model) if own else model
    diffusion = peer.GaussianDiffusion(model, image_size=ddata.SIZE, timesteps=loop.NUM_TIMESTEPS,
                                       objective="pred_noise", beta_schedule="linear")
    AcceleratorState._reset_state(True)  # one Accelerator per window; the state is process-wide
    accelerator = Accelerator(mixed_precision=MIXED[v["precision"]], cpu=device_type == "cpu")
    opt = torch.optim.Adam(diffusion.parameters(), lr=d["lr"], betas=tuple(d["adam_betas"]))
    ema = EMA(diffusion, beta=d["ema_decay"], update_every=d["ema_every"])
    ema.to(device)
    diffusion, opt = accelerator.prepare(diffusion, opt)
    sampler = ddata.StepSampler(len(dataset), v["batch"], 1, 0, seed, 0, win.total)
    batches = iter(ddata.make_loader(dataset, sampler, v["workers"], pin_memory=device_type == "cuda"))
    for step in range(win.total):  # Trainer.train, one step
        with meter.waiting():
            item = next(batches)
        data = (item["images"].float() / 255.0).to(device)
        diffusion.train()
        with accelerator.autocast():
            loss = diffusion(data)
            total_loss = loss.item()  # the Trainer's progress bar reads it every step
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(diffusion.parameters(), d["grad_clip"])
        opt.step()
        opt.zero_grad()
        ema.update()
        meter.add(loss.detach(), None, d["lr"])
        if win.row_due(step + 1):
            step_losses = meter.pending_losses().float().tolist()
            losses += step_losses
            meter.row(step + 1, step_losses, LastGood())
    del total_loss
    result = win.summary(rows, losses, v["batch"])
    result["peak_mem_mb"], result["peak_mem_kind"] = loop.peak_memory_mb(device)
    result["params"] = sum(p.numel() for p in model.parameters())
    result["device"] = torch.cuda.get_device_name(device) if device_type == "cuda" else "cpu"
    result["workers_seen"] = []
    AcceleratorState._reset_state(True)
    return result


def compare(rc: dict, cache, source=None) -> tuple[list[dict], dict]:
    """Ours and the peer on rc's settings, same process and data; rows with the ratio to the peer."""
    from diffscale import hardware
    from diffscale.ddpm import data as ddata
    from diffscale.ddpm import loop
    from diffscale.ddpm.sweeps import MEASURED, table_row

    placement = hardware.resolve(rc, rc["hw"], 1)
    dataset = ddata.dataset_for(rc["ddpm"], cache, source)
    ours = loop.run(rc, cache, source)
    row_ours = {**table_row(rc, ours, ""), "impl": "ours", "settings": settings_text(rc), "status": "ok"}
    try:
        with loop.cold_compile_cache(rc["variant"]["compile"]):  # its own empty on-disk cache, as ours had
            theirs = window(rc, dataset, placement.device_for(0))
    except (PeerUnavailable, ImportError, RuntimeError, ValueError, AssertionError) as exc:
        status = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"the peer could not run: {status}", flush=True)
        row_peer = {**row_ours, **dict.fromkeys(MEASURED), "impl": "peer", "status": f"not run: {status}"}
        row_ours["ratio_to_peer"] = None
        return [row_ours, row_peer], {"ours": ours, "peer": None, "peer_status": status}
    row_peer = {**table_row(rc, theirs, ""), "impl": "peer", "settings": settings_text(rc), "status": "ok",
                "model": f"{row_ours['model']} via GaussianDiffusion ({peer_version()})"}
    row_ours["ratio_to_peer"] = ours["steps_per_s"] / theirs["steps_per_s"]
    row_peer["ratio_to_peer"] = 1.0
    return [row_ours, row_peer], {"ours": ours, "peer": theirs, "peer_status": "ok"}
