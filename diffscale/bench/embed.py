"""Embedding throughput per backend, thread policy and worker count; naive vs pinned side by side.

Builds a synthetic COCO-like manifest (JPEGs of --source-size) at each of --sizes, runs every
configuration through the same code as the `embed_images` / `embed_text` rules, each in a fresh
process (as a Snakemake job would be, so no thread setting or warm cache leaks between runs), and
reports per configuration: time and phases, items/s, speedup / efficiency / Karp–Flatt against
serial with one worker, the threads each worker ran with, peak RSS per worker and how much it
grew from the smallest dataset to this one (it should not: workers stream), and the ratio of
pinned to naive throughput.

With --gpus the gpu backend runs too, and its rate is compared with the bare model's forward
rate at the same batch, resolution and dtype (diffscale.bench.models): `vs_bare` is the
end-to-end images (captions) per second per GPU over that ceiling, start-up excluded.

  python -m diffscale.bench embed --workers 1 2 --sizes 32 128
  python -m diffscale.bench embed --backends gpu --gpus 1 --vae sd-vae-ft-mse --image-size 256 \\
      --dtype bf16 --sizes 2048 4096 --source-size 640x480
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from diffscale import provenance, vocab

CPU_BACKENDS = list(vocab.CPU_BACKENDS)


def synthetic_manifest(root: Path, n: int, source_size: tuple[int, int], seed: int = 0) -> Path:
    """n JPEGs with five captions each (one of them too long for CLIP's 77 tokens), as a manifest."""
    import numpy as np
    import pandas as pd

    from diffscale.data.synthetic import draw_image

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image_id = 100000 + i
        path = images / f"{image_id:012d}.jpg"
        if not path.exists():
            draw_image(np.random.default_rng([seed, i]), *source_size).save(path, quality=90)
        captions = [f"a photo of scene {i} with {k + 1} people on a street" for k in range(4)]
        captions.append("a very long caption " + " ".join(f"word{k}" for k in range(90)))
        rows.append(dict(image_id=image_id, file_name=path.name, path=str(path), width=source_size[0],
                         height=source_size[1], captions=captions, people=True, gender="", age="", group="",
                         activity="", n_person_captions=5, n_captions=5))
    manifest = root / f"manifest-{n}.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def _one_run(modality: str, manifest: str, out_dir: str, backend: str, policy: str, workers: int,
             settings: dict) -> dict:
    from diffscale.embed.settings import EmbedSettings
    from diffscale.embed.stage import run_embedding

    return run_embedding(modality, manifest, out_dir, backend, policy, workers, EmbedSettings.from_dict(settings))


def isolated(fn, *args):
    """Run fn(*args) in a fresh spawned interpreter, as a Snakemake job runs the CLI."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def bare_rate(modality: str, preset: str, batch: int, image_size: int, dtype: str) -> float:
    from diffscale.bench.models import raw_throughput

    role = "vae" if modality == "images" else "text_encoder"
    return raw_throughput(role, {"random": preset}, batch, image_size, device="cuda", dtype=dtype,
                          repeats=10)["items_per_s"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modalities", nargs="+", default=list(vocab.MODALITIES), choices=vocab.MODALITIES)
    parser.add_argument("--backends", nargs="+", default=CPU_BACKENDS, choices=vocab.BACKENDS)
    parser.add_argument("--workers", nargs="+", type=int, help="CPU worker counts (default: 1, 2, 4 … up to the cores)")
    parser.add_argument("--gpus", nargs="+", type=int, default=[], help="GPU counts for the gpu backend")
    parser.add_argument("--policies", nargs="+", default=list(vocab.POLICIES), choices=vocab.POLICIES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 128], help="images in the dataset (two: RSS check)")
    parser.add_argument("--source-size", default="320x240", help="synthetic JPEG size, WxH (COCO: 640x480)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4, help="images per VAE batch")
    parser.add_argument("--text-batch", type=int, default=16, help="captions per text-encoder batch")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--vae", default="tiny", help="random preset of the VAE (tiny, sd-vae-ft-mse)")
    parser.add_argument("--text-encoder", default="tiny", help="random preset (tiny, clip-vit-large-patch14)")
    parser.add_argument("--dtype", default="fp32", choices=list(vocab.DTYPES), help="storage / GPU compute dtype")
    parser.add_argument("--cpu-dtype", default="fp32", choices=list(vocab.DTYPES))
    parser.add_argument("--work-dir", type=Path, help="keep datasets and shards here (default: a temp dir)")


def _settings(args, modality: str, backend: str) -> dict:
    gpu = backend == "gpu"
    entry = ({"partition": "bench", "device": "cuda", "gpu_model": "bench", "gpus_per_node": max(args.gpus or [1])}
             if gpu else {"partition": "bench", "device": "cpu"})
    return dict(modality=modality, model={"random": args.vae if modality == "images" else args.text_encoder},
                batch_size=args.batch if modality == "images" else args.text_batch, dtype=args.dtype,
                cpu_dtype=args.cpu_dtype, shard_size=args.shard_size, seed=0, hw="bench_gpu" if gpu else "bench",
                hardware=entry, image_size=args.image_size if modality == "images" else None,
                loader_threads=0, dask={"cluster": "local"})


def configurations(args) -> list[tuple[str, str, int]]:
    cores = provenance.usable_cpus()
    counts = args.workers or [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= cores]
    out = []
    for backend in args.backends:
        if backend == "serial":
            out.append(("serial", "pinned", 1))
        elif backend == "gpu":
            out += [("gpu", "pinned", n) for n in args.gpus]
        else:
            out += [(backend, policy, n) for n in counts for policy in args.policies]
    if ("serial", "pinned", 1) not in out:
        out.insert(0, ("serial", "pinned", 1))  # the baseline every speedup is measured against
    return out


def run(args: argparse.Namespace) -> list[dict]:
    from diffscale.embed.scaling import scaling_rows

    width, height = (int(v) for v in args.source_size.lower().split("x"))
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="diffscale-bench-embed-"))
    rows: list[dict] = []
    for size in sorted(args.sizes):
        manifest = synthetic_manifest(work / "data", size, (width, height))
        for modality in args.modalities:
            timings = []
            for backend, policy, workers in configurations(args):
                out_dir = work / "runs" / f"{size}" / modality / vocab.embed_run_name(backend, policy, workers)
                timing = isolated(_one_run, modality, str(manifest), str(out_dir), backend, policy, workers,
                                  _settings(args, modality, backend))
                print(f"  {modality} n={size} {timing['run']}: {timing['wall_s']:.2f} s, "
                      f"threads {timing['threads_per_worker']}", flush=True)
                timings.append(timing)
            for row in scaling_rows(timings):
                row["dataset_images"] = size
                row["peak_rss_mb_mean"] = _rss_mean(timings, row)
                rows.append(row)
    _compare(rows, args)
    return rows


def _rss_mean(timings: list[dict], row: dict) -> float:
    for t in timings:
        if (t["backend"], t["policy"], t["workers"]) == (row["backend"], row["policy"], row["workers"]):
            return sum(t["peak_rss_mb"]) / len(t["peak_rss_mb"])
    return math.nan


def _compare(rows: list[dict], args) -> None:
    """Add the naive/pinned ratio, RSS growth across dataset sizes and, on GPUs, the bare-model ratio."""
    def key(r, **change):
        k = dict(modality=r["modality"], size=r["dataset_images"], backend=r["backend"], policy=r["policy"],
                 workers=r["workers"])
        k.update(change)
        return tuple(k.values())

    by_key = {key(r): r for r in rows}
    smallest = min(r["dataset_images"] for r in rows)
    bare: dict[str, float] = {}
    for r in rows:
        other = by_key.get(key(r, policy="naive" if r["policy"] == "pinned" else "pinned"))
        pinned, naive = (r, other) if r["policy"] == "pinned" else (other, r)
        r["pinned_over_naive"] = (pinned["steady_items_per_s"] / naive["steady_items_per_s"]
                                  if other is not None and r["backend"] not in ("serial", "gpu") else math.nan)
        first = by_key.get(key(r, size=smallest))
        r["rss_growth_mb"] = r["peak_rss_mb"] - first["peak_rss_mb"] if first is not None else math.nan
        if r["backend"] == "gpu":
            if r["modality"] not in bare:
                preset = args.vae if r["modality"] == "images" else args.text_encoder
                batch = args.batch if r["modality"] == "images" else args.text_batch
                bare[r["modality"]] = bare_rate(r["modality"], preset, batch, args.image_size, args.dtype)
            r["bare_items_per_s"] = bare[r["modality"]]
            r["vs_bare"] = r["steady_items_per_s"] / (r["workers"] * bare[r["modality"]])
