"""How much of its pace the thread driving a device keeps beside the embedding loaders.

The thread that feeds a GPU issues kernel launches, and each launch releases the GIL and takes it
back, so any thread holding the GIL meanwhile (tokenizing, PIL's Python parts, unpickling) delays
every launch. Here a thread issuing small torch CPU ops (the same release-and-retake pattern)
runs alone, then beside loaders kept busy preparing real batches of a synthetic COCO-like set:
as threads of its own process (how the GPU path prepared batches before) and as processes (a
torch DataLoader, as diffscale.embed.worker does now). `kept` = ops/s beside ÷ ops/s alone. No
GPU needed; on a machine with fewer cores than loaders + 2 the loaders also take CPU time from it.
Loader processes are stopped mid-stream, and one may print "terminate called without an active
exception" as it exits: harmless, its batches are being thrown away (diffscale.embed.worker._stop_loading).

  python -m diffscale.bench gil --modalities text images --loaders 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from diffscale import provenance, vocab
from diffscale.bench import saver
from diffscale.errors import ConfigError

KINDS = ("thread", "process")


def launch_rate(seconds: float, stop: threading.Event | None = None) -> float:
    """Ops/s of a loop of tiny in-place torch ops (each releases and retakes the GIL), for
    `seconds` or until `stop` is set."""
    import torch

    x = torch.zeros(8)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds and not (stop and stop.is_set()):
        for _ in range(200):
            x.add_(1)
        n += 200
    return n / elapsed


def _task(modality: str, manifest: Path, args, loaders: int):
    from diffscale.embed.inputs import load_inputs
    from diffscale.embed.plan import ShardPlan
    from diffscale.embed.worker import WorkerTask

    batch = args.batch if modality == "images" else args.text_batch
    real = load_inputs(manifest, modality).items
    items = tuple(real[k % len(real)] for k in range(args.batches * batch))  # enough not to run out
    settings = {"modality": modality, "model": {"random": args.text_encoder}, "image_size": args.image_size,
                "batch_size": batch, "text_storage": "ragged"}
    return WorkerTask(run="bench-gil", backend="gpu", worker=0, shards=(ShardPlan(0, items),), out_dir="",
                      settings=settings, device="cpu", threads=1, overlap=True, loader_workers=loaders)


def task_batches(task) -> int:
    return -(-len(task.shards[0].items) // task.batch_size)


def _busy(kind: str, task, stop: threading.Event) -> tuple[list[threading.Thread], list[int]]:
    """Start loaders that prepare the task's batches round and round until `stop`; count batches."""
    from diffscale.embed import worker

    done = [0]
    source = worker.BatchSource(task)

    def thread_body(offset: int):
        k = offset
        while not stop.is_set() and k < len(source):
            source[k]
            done[0] += 1
            k += task.loader_workers
        stop.set()

    def consume():  # the pipeline's loader thread: takes the processes' batches off their queue
        prepared = worker._start_loading(task)
        for _ in prepared:
            done[0] += 1
            if stop.is_set():
                break
        worker._stop_loading(prepared)
        stop.set()  # ran out: the measurement ends here

    bodies = ([threading.Thread(target=thread_body, args=(k,)) for k in range(task.loader_workers)]
              if kind == "thread" else [threading.Thread(target=consume)])
    for body in bodies:
        body.start()
    return bodies, done


def measure(kind: str, task, seconds: float) -> dict:
    stop = threading.Event()
    threads, done = _busy(kind, task, stop)
    try:
        while done[0] < 2 * task.loader_workers:  # loaders up (processes spawn) and busy
            time.sleep(0.05)
        before, start = done[0], time.perf_counter()
        rate = launch_rate(seconds, stop)
        elapsed = time.perf_counter() - start
        batches = (done[0] - before) / elapsed
        if stop.is_set():
            raise ConfigError(f"bench gil: the loaders ran out of batches after {elapsed:.2f} s; raise --batches "
                              f"(now {task_batches(task)})")
    finally:
        stop.set()
        for t in threads:
            t.join()
    return {"ops_per_s_beside": rate, "loader_batches_per_s": batches}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modalities", nargs="+", default=list(vocab.MODALITIES), choices=vocab.MODALITIES,
                        help="whose loaders to run: images (JPEG decode), text (tokenize) or both (default)")
    parser.add_argument("--loaders", nargs="+", type=int, default=[1], help="loader threads / processes")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS,
                        help="loaders as threads (sharing the GIL), processes, or both (default)")
    parser.add_argument("--images", type=int, default=64, help="synthetic 640x480 JPEGs (five captions each)")
    parser.add_argument("--image-size", type=int, default=256, help="decoded side in px (default 256: the full config's)")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (default 16: the full config's)")
    parser.add_argument("--text-batch", type=int, default=256, help="captions per batch (the full config's)")
    parser.add_argument("--text-encoder", default="clip-vit-large-patch14", help="its tokenizer is used")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each rate measurement")
    parser.add_argument("--batches", type=int, default=1500, help="batches the loaders have to prepare")


def run(args: argparse.Namespace) -> list[dict]:
    """The measurements, on synthetic JPEGs in a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="diffscale-bench-gil-") as work:
        return _run(args, Path(work))


def _run(args: argparse.Namespace, work: Path) -> list[dict]:
    from diffscale.bench.embed import synthetic_manifest

    manifest = synthetic_manifest(work, args.images, (640, 480))
    save = saver(args)
    rows = []
    for modality in args.modalities:
        for loaders in args.loaders:
            task = _task(modality, manifest, args, loaders)
            for kind in args.kinds:
                alone = launch_rate(args.seconds)
                row = {"modality": modality, "loader": kind, "loaders": loaders,
                       "batch": task.batch_size, "cores": provenance.usable_cpus(), "ops_per_s_alone": alone,
                       **measure(kind, task, args.seconds)}
                row["kept"] = row["ops_per_s_beside"] / alone
                print(f"  {modality}, {loaders} loader {kind}{('es' if kind.endswith('s') else 's') if loaders > 1 else ''}: the launching thread "
                      f"kept {row['kept']:.1%} of its pace ({row['loader_batches_per_s']:.0f} batches/s prepared)",
                      flush=True)
                rows.append(row)
                save(rows)  # a time limit keeps the rows done so far
    return rows
