"""One embedding run: manifest -> plan -> backend -> shards, then index.json, timing.json, run.json.

The run directory results/embed/{modality}/{backend}-{policy}-w{workers}/ ends up with

  shard-NNNNN.safetensors   written by the workers (diffscale.embed.shards.write_shard)
  timing.json               wall time split into start-up, decode (images) or tokenize (text),
                            compute and write, items/s, and every worker's threads, phases, RSS
  run.json                  provenance (diffscale.provenance) with the timings
  index.json                written last (diffscale.embed.shards.write_index): it marks the run
                            complete; `meta` holds the scaling factor, skipped items, truncation

Times: `startup_s` runs from the moment the backend is asked to start until the last worker has
its model loaded (process or cluster start, imports, model load); the decode/compute/write
figures are per-worker means, so start-up plus their sum is about the wall time when the load is
balanced. On the GPU path decode and write overlap compute, so they do not add up; there
`wait_s` is the time the device loop waited for input.

A failed run removes every shard it wrote, so nothing in the directory looks complete.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

from diffscale import atomic, hardware, provenance
from diffscale.embed import plan as planning
from diffscale.embed import threads as thread_policy
from diffscale.embed.backends import make_backend
from diffscale.embed.inputs import load_inputs
from diffscale.embed.settings import BACKENDS, POLICIES, EmbedSettings
from diffscale.shards import INDEX, write_index
from diffscale.embed.worker import STATUS_DIR, WorkerTask
from diffscale.errors import ConfigError, DataError
from diffscale.models import parse_spec

FAULT_ENV = "DIFFSCALE_EMBED_FAULT"
PREPARE_PHASE = {"images": "decode", "text": "tokenize"}


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
        if kind not in ("raise", "kill", "exit"):
            raise ConfigError(f"{FAULT_ENV}: fault kind {kind!r} is not one of raise, kill, exit")
    return faults


def clear_run_dir(out_dir: Path) -> None:
    """Remove what a previous or failed run left: index first, so the directory stops looking complete."""
    (out_dir / INDEX).unlink(missing_ok=True)
    for pattern in ("shard-*.safetensors", ".shard-*.tmp", "timing.json", "run.json"):
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / STATUS_DIR, ignore_errors=True)


def run_embedding(modality: str, manifest: str | Path, out_dir: str | Path, backend: str, policy: str,
                  workers: int, settings: EmbedSettings, skip_list: str | Path | None = None,
                  cpus: int | None = None) -> dict:
    """Embed every item of the manifest with `backend`; return the timing record."""
    if backend not in BACKENDS:
        raise ConfigError(f"embed: unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    if policy not in POLICIES:
        raise ConfigError(f"embed: unknown thread policy {policy!r} (known: {', '.join(POLICIES)})")
    if workers < 1:
        raise ConfigError(f"embed: workers must be at least 1, not {workers}")
    if settings.modality != modality:
        raise ConfigError(f"embed settings are for {settings.modality}, not {modality}")
    name = run_name(backend, policy, workers)
    # The gpu backend fails here, before reading anything, on a machine without the GPUs.
    placement = (hardware.resolve({"hardware": {settings.hw: settings.hardware}}, settings.hw, workers)
                 if backend == "gpu" else hardware.Placement("cpu", workers, settings.hw))
    faults = parse_faults(os.environ.get(FAULT_ENV))

    planned = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_run_dir(out_dir)
    inputs = load_inputs(manifest, modality, skip_list)
    if not inputs.items:
        raise DataError(f"{manifest}: nothing to embed ({inputs.images} images, {len(inputs.skipped)} skipped)")
    plans = planning.plan(inputs.items, workers, settings.batch_size, settings.shard_size)
    # the job's CPUs (SLURM's cpus_per_task), never more than this process may run on
    cores = min(cpus or provenance.usable_cpus(), provenance.usable_cpus())
    threads = thread_policy.threads_per_worker(policy, cores, workers)
    loader_threads = settings.loader_threads or max(1, (threads or 1) - 1)
    tasks = [
        WorkerTask(run=name, backend=backend, worker=p.worker, shards=p.shards, out_dir=str(out_dir),
                   settings=settings.to_dict(), device=placement.device_for(p.worker) if backend == "gpu" else "cpu",
                   threads=threads, overlap=backend == "gpu", loader_threads=loader_threads,
                   fault=faults.get(p.worker))
        for p in plans
    ]
    plan_s = time.perf_counter() - planned

    t0 = time.time()
    try:
        with make_backend(backend, workers, dask_settings=settings.dask, threads=threads, label=name) as runner:
            launched = time.time()
            results = runner.run(tasks)
            gathered = time.time()
            backend_info = runner.info
        closed = time.time()
    except BaseException:
        clear_run_dir(out_dir)
        raise

    finalizing = time.time()
    spec = parse_spec(settings.role, settings.model)
    shards = sorted((s for r in results for s in r["shards"]), key=lambda s: s["file"])
    tensors = next((r["tensors"] for r in results if r["tensors"]), None)
    skipped = inputs.skipped + [s for r in results for s in r["skipped"]]
    truncated = sorted(t for r in results for t in r["truncated"])
    if tensors is None:
        clear_run_dir(out_dir)
        raise DataError(f"{manifest}: none of the {len(inputs.items)} {modality} items could be read")
    items = sum(s["items"] for s in shards)
    prepare = PREPARE_PHASE[modality]
    per_worker = [_worker_record(r, t0, prepare) for r in results]
    busy = [w for w in per_worker if w["items"]] or per_worker
    timing = {
        "run": name, "modality": modality, "backend": backend, "policy": policy, "workers": workers,
        "hw": settings.hw, "device": placement.device, "cores": cores, "threads_requested": threads,
        "threads_per_worker": [w["threads"] for w in per_worker],
        "items": items, "skipped": len(skipped), "truncated": len(truncated),
        "overlapped": backend == "gpu",
        "plan_s": plan_s,
        "launch_s": launched - t0,
        "startup_s": max(r["ready_at"] for r in results) - t0,
        f"{prepare}_s": statistics.fmean(w[f"{prepare}_s"] for w in busy),
        "compute_s": statistics.fmean(w["compute_s"] for w in busy),
        "write_s": statistics.fmean(w["write_s"] for w in busy),
        "shutdown_s": closed - gathered,
        "peak_rss_mb": [w["peak_rss_mb"] for w in per_worker],
        "backend_info": backend_info,
        "per_worker": per_worker,
    }
    if backend == "gpu":
        timing["wait_s"] = statistics.fmean(w["wait_s"] for w in busy)
    meta = {
        "run": name, "backend": backend, "policy": policy, "workers": workers,
        "dtype": settings.dtype, "compute_dtype": results[0]["compute_dtype"],
        "order": "images by image_id; captions by (image_id, caption_index); shards in item order",
        "batch_size": settings.batch_size, "shard_size": settings.shard_size,
        **results[0]["meta"],
        "skipped": skipped,
        "truncated": {"count": len(truncated), "items": truncated,
                      "columns": ["image_id", "caption_index", "tokens_before_truncation"]},
    }
    if modality == "images":
        meta["image_size"] = settings.image_size
        meta["preprocessing"] = "RGB; shorter side resized to image_size (bicubic); center crop; [-1, 1]"
    else:
        from diffscale.tokenize import tokenizer_for

        meta["tokenizer"] = tokenizer_for(spec).source
    timing["finalize_s"] = time.time() - finalizing
    timing["wall_s"] = (gathered - t0) + timing["finalize_s"]
    timing["items_per_s"] = items / timing["wall_s"]
    timing["steady_items_per_s"] = items / max(timing["wall_s"] - timing["startup_s"], 1e-9)
    atomic.write_json(out_dir / "timing.json", timing)
    config_slice = {**settings.to_dict(), "backend": backend, "policy": policy, "workers": workers}
    provenance.write_run_json(out_dir / "run.json", config_slice=config_slice, models=[spec.describe()],
                              run=name, stage=f"embed/{modality}", timings=timing)
    shutil.rmtree(out_dir / STATUS_DIR, ignore_errors=True)
    write_index(out_dir, modality, shards, tensors, model=spec.describe(), meta=meta)
    return timing


def _worker_record(result: dict, t0: float, prepare: str) -> dict:
    phases = result["phases"]
    record = {
        "worker": result["worker"], "pid": result["pid"], "host": result["host"], "device": result["device"],
        "threads": result["threads"], "thread_info": result["thread_info"],
        "startup_s": result["ready_at"] - t0, "load_s": result["load_s"],
        f"{prepare}_s": phases.get("prepare", 0.0), "compute_s": phases.get("compute", 0.0),
        "write_s": phases.get("write", 0.0), "busy_s": result["finished_at"] - result["ready_at"],
        "items": result["items"], "shards": len(result["shards"]), "peak_rss_mb": result["peak_rss_mb"],
    }
    if "wait" in phases:
        record["wait_s"] = phases["wait"]
    return record
