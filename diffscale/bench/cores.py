"""What each of N busy CPUs keeps of one CPU's pace: compute, and memory bandwidth.

The embedding study's pinned workers each run the same single-threaded code on a CPU of their own,
so when a worker's compute costs more CPU time per item at N CPUs than alone (the scaling
table's `compute_cost_vs_1cpu`), the CPUs share something. Two probes tell the usual suspects
apart, each run at once in N processes pinned one per CPU (taken as a scaling run takes them:
one per physical core before any SMT sibling, diffscale.embed.threads.spread):

  compute  float32 matrix products on operands that stay in the core's own cache: what clocks
           (turbo falls as more cores are busy) and SMT siblings take
  memory   copies of arrays far larger than the caches: what memory bandwidth takes

`kept` = a process's rate at N (the median over the N processes) ÷ the rate of one process
alone; `min_kept` is the slowest process's. A compute cost of 1.5x with compute kept at 0.95
and memory at 0.4 points at bandwidth; with compute at 0.65, at clocks or shared cores.

  python -m diffscale.bench cores --cpus 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import time

from diffscale.embed.threads import (THREAD_ENV, physical_cores, spread, thread_env_kept,  # as scaling runs take CPUs
                                     usable_cores)
from diffscale.bench import saver
from diffscale.errors import ConfigError

PROBES = {"compute": "GFLOP/s", "memory": "GB/s"}
MATRIX = 128  # compute probe: three 128x128 float32 operands, 192 KiB, inside any core's L2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                        help="processes run at once, one per CPU (1 is always run: the baseline)")
    parser.add_argument("--probes", nargs="+", choices=list(PROBES), default=list(PROBES),
                        help="compute (GFLOP/s in L2) and memory (GB/s) (default both)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each timed repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per process (median kept; default 3)")
    parser.add_argument("--memory-mb", type=int, default=256,
                        help="size of each of the memory probe's two arrays (far above the caches)")


def _rate(probe: str, seconds: float, memory_mb: int):
    """A function that runs `probe` for `seconds` and returns its rate (PROBES' unit)."""
    import numpy as np

    if probe == "compute":
        a, b = np.random.default_rng(0).random((2, MATRIX, MATRIX), dtype=np.float32)
        out = np.empty_like(a)
        work = lambda: np.matmul(a, b, out=out)  # noqa: E731
        amount = 2 * MATRIX**3 / 1e9
    else:
        src = np.ones(memory_mb << 20, dtype=np.uint8)
        dst = np.zeros_like(src)
        work = lambda: np.copyto(dst, src)  # noqa: E731
        amount = 2 * src.nbytes / 1e9  # read + write, as STREAM counts a copy
    work()  # warm-up: pages touched, caches filled

    def timed() -> float:
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            work()
            n += 1
        return n * amount / elapsed

    return timed


def _probe_process(probe: str, cpu: int, barrier, results, seconds: float, repeats: int, memory_mb: int) -> None:
    """One pinned process: set up, then each repeat starts with all N together (the barrier)."""
    os.sched_setaffinity(0, {cpu})
    timed = _rate(probe, seconds, memory_mb)
    rates = []
    for _ in range(repeats):
        barrier.wait()
        rates.append(timed())
    results.put({"cpu": cpu, "affinity": len(os.sched_getaffinity(0)), "rate": statistics.median(rates)})


def run_together(probe: str, cpus: list[int], seconds: float, repeats: int, memory_mb: int) -> list[dict]:
    """`probe` in one spawned process per CPU of `cpus`, all timed at once; their results."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(cpus)), context.Queue()
    with thread_env_kept():  # this process's own thread settings as they were, once the children started
        os.environ.update({name: "1" for name in THREAD_ENV})  # the children's BLAS start with one thread each
        procs = [context.Process(target=_probe_process, args=(probe, cpu, barrier, results, seconds, repeats, memory_mb),
                                 daemon=True) for cpu in cpus]
        for proc in procs:
            proc.start()
    timeout = 60 + 2 * repeats * seconds
    try:
        out = [results.get(timeout=timeout) for _ in cpus]
    except queue.Empty:  # a process died (it printed why)
        raise RuntimeError(f"bench cores: a {probe} probe process on CPUs {cpus} gave no result in {timeout:.0f} s") from None
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    return out


def run(args: argparse.Namespace) -> list[dict]:
    from diffscale import provenance

    if args.seconds <= 0:  # the counts are checked with every stage's (bench/__main__.py)
        raise ConfigError(f"bench cores: --seconds: expected a positive number, not {args.seconds}")
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError("bench cores: needs os.sched_setaffinity (Linux) to pin one process per CPU")
    usable = spread(usable_cores())
    counts = sorted({1, *args.cpus})
    host = {"cpu_model": provenance.cpu_model(), "usable_cpus": len(usable), "usable_physical_cores": physical_cores(usable)}
    save = saver(args)
    rows = []
    for probe in args.probes:
        alone = None
        for n in counts:
            if n > len(usable):
                print(f"{probe}: {n} CPUs skipped: this process may use {len(usable)}", flush=True)
                continue
            chosen = sorted(usable[:n])
            found = run_together(probe, chosen, args.seconds, args.repeats, args.memory_mb)
            rates = [r["rate"] for r in found]
            median = statistics.median(rates)
            alone = alone or median
            row = {"probe": probe, "unit": PROBES[probe], "cpus": n, "physical_cores": physical_cores(chosen),
                   "rate": median, "min_rate": min(rates), "aggregate": sum(rates),
                   "kept": median / alone, "min_kept": min(rates) / alone,
                   "affinity_per_process": max(r["affinity"] for r in found),
                   "seconds": args.seconds, "repeats": args.repeats,
                   "memory_mb": args.memory_mb if probe == "memory" else None, **host}
            print(f"{probe} on {n} CPUs ({row['physical_cores']} physical cores): {median:.3g} {PROBES[probe]} each "
                  f"(slowest {min(rates):.3g}), together {row['aggregate']:.3g}; kept {row['kept']:.0%} of one alone",
                  flush=True)
            rows.append(row)
            save(rows)  # a time limit keeps the counts done so far
    return rows
