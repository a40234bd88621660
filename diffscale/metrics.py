"""Scaling arithmetic shared by every study: speedup, efficiency, Karp–Flatt serial fraction, MFU.

Part of the ground layer: it imports nothing of diffscale, and every study, the training core,
the benchmarks and the report may use it.
"""

from __future__ import annotations

import math


def speedup(t_base: float, t_parallel: float) -> float:
    return t_base / t_parallel


def efficiency(t_base: float, t_parallel: float, workers: float) -> float:
    """Speedup per unit of compute: `workers` is how many times the baseline's compute the run had
    (compute_ratio for the training studies)."""
    return speedup(t_base, t_parallel) / workers


def cpus_used(processes: int, threads: int | None) -> int | None:
    """The CPUs a CPU run computed on: its processes x each one's intra-op threads; None where the
    threads are unknown or do not apply (GPU runs)."""
    return int(processes) * int(threads) if threads else None


def compute_ratio(gpus: int, base_gpus: int, cpus: int | None = None, base_cpus: int | None = None) -> float:
    """How many times its baseline's compute a run had, the denominator of its efficiency: its CPUs
    over the baseline's where both ran on CPUs (2 processes x 1 thread on the 2 CPUs that 1 process
    x 2 threads had is 1x, not 2x), else its GPUs over the baseline's."""
    if cpus and base_cpus:
        return cpus / base_cpus
    return gpus / base_gpus


def karp_flatt(t_base: float, t_parallel: float, workers: int) -> float:
    """Experimentally determined serial fraction e = (1/S - 1/p) / (1 - 1/p); undefined for p = 1.

    e near 0: the work parallelises; e growing with p: overhead (start-up, oversubscription,
    communication) grows with the worker count.
    """
    if workers <= 1:
        return math.nan
    s = speedup(t_base, t_parallel)
    return (1.0 / s - 1.0 / workers) / (1.0 - 1.0 / workers)


def mfu(flops_per_step: float, steps_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the hardware's peak."""
    return flops_per_step * steps_per_s / peak_flops


def achieved(flops_per_sample: float | None, samples_per_s: float, peak_flops: float | None,
             devices: int) -> tuple[float | None, float | None]:
    """Achieved TFLOP/s and MFU over `devices` devices of `peak_flops` each; None where unknown."""
    if not flops_per_sample:
        return None, None
    flops = flops_per_sample * samples_per_s
    return flops / 1e12, (mfu(flops_per_sample, samples_per_s, peak_flops * devices) if peak_flops else None)
