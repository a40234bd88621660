"""Training precision: the autocast context and the GradScaler, for fp32, bf16 and fp16.

Weights and optimizer state stay fp32 (master weights); bf16 and fp16 run the forward pass under
autocast; fp16 also scales the loss with a GradScaler (on CUDA; where PyTorch has no CPU scaler
it is a no-op). A loop holds one `Precision` and uses it around every micro-batch and step:

    prec = Precision("bf16", ctx.device_type)
    precision.allow_tf32(ctx.device_type, cfg["tf32"])      # fp32 matmuls on tensor cores or not
    for micro in micro_batches:
        with prec.autocast():
            loss = model(...)
        prec.backward(loss / accum)
    grad_norm = prec.clip(params, optimizer, max_norm)    # unscales first; None when max_norm <= 0
    prec.step(optimizer)                                   # scaler.step + scaler.update
    checkpoint["scaler"] = prec.state_dict()               # and prec.load_state_dict(...) on resume
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from diffscale import vocab
from diffscale.train.core import compat

AMP_DTYPES = {k: v for k, v in vocab.DTYPES.items() if k != "fp32"}  # fp32 runs without autocast


def allow_tf32(device_type: str, enabled: bool) -> None:
    """On CUDA: TF32 tensor cores for fp32 matmuls and convolutions (or not), and cuDNN autotuning."""
    if device_type != "cuda":
        return
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 matmuls and convolutions without TF32 for the duration (restored after): for values
    that must come out the same wherever they are recomputed (the empty prompt's embedding, which
    a training run with tf32 on stores and generation checks)."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


class Precision:
    """Autocast and loss scaling for one training precision ("fp32", "bf16" or "fp16")."""

    def __init__(self, name: str, device_type: str):
        import torch

        self.name, self.device_type = name, device_type
        self.amp = name in AMP_DTYPES
        self.dtype = getattr(torch, AMP_DTYPES.get(name, "float32"))
        self.scaler = compat.grad_scaler(device_type, enabled=name == "fp16")

    def autocast(self):
        """The forward pass's context: autocast to bf16/fp16, or nothing in fp32."""
        import torch

        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.amp)

    def backward(self, loss) -> None:
        self.scaler.scale(loss).backward()

    def clip(self, params, optimizer, max_norm: float):
        """Unscale the gradients and clip their global norm; the norm (a tensor), or None when
        max_norm <= 0 (no clipping)."""
        if max_norm <= 0:
            return None
        import torch

        self.scaler.unscale_(optimizer)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def step(self, optimizer) -> None:
        """The optimizer step (skipped by the scaler when fp16 gradients overflowed), then the
        scale update."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state)
