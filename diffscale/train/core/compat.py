"""The few PyTorch features the training uses that older builds lack.

K80 partitions run in envs/train-k80.yaml, whose PyTorch 1.13 is the newest with Kepler (sm_37)
kernels. It has no torch.amp.GradScaler, torch.OutOfMemoryError, torch.load(mmap=...),
_foreach_lerp_, fused AdamW, init_process_group(device_id=...) or FLOP counter; each is used where
present and replaced by its older equivalent (or, for the FLOP count, left out: no MFU) where not.
"""

from __future__ import annotations

import inspect
from functools import lru_cache


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def grad_scaler(device_type: str, enabled: bool):
    import torch

    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device_type == "cuda")


@lru_cache(maxsize=1)
def oom_errors() -> tuple[type[BaseException], ...]:
    import torch

    found = {getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)}
    return tuple(cls for cls in found if cls is not None)


def load_kwargs() -> dict:
    """torch.load arguments: memory-mapped where supported (a large checkpoint's metadata is cheap)."""
    import torch

    return {"mmap": True} if _accepts(torch.load, "mmap") else {}


def lerp_(targets: list, sources: list, weight: float) -> None:
    """targets += weight * (sources - targets), in one fused call where available.

    Outside autograd: the sources are parameters being trained, and an in-place op recorded on
    them would chain one graph node per EMA tensor per step onto the targets (host memory growing
    through the whole run, ~5 GB per process over 20k steps of the full U-Net)."""
    import torch

    with torch.no_grad():
        if hasattr(torch, "_foreach_lerp_"):
            torch._foreach_lerp_(targets, sources, weight)
        else:
            for target, source in zip(targets, sources):
                target.lerp_(source, weight)


def adamw(params, lr: float, weight_decay: float, fused: bool):
    import torch

    extra = {"fused": True} if fused and _accepts(torch.optim.AdamW, "fused") else {}
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **extra)


def init_process_group(backend: str, rank: int, world_size: int, device=None) -> None:
    import torch.distributed as dist

    extra = {"device_id": device} if device is not None and _accepts(dist.init_process_group, "device_id") else {}
    dist.init_process_group(backend, rank=rank, world_size=world_size, **extra)


def has_flop_counter() -> bool:
    try:
        from torch.utils.flop_counter import FlopCounterMode  # noqa: F401
    except ImportError:
        return False
    return True
