"""One embedding run: manifest -> plan -> backend -> shards, then index.json, timing.json, run.json.

The run directory results/embed/{modality}/{backend}-{policy}-w{workers}/ ends up with

  shard-NNNNN.safetensors   written by the workers (diffscale.shards.write_shard)
  timing.json               wall time split into start-up, decode (images) or tokenize (text),
                            compute and write, items/s, and every worker's threads, phases, RSS
  run.json                  provenance (diffscale.provenance) with the timings
  index.json                written last (diffscale.shards.write_index): it marks the run
                            complete; `meta` holds the scaling factor, skipped items, truncation

Times: `startup_s` runs from the moment the backend is asked to start until the last worker has
its model loaded, split into `spawn_s` (process or cluster start), `import_s` (torch and the
modality's model library), `loaders_s` (starting the GPU path's loader processes), `device_init_s`
and `build_s` (each the largest over workers; every
worker's own are in `per_worker`); the decode/compute/write figures are per-worker means, so
start-up plus their sum is about the wall time when the load is balanced. The steady rate
(`steady_items_per_s`) counts every item over the time from the first worker ready
(`steady_from_s`) to the end: workers that became ready later count against it. On the GPU path decode and write overlap compute, so they do not add up; there
`wait_s` is the time the device loop waited for input, `compute_s` the device's own time
(CUDA events) and `host_s` the host's time issuing that work: when host_s is close to
compute_s the device was waiting on the host.

SLURM-started dask workers (diffscale.embed.dask_slurm): the time their jobs waited in the queue
is kept out of every figure above and recorded beside them as `queue_wait_s` (0 elsewhere).

A failed run removes every shard it wrote, so nothing in the directory looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffscale import atomic, hardware, provenance, vocab
from diffscale import resources as hwres
from diffscale.embed import plan as planning
from diffscale.embed import sizes
from diffscale.embed.scaling import LOAD_STEPS
from diffscale.embed import threads as thread_policy
from diffscale.embed.backends import make_backend
from diffscale.embed.inputs import load_inputs
from diffscale.embed.settings import BACKENDS, EmbedSettings
from diffscale.vocab import POLICIES, one_of
from diffscale.shards import INDEX, ragged_specs_from, write_index
from diffscale.embed.worker import STATUS_DIR, WorkerTask
from diffscale.errors import ConfigError, DataError
from diffscale.models import parse_spec

FAULT_ENV = "DIFFSCALE_EMBED_FAULT"
PREPARE_PHASE = {"images": "decode", "text": "tokenize"}
TEXT_LOADERS = 2  # tokenizing runs ~120k captions/s in one process, ~5x a CLIP-L forward on an H200


def run_name(backend: str, policy: str, workers: int) -> str:
    from diffscale.experiments import EmbedRun

    return EmbedRun(backend, policy, workers, "").name


def parse_faults(text: str | None) -> dict[int, tuple[str, int]]:
    """"<worker>:<shard>:<kind>[,…]" -> {worker: (kind, shard)} (a test hook; see worker.py)."""
    faults = {}
    for part in filter(None, (text or "").split(",")):
        try:
            worker, shard, kind = part.split(":")
            faults[int(worker)] = (kind, int(shard))
        except ValueError:
            raise ConfigError(f"{FAULT_ENV}: {part!r} is not <worker>:<shard>:<kind>") from None
        one_of(kind, ("raise", "kill", "exit"), f"{FAULT_ENV}: fault kind")
    return faults


def clear_run_dir(out_dir: Path) -> None:
    """Remove what a previous or failed run left: index first, so the directory stops looking complete."""
    (out_dir / INDEX).unlink(missing_ok=True)
    for pattern in ("shard-*.safetensors", ".shard-*.tmp", "timing.json", "run.json"):
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / STATUS_DIR, ignore_errors=True)


@dataclass
class RunPlan:
    """Everything decided before any worker starts: the run's name, CPUs, processes and tasks."""

    name: str
    modality: str
    backend: str
    policy: str
    workers: int
    settings: EmbedSettings
    out_dir: Path
    manifest: Path
    inputs: Any
    layout: thread_policy.Layout
    device: str
    tasks: list[WorkerTask]
    plan_s: float


@dataclass
class Executed:
    """What the backend gave back, with the clock readings the timing record is made of."""

    results: list[dict]
    backend_info: dict
    allocation: dict
    t0: float
    launched: float
    gathered: float
    closed: float


def recorded_try(out_dir: str | Path, settings: EmbedSettings, backend: str, policy: str, workers: int):
    """This invocation as a try of its embedding job (diffscale.attempts), a context yielding it:
    keyed by everything the run depends on, so a retried job is billed for every try of the same
    settings and an edited one starts afresh."""
    from diffscale import attempts
    from diffscale.config import config_hash

    key = config_hash({**settings.to_dict(), "backend": backend, "policy": policy, "workers": workers})
    return attempts.recorded(attempts.folder(out_dir), key)


def run_embedding(modality: str, manifest: str | Path, out_dir: str | Path, backend: str, policy: str,
                  workers: int, settings: EmbedSettings, skip_list: str | Path | None = None,
                  cpus: int | None = None, earlier_tries: list[dict] | None = None) -> dict:
    """Embed every item of the manifest with `backend`; return the timing record.

    A CPU run `w{N}` runs on N CPUs (`workers` = N; `policy` decides processes × threads); the
    gpu backend runs one process per GPU on `cpus` (the job's CPUs, default: all usable).
    `earlier_tries`: the job's failed tries before this one (diffscale.attempts), recorded so
    the report bills them too."""
    fresh = not Path(out_dir).exists()
    try:
        planned = plan_run(modality, manifest, out_dir, backend, policy, workers, settings, skip_list, cpus)
        executed = execute(planned)
        return summarise(planned, executed, earlier_tries or [])
    except BaseException:
        if fresh:  # a failed run leaves no output, not even the empty directory it made (when it is empty)
            with contextlib.suppress(OSError):
                Path(out_dir).rmdir()
        raise


def plan_run(modality: str, manifest: str | Path, out_dir: str | Path, backend: str, policy: str, workers: int,
             settings: EmbedSettings, skip_list: str | Path | None = None, cpus: int | None = None) -> RunPlan:
    """Check the arguments, read the inputs and cut them into one task per worker process."""
    one_of(backend, BACKENDS, "embed: backend")
    one_of(policy, POLICIES, "embed: policy")
    if workers < 1:
        raise ConfigError(f"embed: workers must be at least 1, not {workers}")
    if cpus is not None and cpus < 1:
        raise ConfigError(f"embed: cpus must be at least 1, not {cpus}")
    if settings.modality != modality:
        raise ConfigError(f"embed settings are for {settings.modality}, not {modality}")
    run_cpus = (cpus or len(thread_policy.usable_cores())) if backend == "gpu" else workers
    layout = thread_policy.layout(policy, run_cpus, backend, workers)
    if backend == "serial" and layout.processes != 1:
        raise ConfigError(f"embed: the serial backend runs one worker, not {layout.processes} "
                          f"(N CPUs in one process: policy intraop)")
    if policy == "intraop" and backend not in ("serial", "gpu"):
        raise ConfigError(f"embed: policy intraop is 1 process x N threads, run on the serial backend, not {backend}")
    name = run_name(backend, policy, workers)
    # The gpu backend fails here, before reading anything, on a machine without the GPUs.
    placement = (hardware.resolve({"hardware": {settings.hw: settings.hardware}}, settings.hw, workers)
                 if backend == "gpu" else hardware.Placement("cpu", workers, settings.hw))
    faults = parse_faults(os.environ.get(FAULT_ENV))

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_run_dir(out_dir)
    inputs = load_inputs(manifest, modality, skip_list, settings.max_images)
    if not inputs.items:
        raise DataError(f"{manifest}: nothing to embed ({inputs.images} images, {len(inputs.skipped)} skipped)")
    plans = planning.plan(inputs.items, layout.processes, settings.batch_size, settings.shard_size)
    loaders = loader_workers(settings, layout)
    tasks = [
        WorkerTask(run=name, backend=backend, worker=p.worker, shards=p.shards, out_dir=str(out_dir),
                   settings=settings.to_dict(), device=placement.device_for(p.worker) if backend == "gpu" else "cpu",
                   threads=layout.threads, overlap=backend == "gpu", loader_workers=loaders,
                   fault=faults.get(p.worker))
        for p in plans
    ]
    return RunPlan(name, modality, backend, policy, workers, settings, out_dir, Path(manifest), inputs, layout,
                   placement.device, tasks, time.perf_counter() - started)


def loader_workers(settings: EmbedSettings, layout: thread_policy.Layout) -> int:
    """Loader processes per GPU process: as set, else the CPUs each GPU process has but one (the
    one drives the device) for images, and TEXT_LOADERS for text."""
    if settings.loader_workers:
        return settings.loader_workers
    return max(1, (layout.threads or 1) - 1) if settings.modality == "images" else TEXT_LOADERS


def execute(planned: RunPlan) -> Executed:
    """Start the backend on the run's CPUs, run every task, close; a failure leaves no shards."""
    settings = planned.settings
    try:
        elsewhere = hwres.dask_workers_elsewhere(planned.backend, settings.dask.get("cluster"))
        allocate = thread_policy.workers_elsewhere if elsewhere else thread_policy.pinned_job
        with allocate(planned.layout.cpus) as allocation:
            t0 = time.time()
            with make_backend(planned.backend, planned.layout.processes, dask_settings=settings.dask,
                              threads=planned.layout.threads, label=planned.name) as runner:
                launched = time.time()
                # SLURM workers: the queue wait is recorded, not charged to the backend's times
                t0 += runner.info.get("queue_wait_s", 0.0)
                results = runner.run(planned.tasks)
                gathered = time.time()
            closed = time.time()
            backend_info = runner.info  # after close: dask on SLURM adds what its worker jobs held
    except BaseException:
        clear_run_dir(planned.out_dir)
        raise
    return Executed(results, backend_info, allocation, t0, launched, gathered, closed)


def summarise(planned: RunPlan, executed: Executed, earlier_tries: list[dict] = ()) -> dict:
    """timing.json, run.json, and last index.json (which marks the run complete); the timing record."""
    finalizing = time.time()
    settings, results, modality = planned.settings, executed.results, planned.modality
    spec = parse_spec(settings.role, settings.model)
    shards = sorted((s for r in results for s in r["shards"]), key=lambda s: s["file"])
    tensors = next((r["tensors"] for r in results if r["tensors"]), None)
    if tensors is None:
        clear_run_dir(planned.out_dir)
        raise DataError(f"{planned.manifest}: none of the {len(planned.inputs.items)} {vocab.ITEMS[modality]} "
                        "could be read")
    timing = _timing(planned, executed, shards)
    timing.update(run_dir=str(planned.out_dir), random_weights=spec.random is not None,
                  # a retried job's failed tries: the seconds each held its hardware (diffscale.attempts)
                  earlier_tries=list(earlier_tries), earlier_tries_s=sum(t["held_s"] for t in earlier_tries))
    meta = _meta(planned, results, spec)
    meta["storage"] = {k: timing[k] for k in sizes.KEYS if k in timing}
    timing["finalize_s"] = time.time() - finalizing
    timing["wall_s"] = (executed.gathered - executed.t0) + timing["finalize_s"]
    timing["items_per_s"] = timing["items"] / timing["wall_s"]
    timing["steady_items_per_s"] = timing["items"] / max(timing["wall_s"] - timing["steady_from_s"], 1e-9)
    atomic.write_json(planned.out_dir / "timing.json", timing)
    config_slice = {**settings.to_dict(), "backend": planned.backend, "policy": planned.policy,
                    "workers": planned.workers}
    provenance.write_run_json(planned.out_dir / "run.json", config_slice=config_slice, models=[spec.describe()],
                              run=planned.name, stage=f"embed/{modality}", timings=timing)
    shutil.rmtree(planned.out_dir / STATUS_DIR, ignore_errors=True)
    layout = {}
    if "tokens" in tensors:  # ragged text: readers see hidden [77, D] and mask; `stored` is on disk
        context = meta["context_length"]
        layout = {"text_storage": "ragged", "context_length": context, "stored": tensors}
        tensors = ragged_specs_from(tensors, context)
    elif modality == "text":
        layout = {"text_storage": "full", "context_length": meta["context_length"]}
    write_index(planned.out_dir, modality, shards, tensors, model=spec.describe(), meta=meta, **layout)
    return timing


def _timing(planned: RunPlan, executed: Executed, shards: list[dict]) -> dict:
    results, t0 = executed.results, executed.t0
    prepare = PREPARE_PHASE[planned.modality]
    per_worker = [_worker_record(r, t0, prepare) for r in results]
    busy = [w for w in per_worker if w["items"]] or per_worker
    items = sum(s["items"] for s in shards)
    layout, allocation = planned.layout, executed.allocation
    timing = {
        "run": planned.name, "modality": planned.modality, "backend": planned.backend, "policy": planned.policy,
        "workers": planned.workers, "hw": planned.settings.hw, "device": planned.device,
        "dtype": planned.settings.dtype,  # what the run stored (and, on CPUs, computed in)
        # dask on SLURM: the CPUs its worker jobs had (embed.dask.slurm.cores each), not only N
        "cpus": executed.backend_info.get("job_cpus") or layout.cpus, "processes": layout.processes,
        "oversubscribed": allocation["oversubscribed"],
        "allocation": allocation, "cores": min(layout.cpus, allocation["usable_cores"]),
        "physical_cores": allocation["physical_cores"],  # below cpus: SMT siblings shared cores
        "threads_requested": layout.threads,
        "threads_per_worker": [w["threads"] for w in per_worker],
        "affinity_per_worker": [w["affinity"] for w in per_worker],
        "items": items, "skipped": len(planned.inputs.skipped) + sum(len(r["skipped"]) for r in results),
        "unreadable": sum(len(r["skipped"]) for r in results),  # found by the workers, not the skip list
        "truncated": sum(len(r["truncated"]) for r in results),
        "overlapped": planned.backend == "gpu",
        "plan_s": planned.plan_s,
        "queue_wait_s": executed.backend_info.get("queue_wait_s", 0.0),
        "launch_s": executed.launched - t0,
        "startup_s": max(r["ready_at"] for r in results) - t0,
        # the steady window opens when the first worker is ready: every item is done after it (the
        # last worker's ready time would credit the window with what earlier workers had done)
        "steady_from_s": min(r["ready_at"] for r in results) - t0,
        f"{prepare}_s": statistics.fmean(w[f"{prepare}_s"] for w in busy),
        "compute_s": statistics.fmean(w["compute_s"] for w in busy),
        "write_s": statistics.fmean(w["write_s"] for w in busy),
        "shutdown_s": executed.closed - executed.gathered,
        "peak_rss_mb": [w["peak_rss_mb"] for w in per_worker],
        "backend_info": executed.backend_info,
        **sizes.storage(planned.out_dir, shards, planned.inputs, sum(r.get("tokens", 0) for r in results)),
        "per_worker": per_worker,
    }
    if "jobs" in executed.backend_info:  # dask on SLURM: the CPU-seconds its worker jobs held (None: unknown)
        timing["worker_job_cpu_s"] = executed.backend_info["job_cpu_s"]
    if planned.backend == "gpu":
        timing["wait_s"] = statistics.fmean(w["wait_s"] for w in busy)
        timing["host_s"] = statistics.fmean(w["host_s"] for w in busy)
    for step in LOAD_STEPS:  # where start-up went: the largest of each step over workers
        timing[step] = max(w[step] for w in per_worker)
    return timing


def _meta(planned: RunPlan, results: list[dict], spec) -> dict:
    settings = planned.settings
    skipped = planned.inputs.skipped + [s for r in results for s in r["skipped"]]
    truncated = sorted(t for r in results for t in r["truncated"])
    meta = {
        "run": planned.name, "backend": planned.backend, "policy": planned.policy, "workers": planned.workers,
        "dtype": settings.dtype, "compute_dtype": results[0]["compute_dtype"],
        "order": "images by image_id; captions by (image_id, caption_index); shards in item order",
        "batch_size": settings.batch_size, "shard_size": settings.shard_size,
        "max_images": planned.inputs.max_images,  # the first N usable images only (embed.scaling_images)
        **results[0]["meta"],
        "skipped": skipped,
        "truncated": {"count": len(truncated), "items": truncated,
                      "columns": ["image_id", "caption_index", "tokens_before_truncation"]},
    }
    if planned.modality == "images":
        meta["image_size"] = settings.image_size
        meta["preprocessing"] = ("RGB; JPEG decoded at the smallest DCT scale keeping >= 90% of image_size; "
                                 "center square resized to image_size (bicubic); [-1, 1]")
    else:
        from diffscale.tokenize import tokenizer_for

        meta["tokenizer"] = tokenizer_for(spec).source
    return meta


def _worker_record(result: dict, t0: float, prepare: str) -> dict:
    phases = result["phases"]
    record = {
        "worker": result["worker"], "pid": result["pid"], "host": result["host"], "device": result["device"],
        "threads": result["threads"], "thread_info": result["thread_info"],
        "startup_s": result["ready_at"] - t0, "load_s": result["load_s"],
        f"{prepare}_s": phases.get("prepare", 0.0), "compute_s": phases.get("compute", 0.0),
        "write_s": phases.get("write", 0.0), "busy_s": result["finished_at"] - result["ready_at"],
        "items": result["items"], "shards": len(result["shards"]), "peak_rss_mb": result["peak_rss_mb"],
        "affinity": result["thread_info"]["affinity"],
    }
    record["spawn_s"] = result["started_at"] - t0  # process (or cluster) start and unpickling the task
    record.update({step: result["load_phases"].get(step, 0.0) for step in LOAD_STEPS if step != "spawn_s"})
    if "wait" in phases:
        record["wait_s"] = phases["wait"]
        record["host_s"] = phases["host"]
    return record
