"""Counted model FLOPs and the GPUs' peak FLOP/s: the two halves of MFU.

FLOPs are counted, not estimated: `forward_flops` runs one forward pass of any model under
`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention); a training step
costs about 3 forwards (the backward pass about twice the forward). Builds of PyTorch without the
counter (1.13, the K80 env) report None, and hence no MFU. A loop computes its FLOPs per sample
once, at setup, and gives it with `peak_flops(device_name, precision)` to `meter.Meter`:

    flops_per_sample = 3 * forward_flops(model, *one_sample_inputs)   # None: no counter
    peak = peak_flops(ctx.device_name, "bf16") if ctx.device_type == "cuda" else None
"""

from __future__ import annotations

# Dense peak TFLOP/s per CUDA device (no structured sparsity), from NVIDIA's data sheets.
# `tf32` is what fp32 training reaches with TF32 tensor cores; GPUs without them run it at fp32
# rate. Matched by substring of torch.cuda.get_device_name(), most specific first.
PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    ("H100", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),  # SXM
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    ("L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0}),
    ("A40", {"fp32": 37.4, "tf32": 74.8, "bf16": 149.7, "fp16": 149.7}),
    ("A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),
    ("V100", {"fp32": 15.7, "tf32": 15.7, "bf16": 15.7, "fp16": 125.0}),
    ("T4", {"fp32": 8.1, "tf32": 8.1, "bf16": 8.1, "fp16": 65.0}),
    ("K80", {"fp32": 4.37, "tf32": 4.37, "bf16": 4.37, "fp16": 4.37}),  # one GK210 (half a board), boost
]


def peak_flops(device_name: str, precision: str, tf32: bool = True) -> float | None:
    """Peak FLOP/s of one device at a training precision, or None when the device is unknown."""
    key = "tf32" if precision == "fp32" and tf32 else precision
    for pattern, peaks in PEAK_TFLOPS:
        if pattern.lower() in device_name.lower():
            return peaks[key] * 1e12
    return None


def train_step_flops(loss_fn, params, *args, **kwargs) -> int | None:
    """FLOPs of one forward and backward of `loss_fn(*args, **kwargs)` as they run (counted: a
    frozen layer's backward computes its input's gradient but not its weight's); the gradients this
    leaves on `params` are cleared. None where PyTorch has no FLOP counter."""
    import torch

    from diffscale.train.core.compat import has_flop_counter

    if not has_flop_counter():
        return None
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:
        loss_fn(*args, **kwargs).backward()
    for param in params:
        param.grad = None
    return int(counter.get_total_flops())


def forward_flops(model, *args, **kwargs) -> int | None:
    """FLOPs of one forward call, counted (None where PyTorch has no FLOP counter)."""
    import torch

    from diffscale.train.core.compat import has_flop_counter

    if not has_flop_counter():
        return None
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*args, **kwargs)
    return int(counter.get_total_flops())
