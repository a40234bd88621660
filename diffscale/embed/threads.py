"""How a run uses its N CPUs: processes × threads per policy, the job's own CPU pinning, and what
each worker actually ran with.

A CPU scaling run named `w{N}` runs on exactly N CPUs: SLURM gives it `cpus_per_task = N`
(diffscale.resources), and a local job pins itself to N of the cores it may use
(`os.sched_setaffinity`, inherited by every worker process it starts). A run whose N exceeds the
usable cores cannot have N CPUs: it keeps them all and is marked `oversubscribed` in its timing
and table, and is left out of efficiency claims. The N CPUs are taken one per physical core
before any SMT sibling, and the run records how many physical cores they were (`physical_cores`):
below N, hyper-threads shared cores, and the table and findings say so.

On those N CPUs (the baseline of every speedup is `serial-pinned-w1`: 1 process × 1 thread):

  pinned   N processes × 1 thread each (set inside the worker)
  naive    N processes × the default threads of a process on N CPUs (N): the original study's
           oversubscription. Backends start workers with different defaults (spawned
           multiprocessing workers: one thread per core they may use; loky: cores / n_jobs; dask's
           nanny: 1) but all keep an OMP_NUM_THREADS the job has, so the job sets the thread
           variables to N, as Snakemake does for a job's threads: every naive worker runs with all
           N, in the pipeline and in `bench embed`'s bare process alike.
  intraop  1 process × N threads (PyTorch's intra-op parallelism; runs on the serial backend)

On the gpu backend `pinned` means one process per GPU with the job's CPUs shared among them.

Either way the worker records `torch.get_num_threads()` from the thread that computes (OpenMP's
thread count belongs to the calling thread: dask computes in a pool thread, not the main one)
and the size of its CPU affinity.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from diffscale.vocab import POLICIES, one_of

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Layout:
    """Processes and threads per process of a run on `cpus` CPUs."""

    policy: str
    cpus: int
    processes: int
    threads: int | None  # None: the backend's default (naive)


def layout(policy: str, cpus: int, backend: str = "multiprocessing", workers: int | None = None) -> Layout:
    """How `policy` uses `cpus` CPUs. On the gpu backend `workers` (GPUs) processes share the CPUs."""
    one_of(policy, POLICIES, "embed: policy")
    if backend == "gpu":
        return Layout(policy, cpus, workers or 1, max(1, cpus // (workers or 1)))
    if policy == "intraop":
        return Layout(policy, cpus, 1, cpus)
    if policy == "naive":
        return Layout(policy, cpus, cpus, None)
    return Layout(policy, cpus, cpus, 1)


def usable_cores() -> list[int]:
    """The cores this process may run on (SLURM's cgroup/affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API
        return list(range(os.cpu_count() or 1))


TOPOLOGY = "/sys/devices/system/cpu/cpu{}/topology"


def physical_core(cpu: int) -> tuple[int, int]:
    """(package, core) of a logical CPU, from Linux's topology files; SMT siblings (hyper-threads)
    share it. A CPU the files do not describe (no sysfs: macOS, some containers) is its own core."""
    base = Path(TOPOLOGY.format(cpu))
    try:
        return int((base / "physical_package_id").read_text()), int((base / "core_id").read_text())
    except (OSError, ValueError):
        return (-1, cpu)


def spread(cores: list[int]) -> list[int]:
    """`cores` in the order a job takes them: one logical CPU of each physical core first, then
    their SMT siblings, so a run on N CPUs gets N physical cores whenever the machine has them
    (siblings share one core's execution units, so two pinned workers on them slow each other
    down, which would pass for a scaling loss). Numbering differs between machines (siblings adjacent,
    0/1, or half the machine apart, 0/16); this does not depend on it."""
    taken: dict[tuple[int, int], int] = {}
    order = []
    for cpu in sorted(cores):
        core = physical_core(cpu)
        order.append((taken.get(core, 0), cpu))
        taken[core] = taken.get(core, 0) + 1
    return [cpu for _, cpu in sorted(order)]


def physical_cores(cpus: list[int]) -> int:
    return len({physical_core(cpu) for cpu in cpus})


@contextmanager
def thread_env_kept() -> Iterator[None]:
    """The thread variables (THREAD_ENV) as they were once the context ends, whatever it set."""
    env = {name: os.environ.get(name) for name in THREAD_ENV}
    try:
        yield
    finally:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def pinned_job(cpus: int) -> Iterator[dict]:
    """`pin_job` for the duration of a run, then this process's affinity and thread variables as
    they were (a run in a test or the bench's process leaves it unchanged)."""
    before = usable_cores()
    with thread_env_kept():
        try:
            yield pin_job(cpus)
        finally:
            if hasattr(os, "sched_setaffinity") and usable_cores() != before:
                os.sched_setaffinity(0, before)


@contextmanager
def workers_elsewhere(cpus: int) -> Iterator[dict]:
    """The allocation of a run whose workers have CPUs of their own outside this job (dask workers
    as SLURM jobs, or joining a running scheduler): nothing here is pinned or capped, since this
    job only schedules; what each worker had it records from inside (affinity, threads)."""
    yield {"cpus": cpus, "usable_cores": cpus, "cores": [], "physical_cores": None, "pinned": False,
           "oversubscribed": False, "workers_elsewhere": True}


def pin_job(cpus: int) -> dict:
    """Give this job (and every worker it starts) exactly `cpus` CPUs when it may use that many.

    Returns what the run records: cpus asked, the cores pinned to (one per physical core before
    any SMT sibling: `spread`) and how many physical cores they are, whether pinning was possible,
    and `oversubscribed` when `cpus` exceeds the usable cores (then nothing is pinned). The thread
    variables (THREAD_ENV) are set to `cpus`: a process on N CPUs defaults to N threads, whatever
    the job was started with (a naive worker's default; pinned and intraop workers set theirs)."""
    cores = usable_cores()
    oversubscribed = cpus > len(cores)
    chosen = cores if oversubscribed else sorted(spread(cores)[:cpus])
    pinned = False
    if not oversubscribed and len(chosen) < len(cores) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, chosen)
        pinned = True
    for name in THREAD_ENV:
        os.environ[name] = str(cpus)
    return {"cpus": cpus, "usable_cores": len(cores), "cores": chosen, "physical_cores": physical_cores(chosen),
            "pinned": pinned, "oversubscribed": oversubscribed}


@contextmanager
def building() -> Iterator[None]:
    """One thread while a model is built: random initialisation is many small serial-RNG ops that
    run slower on many threads (a random SD-VAE: 5 s on 16 threads, 0.7 s on 1); the weights are
    the same at any thread count (the generator is consumed serially)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def apply(threads: int | None) -> None:
    """Set the compute thread count in the calling thread (None: leave the default)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


def record() -> dict:
    """The thread count the calling thread computes with, its CPU affinity, and the env that
    shaped the default."""
    import torch

    info = {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
    info["env"] = {name: os.environ[name] for name in THREAD_ENV if name in os.environ}
    info["affinity"] = len(usable_cores())
    return info
