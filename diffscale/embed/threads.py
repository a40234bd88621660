"""Thread policies: how many compute threads each worker runs, and what it actually ran with.

Backends start their workers with different thread counts (checked on this stack): spawned
multiprocessing workers take PyTorch's default of one thread per core; joblib's loky sets
OMP_NUM_THREADS to cores / n_jobs; dask's nanny sets OMP_NUM_THREADS=1 — but all three keep an
OMP_NUM_THREADS the job already has, and Snakemake sets it to the job's threads, so under
Snakemake (and SLURM) every naive worker runs with all the job's cores. N workers that each keep
all cores oversubscribe the machine, which is why the original study saw CPU workers slower than
one CPU.

  pinned  threads per worker = cores / workers (at least 1), set inside the worker
  naive   the backend's default, left alone: reproduces the original result

Either way the worker records `torch.get_num_threads()` from the thread that computes (OpenMP's
thread count belongs to the calling thread: dask computes in a pool thread, not the main one).
"""

from __future__ import annotations

import os

from diffscale.errors import ConfigError

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_worker(policy: str, cores: int, workers: int) -> int | None:
    """The thread count a worker should set, or None to leave the backend's default."""
    if policy == "naive":
        return None
    if policy == "pinned":
        return max(1, cores // workers)
    raise ConfigError(f"embed policy {policy!r} is not one of pinned, naive")


def apply(threads: int | None) -> None:
    """Set the compute thread count in the calling thread (None: leave the default)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


def record() -> dict:
    """The thread count the calling thread computes with, and the env that shaped the default."""
    import torch

    info = {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
    info["env"] = {name: os.environ[name] for name in THREAD_ENV if name in os.environ}
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["affinity"] = os.cpu_count()
    return info
