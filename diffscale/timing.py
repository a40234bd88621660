"""Timing helpers: warm-up, device synchronisation, median of repeats, phases timed apart.

Part of the ground layer (imports nothing of diffscale): the studies, the training core and the
benchmarks time phases with `PhaseTimer` and repeated calls with `measure`.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Iterator


JOB_STARTED_ENV = "DIFFSCALE_JOB_STARTED_AT"


def process_started() -> float:
    """Epoch seconds when this process started (interpreter and imports included: what a scheduler
    bills from). On Linux from the kernel's clock ticks (10 ms): psutil's create_time adds the boot
    time, which /proc gives in whole seconds, so it can be up to a second early."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, after "pid (comm)"
            since_boot = float(uptime.read().split()[0])
        return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # no /proc (macOS)
        import psutil

        return psutil.Process().create_time()


def mark_job_start() -> None:
    """Called by a job's command-line script: records when its process started (process_started)
    where the processes it spawns (DDP ranks) find it."""
    os.environ[JOB_STARTED_ENV] = repr(process_started())


def job_started_at() -> float | None:
    """Epoch seconds when this job's script started (mark_job_start), or None when the code was
    called in-process (a test, a notebook)."""
    value = os.environ.get(JOB_STARTED_ENV)
    return float(value) if value else None


def synchronize(device: str | None = None) -> None:
    if device and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class PhaseTimer:
    """Accumulates wall time per named phase: `with timer.phase("compute"): ...`."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device: str | None = None) -> dict:
    """Median (and spread) of `repeats` timed calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "warmup": warmup,
    }
