"""The body of one worker, the same for every backend: set threads, load the model once, then
prepare -> compute -> write its shards one at a time.

Memory is bounded by one shard of outputs plus a few batches, never by the dataset: outputs
accumulate per shard and are written (atomically, with their checksum) as soon as the shard is
full. Two schedules share this code:

  inline    prepare, compute and write in turn (CPU workers: a second thread would steal the
            cores the pinned policy gave to compute)
  overlap   a loader thread prepares batches ahead into pinned memory (decode on a thread pool;
            PIL releases the GIL), the main thread keeps the device busy, a writer thread collects
            the results as their device-to-host copies land and hands full shards to a few write
            threads (the GPU path; also runs on CPU, which is how the tests cover it)

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
from diffscale.shards import tensor_specs, write_shard
from diffscale.errors import UserError

STATUS_DIR = ".status"
QUEUE_DEPTH = 4  # batches in flight between loader, compute and writer
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
    loader_threads: int = 1
    fault: tuple[str, int] | None = None

    @property
    def modality(self) -> str:
        return self.settings["modality"]

    @property
    def batch_size(self) -> int:
        return self.settings["batch_size"]

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
        names = encoders.TENSOR_NAMES[self.task.modality]
        tensors = {name: torch.cat([o[name] for o in outputs]) for name in names}
        entry = write_shard(Path(self.task.out_dir) / shard.file, tensors)
        with self.lock:  # the overlapped schedule writes shards from a pool of threads
            self.shards.append({**entry, "worker": self.task.worker})
            self.tensors = self.tensors or tensor_specs(tensors)
            self.items += entry["items"]

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
    try:
        progress.note(None, "loading")
        thread_policy.apply(task.threads)
        settings = task.settings
        compute_dtype = settings["dtype"] if task.device.startswith("cuda") else settings["cpu_dtype"]
        if task.device.startswith("cuda"):
            import torch

            torch.cuda.set_device(task.device)
        embedder = encoders.embedder(task.modality, settings["model"], task.device, compute_dtype,
                                     settings["dtype"], settings["seed"])
        ready = time.time()
        timer = (_run_overlapped if task.overlap else _run_inline)(task, embedder, progress)
        threads = thread_policy.record()
    except UserError:  # WorkerFailed, or a bad model spec: already one clear line
        raise
    except Exception as exc:
        traceback.print_exc()  # the whole story goes to the job's log; the error is one line
        where = f"on {progress.current.file}" if progress.current else "while starting"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WorkerFailed(f"{task.run}: {task.label()} (pid {os.getpid()}) failed {where}: "
                           f"{type(exc).__name__}{': ' + detail if detail else ''}") from None
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
        "phases": timer.seconds,
        "items": progress.items,
        "shards": progress.shards,
        "skipped": progress.skipped,
        "truncated": progress.truncated,
        "tensors": progress.tensors,
        "meta": embedder.meta(),
        "peak_rss_mb": peak_rss_mb(),
    }


def _run_inline(task: WorkerTask, embedder, progress: _Progress) -> PhaseTimer:
    timer = PhaseTimer(task.device)
    load = encoders.loader(task.modality, task.settings["model"], task.settings.get("image_size"))
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


def _put(q: queue.Queue, item, failed: threading.Event) -> None:
    while True:
        if failed.is_set():
            raise _Stopped()
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, failed: threading.Event):
    while True:
        if failed.is_set():
            raise _Stopped()
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def _run_overlapped(task: WorkerTask, embedder, progress: _Progress) -> PhaseTimer:
    """Loader thread -> compute (this thread) -> writer thread, each queue a few batches deep."""
    import torch

    cuda = task.device.startswith("cuda")
    seconds = {"prepare": 0.0, "compute": 0.0, "write": 0.0, "wait": 0.0, "collect": 0.0}
    failed = threading.Event()
    errors: list[BaseException] = []
    to_compute: queue.Queue = queue.Queue(QUEUE_DEPTH)
    to_write: queue.Queue = queue.Queue(QUEUE_DEPTH)
    end = object()

    def guarded(fn):
        def body():
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                errors.append(exc)
                failed.set()
        return body

    pool = ThreadPoolExecutor(max(1, task.loader_threads), thread_name_prefix="decode")
    load = encoders.loader(task.modality, task.settings["model"], task.settings.get("image_size"), pool)

    def loading():
        for shard in task.shards:
            shard_batches = batches(shard, task.batch_size)
            for k, batch in enumerate(shard_batches):
                start = time.perf_counter()
                prepared = load(batch, pin=cuda)
                seconds["prepare"] += time.perf_counter() - start
                _put(to_compute, (shard, prepared, k == len(shard_batches) - 1), failed)
        _put(to_compute, end, failed)

    def write_timed(shard, outputs):
        start = time.perf_counter()
        progress.write(shard, outputs)
        with progress.lock:
            seconds["write"] += time.perf_counter() - start

    def writing():
        outputs: list[dict] = []
        pending: list = []
        with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="write") as writers:
            while (item := _get(to_write, failed)) is not end:
                shard, prepared, out, done, last = item
                start = time.perf_counter()
                if done is not None:
                    done.synchronize()  # the device-to-host copies of this batch have landed
                progress.add_batch(prepared)
                outputs.append({**prepared.columns, **out})
                seconds["collect"] += time.perf_counter() - start
                if last:
                    progress.note(shard, "writing")
                    pending.append(writers.submit(write_timed, shard, outputs))
                    outputs = []
                    while len(pending) > WRITE_THREADS:
                        pending.pop(0).result()
            for future in pending:
                future.result()

    loader_thread = threading.Thread(target=guarded(loading), name="embed-loader", daemon=True)
    writer_thread = threading.Thread(target=guarded(writing), name="embed-writer", daemon=True)
    loader_thread.start()
    writer_thread.start()
    timings = []  # CUDA (start, end) events: device time without synchronising every batch
    try:
        while True:
            start = time.perf_counter()
            item = _get(to_compute, failed)
            seconds["wait"] += time.perf_counter() - start
            if item is end:
                break
            shard, prepared, last = item
            if progress.current is not shard:
                progress.note(shard, "running")
            out, done = {}, None
            if prepared.size:
                start = time.perf_counter()
                if cuda:
                    begin, finish = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    begin.record()
                    result = embedder.compute(prepared.inputs)
                    finish.record()
                    timings.append((begin, finish))
                    out = {k: v.to("cpu", non_blocking=True) for k, v in result.items()}  # lands in pinned memory
                    done = torch.cuda.Event()
                    done.record()
                else:
                    out = {k: v.cpu() for k, v in embedder.compute(prepared.inputs).items()}
                    seconds["compute"] += time.perf_counter() - start
            _put(to_write, (shard, prepared, out, done, last), failed)
        _put(to_write, end, failed)
        writer_thread.join()
    except _Stopped:
        pass
    finally:
        failed.set()  # stops the loader and writer if this thread is leaving early; harmless after
        loader_thread.join(timeout=60)
        writer_thread.join(timeout=60)
        pool.shutdown(wait=True)
    if errors:
        raise errors[0]
    if cuda:
        torch.cuda.synchronize(task.device)
        seconds["compute"] = sum(b.elapsed_time(f) for b, f in timings) / 1000
    timer = PhaseTimer()
    timer.seconds = seconds
    return timer
