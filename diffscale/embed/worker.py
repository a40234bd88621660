"""The body of one worker, the same for every backend: set threads, load the model once, then
prepare -> compute -> write its shards one at a time.

Memory is bounded by one shard of outputs plus a few batches, never by the dataset: outputs
accumulate per shard and are written (atomically, with their checksum) as soon as the shard is
full. Two schedules share this code:

  inline    prepare, compute and write in turn (CPU workers: a second thread would steal the
            cores the pinned policy gave to compute)
  overlap   loader processes prepare batches ahead (a torch DataLoader; started before the model
            is built, so their start-up and the model's overlap), a loader thread hands them on
            in order in pinned memory, the main thread keeps the device busy, a writer thread
            collects the results as their device-to-host copies land and hands full shards to a
            few write threads (the GPU path; also runs on CPU, which is how the tests cover it)

Why processes and not threads for decoding and tokenizing: the thread that drives the device
releases and retakes the GIL at every kernel launch, and each retake waits for whichever thread
holds it. `python -m diffscale.bench gil` measures it without a GPU (a thread issuing small torch
ops beside one loader kept busy, 2-core VM): beside a loader thread it kept 1.5 % of its pace
(text) and 77-80 % (images); beside a loader process 77 % (text, at 350 batches/s, ~4x what
CLIP-L consumes on an H200) and 94 % (images). With loader threads the GPU path reached 0.34
(text) and 0.72 (images) of the bare model on an H200.

Before each shard the worker notes in `.status/w<k>.json` which shard it is on, so when a
worker process dies outright (killed, segfault) the job can still name the worker and shard.

Test hook: `WorkerTask.fault` = (kind, shard) makes the worker fail just before writing that
shard: "raise" raises, "kill" SIGKILLs its own process, "exit" calls os._exit. The stage reads it
from the DIFFSCALE_EMBED_FAULT environment variable ("<worker>:<shard>:<kind>").
"""

from __future__ import annotations

import os
import queue
import resource
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from diffscale import atomic
from diffscale.timing import PhaseTimer
from diffscale.embed import encoders, threads as thread_policy
from diffscale.embed.plan import ShardPlan, batches
from diffscale.embed.settings import MODEL_ROLE
from diffscale.shards import tensor_specs, with_offsets, write_shard
from diffscale.errors import UserError

STATUS_DIR = ".status"
QUEUE_DEPTH = 4  # batches in flight between loader, compute and writer
PREFETCH = 2  # batches each loader process prepares ahead
LOADER_ABORTED = "is killed by signal"  # torch's SIGCHLD handler, for a loader that died (_stop_loading)
STOP_LOADERS_S = 5.0  # a stopped loader has this long to exit before it is killed
# Shards written at once on the overlapped schedule: CLIP-L text states in bf16 come off an H100 at
# ~2.8 GB/s, more than one thread can concatenate, save and checksum. Bounds memory to this many
# shards plus the one being filled.
WRITE_THREADS = 3


class WorkerFailed(UserError):
    """A worker failed or died; the message names the backend, worker and shard.

    Not a user mistake, but reported the same way (one line, no traceback), with exit code 1."""

    exit_code = 1


@dataclass(frozen=True)
class WorkerTask:
    run: str
    backend: str
    worker: int
    shards: tuple[ShardPlan, ...]
    out_dir: str
    settings: dict  # EmbedSettings.to_dict()
    device: str
    threads: int | None  # None: the backend's default thread count (naive policy)
    overlap: bool = False
    loader_workers: int = 1  # loader processes of the overlapped schedule
    fault: tuple[str, int] | None = None

    @property
    def modality(self) -> str:
        return self.settings["modality"]

    @property
    def batch_size(self) -> int:
        return self.settings["batch_size"]

    @property
    def text_storage(self) -> str:
        return self.settings.get("text_storage", "full")

    def label(self) -> str:
        return f"{self.backend} worker {self.worker}"


def status_path(out_dir: str | Path, worker: int) -> Path:
    return Path(out_dir) / STATUS_DIR / f"w{worker}.json"


def read_status(out_dir: str | Path, worker: int) -> dict | None:
    import json

    try:
        return json.loads(status_path(out_dir, worker).read_text())
    except (OSError, ValueError):
        return None


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class _Progress:
    task: WorkerTask
    shards: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    truncated: list[list[int]] = field(default_factory=list)
    tensors: dict | None = None
    current: ShardPlan | None = None
    items: int = 0
    tokens: int = 0  # real tokens written (ragged text)
    lock: threading.Lock = field(default_factory=threading.Lock)  # compute and writer threads both note

    def note(self, shard: ShardPlan | None, state: str) -> None:
        import multiprocessing

        with self.lock:
            self.current = shard
            atomic.write_json(status_path(self.task.out_dir, self.task.worker), {
                "worker": self.task.worker, "pid": os.getpid(), "host": socket.gethostname(),
                "process": multiprocessing.current_process().name, "state": state,
                "shard": shard.file if shard else None, "time": time.time()})

    def add_batch(self, prepared) -> None:
        self.skipped += prepared.skipped
        self.truncated += prepared.truncated

    def write(self, shard: ShardPlan, outputs: list[dict]) -> None:
        """Concatenate a shard's batch outputs and write it; a shard nothing could be read for is
        not written (the index lists the shards that exist)."""
        import torch

        self._maybe_fail(shard)
        outputs = [o for o in outputs if len(o["image_id"])]
        if not outputs:
            return
        names = encoders.tensor_names(self.task.modality, self.task.text_storage)
        tensors = {name: torch.cat([o[name] for o in outputs]) for name in names}
        if "lengths" in tensors:  # ragged text
            tensors = with_offsets(tensors)
        entry = write_shard(Path(self.task.out_dir) / shard.file, tensors)
        with self.lock:  # the overlapped schedule writes shards from a pool of threads
            self.shards.append({**entry, "worker": self.task.worker})
            self.tensors = self.tensors or tensor_specs(tensors)
            self.items += entry["items"]
            self.tokens += int(tensors["lengths"].sum()) if "lengths" in tensors else 0

    def _maybe_fail(self, shard: ShardPlan) -> None:
        if not self.task.fault or self.task.fault[1] != shard.number:
            return
        kind = self.task.fault[0]
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "exit":
            os._exit(3)
        raise RuntimeError(f"injected fault before writing {shard.file}")


def run_worker(task: WorkerTask) -> dict:
    """Embed one worker's shards; return what it did and how long each phase took."""
    started = time.time()
    progress = _Progress(task)
    prepared = None
    try:
        progress.note(None, "loading")
        settings = task.settings
        compute_dtype = settings["dtype"] if task.device.startswith("cuda") else settings["cpu_dtype"]
        startup = PhaseTimer()  # where start-up goes, step by step (diffscale.embed.scaling.LOAD_STEPS)
        with startup.phase("import_s"):
            _import_libraries(task)
        if task.overlap:  # loader processes start now: they import while the model is built
            with startup.phase("loaders_s"):
                prepared = _start_loading(task)
        with startup.phase("device_init_s"):
            _init_device(task)
        # Random weights are built on the CPU (one thread: `building`) and then moved, never built on
        # the GPU (models.build's on_device): a GPU's generator gives other weights for the same
        # seed, and the latents and text embeddings of every backend, and the VAE and text encoder
        # that training and generate.py rebuild from the same spec, must be one model. build_s
        # records what this costs.
        with startup.phase("build_s"), thread_policy.building():
            embedder = encoders.embedder(task.modality, settings["model"], task.device, compute_dtype,
                                         settings["dtype"], settings["seed"])
        thread_policy.apply(task.threads)
        ready = time.time()
        if task.overlap:
            timer = _run_overlapped(task, embedder, progress, prepared)
        else:
            timer = _run_inline(task, embedder, progress)
        threads = thread_policy.record()
    except UserError:  # WorkerFailed, or a bad model spec: already one clear line
        raise
    except Exception as exc:
        traceback.print_exc()  # the whole story goes to the job's log; the error is one line
        shard, error = (exc.shard, exc.error) if isinstance(exc, _ShardFailed) else (progress.current, exc)
        where = f"on {shard.file}" if shard else "while starting"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise WorkerFailed(f"{task.run}: {task.label()} (pid {os.getpid()}) failed {where}: "
                           f"{type(error).__name__}{': ' + detail if detail else ''}") from None
    finally:
        if prepared is not None:
            _stop_loading(prepared)
    progress.note(None, "done")
    return {
        "worker": task.worker,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "device": task.device,
        "compute_dtype": compute_dtype,
        "threads": threads["threads"],
        "thread_info": threads,
        "started_at": started,
        "ready_at": ready,
        "finished_at": time.time(),
        "load_s": ready - started,
        "load_phases": startup.seconds,
        "phases": timer.seconds,
        "items": progress.items,
        "tokens": progress.tokens,
        "shards": progress.shards,
        "skipped": progress.skipped,
        "truncated": progress.truncated,
        "tensors": progress.tensors,
        "meta": embedder.meta(),
        "peak_rss_mb": peak_rss_mb(),
    }


def _import_libraries(task: WorkerTask) -> None:
    """torch and the modality's model library only (no diffusers for text): most of a cold start."""
    import torch  # noqa: F401

    from diffscale import models

    models.model_class(MODEL_ROLE[task.modality])


def _init_device(task: WorkerTask) -> None:
    if task.device.startswith("cuda"):
        import torch

        torch.cuda.set_device(task.device)
        torch.cuda.init()


def _run_inline(task: WorkerTask, embedder, progress: _Progress) -> PhaseTimer:
    timer = PhaseTimer(task.device)
    load = encoders.loader(task.modality, task.settings["model"], task.settings.get("image_size"),
                           text_storage=task.text_storage)
    for phase in ("prepare", "compute", "write"):
        timer.seconds[phase] = 0.0
    for shard in task.shards:
        progress.note(shard, "running")
        outputs = []
        for batch in batches(shard, task.batch_size):
            with timer.phase("prepare"):
                prepared = load(batch)
            progress.add_batch(prepared)
            out = {}
            if prepared.size:
                with timer.phase("compute"):
                    out = {k: v.cpu() for k, v in embedder.compute(prepared.inputs).items()}
            outputs.append({**prepared.columns, **out})
        with timer.phase("write"):
            progress.write(shard, outputs)
    return timer


class _Stopped(Exception):
    """A sibling thread failed; its error is the one to report."""


class _ShardFailed(Exception):
    """`error` while computing or writing `shard` in the overlapped schedule: by the time it is
    reported the other threads have moved on (the compute thread is shards ahead of a slow write),
    so `progress.current` would name the wrong shard."""

    def __init__(self, shard: ShardPlan, error: Exception):
        super().__init__(str(error))
        self.shard, self.error = shard, error


_END = object()  # the last item through a queue


class _Pipeline:
    """What the overlapped schedule's three stages share: two bounded queues, a failure flag that
    stops every stage, the first error, and the seconds each stage spent (each stage owns its keys)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.to_compute: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.to_write: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.failed = threading.Event()
        self.errors: list[BaseException] = []
        # host: seconds the host spent issuing each batch's device work; near `compute` (device
        # seconds) means the device waited on the host (Python, the GIL), not the other way round
        self.seconds = {"prepare": 0.0, "compute": 0.0, "write": 0.0, "wait": 0.0, "collect": 0.0, "host": 0.0}
        self.lock = threading.Lock()

    def put(self, q: queue.Queue, item) -> None:
        while True:
            if self.failed.is_set():
                raise _Stopped()
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue):
        while True:
            if self.failed.is_set():
                raise _Stopped()
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue

    def thread(self, name: str, fn, *args) -> threading.Thread:
        """A started thread running fn(*args); an error stops the pipeline and is kept for the caller."""
        def body():
            try:
                fn(*args)
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.errors.append(exc)
                self.failed.set()

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        return thread


class BatchSource:
    """A worker's batches in order, as a map-style dataset: item k is batch k prepared (decoded or
    tokenized). Pickled to each loader process, which builds its own loader on first use."""

    def __init__(self, task: WorkerTask):
        self.batches = [batch for shard in task.shards for batch in batches(shard, task.batch_size)]
        self.loader = (task.modality, task.settings["model"], task.settings.get("image_size"), task.text_storage)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        return encoders.loader(*self.loader)(self.batches[k])


def _start_loading(task: WorkerTask):
    """Start the loader processes (spawned: a forked copy of a process with CUDA or OpenMP threads
    is unsafe) and return the iterator of prepared batches, in order."""
    from torch.utils.data import DataLoader

    source = BatchSource(task)
    workers = min(task.loader_workers, len(source))
    return iter(DataLoader(source, batch_size=None, shuffle=False, num_workers=workers,
                           prefetch_factor=PREFETCH if workers else None,
                           multiprocessing_context="spawn" if workers else None))


def _stop_loading(prepared) -> None:
    """Stop the loader processes now: a DataLoader iterator stops them when it is collected, which
    an exception's traceback can put off, and torch offers only this (private) method to do it
    sooner; an iterator without it (no loader processes) has nothing to stop.

    A loader stopped while its queue's feeder thread still hands on a batch can abort as it exits
    (CPython ends that thread inside torch's C++ code: "terminate called without an active
    exception" in the log), and torch's SIGCHLD handler then raises here. Its batches were being
    thrown away, so that is no failure; raised from the `finally` of a failed worker, it would
    replace the worker's own error with one about the loader."""
    shutdown = getattr(prepared, "_shutdown_workers", None)
    if shutdown is None:
        return
    try:
        shutdown()
    except RuntimeError as exc:
        if LOADER_ABORTED not in str(exc):
            raise
        for process in getattr(prepared, "_workers", []):  # the ones shutdown had not joined yet
            process.join(timeout=STOP_LOADERS_S)
            if process.is_alive():
                process.kill()


def _load_stage(task: WorkerTask, prepared, pipe: _Pipeline) -> None:
    """Loader thread: hand the loader processes' batches on in order, pinned on CUDA (the pinning
    copy lets the GIL go), each marked with its shard and whether it ends that shard."""
    for shard in task.shards:
        shard_batches = batches(shard, task.batch_size)
        for k in range(len(shard_batches)):
            batch = next(prepared)
            if pipe.cuda:
                batch = batch.pin_memory()
            with pipe.lock:
                pipe.seconds["prepare"] += batch.seconds
            pipe.put(pipe.to_compute, (shard, batch, k == len(shard_batches) - 1))
    pipe.put(pipe.to_compute, _END)


def _compute_stage(task: WorkerTask, embedder, progress: _Progress, pipe: _Pipeline) -> list:
    """This thread: keep the device busy; results leave through non-blocking copies to the host.
    Returns the CUDA (start, end) event pairs: device time without a synchronisation per batch."""
    timings = []
    while True:
        start = time.perf_counter()
        item = pipe.get(pipe.to_compute)
        pipe.seconds["wait"] += time.perf_counter() - start
        if item is _END:
            break
        shard, prepared, last = item
        if progress.current is not shard:
            progress.note(shard, "running")
        out, done = {}, None
        if prepared.size:
            try:
                out, done = _compute_batch(embedder, prepared, pipe, timings)
            except Exception as exc:
                raise _ShardFailed(shard, exc) from exc
        pipe.put(pipe.to_write, (shard, prepared, out, done, last))
    pipe.put(pipe.to_write, _END)
    return timings


def _compute_batch(embedder, prepared, pipe: _Pipeline, timings: list) -> tuple[dict, object]:
    """One batch's outputs (on CUDA: copies still landing, and the event that marks them landed)."""
    import torch

    done = None
    start = time.perf_counter()
    if pipe.cuda:
        begin, finish = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        result = embedder.compute(prepared.inputs)
        finish.record()
        timings.append((begin, finish))
        out = {k: v.to("cpu", non_blocking=True) for k, v in result.items()}  # lands in pinned memory
        done = torch.cuda.Event()
        done.record()
        pipe.seconds["host"] += time.perf_counter() - start
    else:
        out = {k: v.cpu() for k, v in embedder.compute(prepared.inputs).items()}
        pipe.seconds["compute"] += time.perf_counter() - start
    return out, done


def _write_stage(progress: _Progress, pipe: _Pipeline) -> None:
    """Writer thread: collect each batch once its copies have landed; hand full shards to a few
    write threads (at most WRITE_THREADS shards in flight)."""
    def write_timed(shard, outputs):
        start = time.perf_counter()
        try:
            progress.write(shard, outputs)
        except Exception as exc:
            raise _ShardFailed(shard, exc) from exc
        with pipe.lock:
            pipe.seconds["write"] += time.perf_counter() - start

    outputs: list[dict] = []
    pending: list = []
    with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="write") as writers:
        while (item := pipe.get(pipe.to_write)) is not _END:
            shard, prepared, out, done, last = item
            start = time.perf_counter()
            if done is not None:
                done.synchronize()  # the device-to-host copies of this batch have landed
            progress.add_batch(prepared)
            outputs.append({**prepared.columns, **out})
            pipe.seconds["collect"] += time.perf_counter() - start
            if last:
                progress.note(shard, "writing")
                pending.append(writers.submit(write_timed, shard, outputs))
                outputs = []
                while len(pending) > WRITE_THREADS:
                    pending.pop(0).result()
        for future in pending:
            future.result()


def _run_overlapped(task: WorkerTask, embedder, progress: _Progress, prepared) -> PhaseTimer:
    """Loader processes -> loader thread -> compute (this thread) -> writer thread, each queue a
    few batches deep."""
    pipe = _Pipeline(task.device)
    loader = pipe.thread("embed-loader", _load_stage, task, prepared, pipe)
    writer = pipe.thread("embed-writer", _write_stage, progress, pipe)
    timings = []
    try:
        timings = _compute_stage(task, embedder, progress, pipe)
        writer.join()
    except _Stopped:
        pass
    finally:
        pipe.failed.set()  # stops the loader and writer if this thread is leaving early; harmless after
        loader.join(timeout=60)
        writer.join(timeout=60)
    if pipe.errors:
        raise pipe.errors[0]
    if pipe.cuda:
        import torch

        torch.cuda.synchronize(task.device)
        pipe.seconds["compute"] = sum(b.elapsed_time(f) for b, f in timings) / 1000
    timer = PhaseTimer()
    timer.seconds = pipe.seconds
    return timer
