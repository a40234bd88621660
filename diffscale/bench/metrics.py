"""Scaling arithmetic shared by every study: speedup, efficiency, Karp–Flatt serial fraction."""

from __future__ import annotations

import math


def speedup(t_base: float, t_parallel: float) -> float:
    return t_base / t_parallel


def efficiency(t_base: float, t_parallel: float, workers: int) -> float:
    return speedup(t_base, t_parallel) / workers


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
