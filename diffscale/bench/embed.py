"""Embedding throughput on N CPUs per policy, and on GPUs against the bare model.

Builds a synthetic COCO-like manifest (JPEGs of --source-size, captions of COCO's token lengths) at
each of --sizes, runs every configuration through the same code as the `embed` rule
(diffscale.embed.stage.run_embedding, which gives a run w{N} exactly N CPUs), each in a fresh
process (as a Snakemake job would be, so no thread setting or warm cache leaks between runs), and
reports per configuration, end to end and steady (without start-up) side by side: time and phases,
start-up and its share of the wall time, items/s, speedup / efficiency / Karp–Flatt against serial
on 1 CPU × 1 thread, the CPUs, processes and threads each worker ran with, whether it was
oversubscribed (left out of efficiency), peak RSS per worker and its growth from the smallest
dataset (it should not grow: workers stream), bytes per item and the projected full-study size, and
pinned over naive.

CPU configurations: serial on 1 CPU (the baseline), `intraop` (1 process × N threads, serial
backend) and `pinned` / `naive` (N processes) on each parallel backend at each of --cpus; naive
only up to --naive-max-cpus (it is slow). With --backends gpu the gpu backend runs at --gpus, and
its steady rate is compared with the bare model's forward rate at the same batch, resolution and
dtype (`vs_bare`), and so are the pipeline's compute step run alone on prepared batches
(`compute_alone_vs_bare`: what the compute path adds) and the device's pace inside the pipeline
(`device_vs_bare`: items over the device's compute seconds; what the loader and writer beside it
cost); image rows also carry the decode rate of one thread alone
(`decode_per_thread_per_s`) and the decode threads the bare rate would need.

  python -m diffscale.bench embed --cpus 1 2 --sizes 32 128
  python -m diffscale.bench --out-dir results/benchmarks/gpu embed --backends gpu --gpus 1 \\
      --vae sd-vae-ft-mse --text-encoder clip-vit-large-patch14 --image-size 256 --batch 16 \\
      --text-batch 256 --shard-size 2048 --dtype bf16 --sizes 4096 --source-size 640x480
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from diffscale import models, provenance, vocab
from diffscale.bench import saver

CPU_BACKENDS = list(vocab.CPU_BACKENDS)
DISTINCT_IMAGES = 64  # drawn once each; a larger dataset repeats their bytes (decode cost is the same)
# Caption lengths in CLIP BPE tokens (without start/end) of COCO val2017's 25,014 captions: the
# quantiles at 2.5 %, 7.5 % … 97.5 % (they average 11.4; all captions 11.5, the longest 56, none
# truncated). Synthetic captions cycle through them, so a ragged text shard holds per caption what
# the full study's would (the bytes written, which bound the GPU text path, and the projected size
# follow from it).
COCO_CAPTION_TOKENS = (8, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 13, 13, 14, 15, 18)
LONG_EVERY = 500  # one caption in this many is too long for CLIP's 77 tokens: the truncation path runs
CAPTION_WORDS = ("a person standing next to a dog on the street near two people sitting at a table with "
                 "a white cat and a man riding a red bike in the large blue sea").split()  # one token each


def synthetic_caption(index: int) -> str:
    """Caption number `index` of the synthetic dataset: COCO's length distribution, words cycling."""
    if index % LONG_EVERY == LONG_EVERY - 1:
        return "a very long caption " + " ".join(f"word{k}" for k in range(90))
    length = COCO_CAPTION_TOKENS[index % len(COCO_CAPTION_TOKENS)]
    start = (7 * index) % len(CAPTION_WORDS)
    return " ".join(CAPTION_WORDS[(start + j) % len(CAPTION_WORDS)] for j in range(length))


def synthetic_manifest(root: Path, n: int, source_size: tuple[int, int], seed: int = 0) -> Path:
    """n JPEGs with five captions each (`synthetic_caption`: COCO's lengths), as a manifest.

    Only DISTINCT_IMAGES are drawn; the rest copy their bytes, so 4,096 640x480 JPEGs take seconds."""
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
            if i < DISTINCT_IMAGES:
                draw_image(np.random.default_rng([seed, i]), *source_size).save(path, quality=90)
            else:
                shutil.copyfile(images / f"{100000 + i % DISTINCT_IMAGES:012d}.jpg", path)
        captions = [synthetic_caption(5 * i + k) for k in range(5)]
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


def decode_rate(manifest: Path, image_size: int, n: int = 128) -> float:
    """Images/s that one thread decodes (draft mode, resize, crop) alone: the loader's unit of work."""
    import pandas as pd

    from diffscale.embed.encoders import load_image

    paths = list(pd.read_parquet(manifest, columns=["path"])["path"][:n])
    load_image(paths[0], image_size)  # warm-up
    start = time.perf_counter()
    for path in paths:
        load_image(path, image_size)
    return len(paths) / (time.perf_counter() - start)


def compute_alone_rate(modality: str, manifest: str, settings: dict, batches: int = 8) -> float:
    """Items/s of the pipeline's own compute step (`embedder.compute` on batches prepared
    beforehand, in pinned memory on GPUs) with no loader or writer running beside it.

    It sits between the bare model and the pipeline: below the bare rate, the compute path itself
    adds work (layout, casts, token selection); above the pipeline's device rate, running beside
    the loader and writer threads costs the device its pace."""
    from diffscale.embed import encoders
    from diffscale.embed.inputs import load_inputs
    from diffscale.timing import measure

    device = settings["hardware"]["device"]
    cuda = device.startswith("cuda")
    batch = settings["batch_size"]
    items = load_inputs(manifest, modality).items[: batch * batches]
    load = encoders.loader(modality, settings["model"], settings.get("image_size"),
                           text_storage=settings.get("text_storage", "full"))
    prepared = [load(items[i : i + batch]) for i in range(0, len(items), batch)]
    prepared = [p.pin_memory() for p in prepared] if cuda else prepared
    embedder = encoders.embedder(modality, settings["model"], device, settings["dtype"] if cuda else settings["cpu_dtype"],
                                 settings["dtype"], settings["seed"])

    def compute_all():
        for p in prepared:
            embedder.compute(p.inputs)

    return len(items) / measure(compute_all, repeats=3, warmup=1, device=device)["median_s"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modalities", nargs="+", default=list(vocab.MODALITIES), choices=vocab.MODALITIES,
                        help="images (VAE latents), text (CLIP embeddings) or both (default)")
    parser.add_argument("--backends", nargs="+", default=CPU_BACKENDS, choices=vocab.BACKENDS,
                        help="the backends to run (default: every CPU backend)")
    parser.add_argument("--cpus", "--workers", dest="cpus", nargs="+", type=int,
                        help="CPU counts N of the runs w{N} (default: 1, 2, 4 … up to the usable cores)")
    parser.add_argument("--gpus", nargs="+", type=int, default=[], help="GPU counts for the gpu backend")
    parser.add_argument("--policies", nargs="+", default=list(vocab.POLICIES), choices=vocab.POLICIES,
                        help="how N CPUs are used (default all): pinned N x 1 thread, naive N x the library's "
                        "default, intraop 1 process x N threads")
    parser.add_argument("--naive-max-cpus", type=int, default=4, help="run naive only up to this many CPUs")
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 128], help="images in the dataset (two: RSS check)")
    parser.add_argument("--source-size", default="320x240", help="synthetic JPEG size, WxH (COCO: 640x480)")
    parser.add_argument("--image-size", type=int, default=64, help="VAE input side in px, a multiple of 8 (default 64)")
    parser.add_argument("--batch", type=int, default=4, help="images per VAE batch (default 4)")
    parser.add_argument("--text-batch", type=int, default=16, help="captions per text-encoder batch")
    parser.add_argument("--shard-size", type=int, default=64, help="items per shard file (default 64)")
    parser.add_argument("--vae", default="tiny", choices=sorted(models.ROLES["vae"].presets),
                        help="random preset of the VAE (default tiny)")
    parser.add_argument("--text-encoder", default="tiny", choices=sorted(models.ROLES["text_encoder"].presets),
                        help="random preset of the text encoder (default tiny)")
    parser.add_argument("--dtype", default="fp32", choices=list(vocab.DTYPES), help="storage / GPU compute dtype")
    parser.add_argument("--cpu-dtype", default="fp32", choices=list(vocab.DTYPES), help="CPU compute dtype (default fp32)")
    parser.add_argument("--text-storage", default="ragged", choices=vocab.TEXT_STORAGE,
                        help="ragged: each caption's real tokens (default); full: all 77 positions")
    parser.add_argument("--work-dir", type=Path,
                        help="keep datasets and shards here (default: a temporary folder, removed at the end)")


def _settings(args, modality: str, backend: str) -> dict:
    gpu = backend == "gpu"
    entry = ({"partition": "bench", "device": "cuda", "gpu_model": "bench", "gpus_per_node": max(args.gpus or [1])}
             if gpu else {"partition": "bench", "device": "cpu"})
    return dict(modality=modality, model={"random": args.vae if modality == "images" else args.text_encoder},
                batch_size=args.batch if modality == "images" else args.text_batch, dtype=args.dtype,
                cpu_dtype=args.cpu_dtype, shard_size=args.shard_size, seed=0, hw="bench_gpu" if gpu else "bench",
                hardware=entry, image_size=args.image_size if modality == "images" else None,
                loader_workers=0, dask={"cluster": "local"}, **_storage(args, modality))


def _storage(args, modality: str) -> dict:
    from diffscale.embed.settings import EmbedSettings

    fields = EmbedSettings.__dataclass_fields__
    return {"text_storage": getattr(args, "text_storage", "ragged")} if "text_storage" in fields else {}


def configurations(args) -> list[tuple[str, str, int]]:
    """(backend, policy, N): the 1-CPU baseline first whenever a CPU backend runs."""
    cores = provenance.usable_cpus()
    counts = args.cpus or [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= cores]
    naive_max = getattr(args, "naive_max_cpus", None) or max(counts)
    out = []
    for backend in args.backends:
        if backend == "gpu":
            out += [("gpu", "pinned", n) for n in args.gpus]
        elif backend == "serial":
            out += [("serial", "intraop", n) for n in counts if n > 1 and "intraop" in args.policies]
        else:
            out += [(backend, policy, n) for n in counts for policy in args.policies
                    if policy != "intraop" and (policy != "naive" or n <= naive_max)]
    if any(b != "gpu" for b in args.backends):
        if "intraop" in args.policies and "serial" not in args.backends:
            out += [("serial", "intraop", n) for n in counts if n > 1]
        out.insert(0, vocab.EMBED_BASELINE)  # the baseline every speedup is measured against
    return out


def unrun_counts(args, planned: list[tuple[str, str, int]]) -> list[int]:
    """The --cpus values no CPU configuration runs at (serial alone, without intraop)."""
    ran = {n for backend, _, n in planned if backend != "gpu"}
    return [n for n in (args.cpus or []) if n not in ran and any(b != "gpu" for b in args.backends)]


def check_arguments(args: argparse.Namespace) -> None:
    """--source-size WxH and an --image-size the VAE can take, as one line naming the flag."""
    from diffscale.errors import ConfigError

    width, x, height = args.source_size.lower().partition("x")
    if not (x and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise ConfigError(f"bench embed: --source-size: expected WIDTHxHEIGHT in pixels (COCO: 640x480), "
                          f"not {args.source_size!r}")
    if args.image_size % 8:
        raise ConfigError(f"bench embed: --image-size: expected a multiple of 8 px (latents are 1/8 of the image), "
                          f"not {args.image_size}")


def run(args: argparse.Namespace) -> list[dict]:
    """The runs in --work-dir, or in a temporary folder removed afterwards (it holds every run's shards)."""
    if args.work_dir:
        return _run(args, Path(args.work_dir))
    with tempfile.TemporaryDirectory(prefix="diffscale-bench-embed-") as work:
        return _run(args, Path(work))


def _run(args: argparse.Namespace, work: Path) -> list[dict]:
    from diffscale.embed.scaling import LOAD_STEPS, findings

    save = saver(args)
    width, height = (int(v) for v in args.source_size.lower().split("x"))
    planned = configurations(args)
    for n in unrun_counts(args, planned):
        print(f"--cpus {n}: no run: serial runs 1 process × 1 thread (N CPUs: --policies intraop, or a parallel "
              "backend)", flush=True)
    gpu = any(b == "gpu" for b, _, _ in planned)
    rows: list[dict] = []
    bare: dict[str, float] = {}  # the bare model's rate per modality, measured once
    for size in sorted(args.sizes):
        made = time.perf_counter()
        manifest = synthetic_manifest(work / "data", size, (width, height))
        print(f"dataset: {size} JPEGs of {args.source_size} in {time.perf_counter() - made:.1f} s", flush=True)
        for modality in args.modalities:
            timings = []
            for backend, policy, n in configurations(args):
                out_dir = work / "runs" / f"{size}" / modality / vocab.embed_run_name(backend, policy, n)
                timing = isolated(_one_run, modality, str(manifest), str(out_dir), backend, policy, n,
                                  _settings(args, modality, backend))
                steps = ", ".join(f"{step[:-2].replace('_', ' ')} {timing[step]:.1f}" for step in LOAD_STEPS)
                issued = (f", device {timing['compute_s']:.2f} s / host issuing it {timing['host_s']:.2f} s"
                          if "host_s" in timing else "")
                print(f"  {modality} n={size} {timing['run']}: {timing['wall_s']:.2f} s (start-up "
                      f"{timing['startup_s']:.2f} s: {steps}), steady {timing['steady_items_per_s']:.1f}/s{issued}, "
                      f"{timing['processes']} x {timing['threads_per_worker'][0]} threads, affinity "
                      f"{timing['affinity_per_worker'][0]} CPUs on {timing['physical_cores']} physical cores"
                      f"{', OVERSUBSCRIBED' if timing['oversubscribed'] else ''}",
                      flush=True)
                timings.append(timing)
                save(rows + _table(timings, size))  # a time limit keeps the runs done so far
            done = _table(timings, size)
            if gpu:
                _gpu_extras(done, modality, manifest, args)
            rows += done
            _compare(rows, args, bare)
            save(rows)
            for line in findings(done):
                print(f"  finding: {line}", flush=True)
    _print_table(rows)
    return rows


def _table(timings: list[dict], size: int) -> list[dict]:
    """The scaling rows of one dataset size and modality, with the bench's own columns."""
    from diffscale.embed.scaling import scaling_rows

    rows = scaling_rows(timings)
    for row in rows:
        row["dataset_images"] = size
        row["startup_frac"] = row["startup_s"] / row["wall_s"]
        row["peak_rss_mb_mean"] = _rss_mean(timings, row)
    return rows


def _gpu_extras(rows: list[dict], modality: str, manifest: Path, args) -> None:
    """The gpu rows' compute step alone, the device's pace in the pipeline and (images) one thread's decode rate."""
    alone = isolated(compute_alone_rate, modality, str(manifest), _settings(args, modality, "gpu"))
    rate = decode_rate(manifest, args.image_size) if modality == "images" else None
    for row in rows:
        if row["backend"] == "gpu":
            row["compute_alone_items_per_s"] = alone
            row["device_items_per_s"] = row["items"] / row["compute_s"] / row["workers"]
            if rate:
                row["decode_per_thread_per_s"] = rate


def _print_table(rows: list[dict]) -> None:
    columns = ["modality", "dataset_images", "backend", "policy", "cpus", "physical_cores", "processes", "threads_per_worker",
               "oversubscribed", "startup_s", "wall_s", "items_per_s", "steady_items_per_s", "speedup",
               "steady_speedup", "steady_efficiency", "bytes_per_item", "projected_full_gb", "vs_bare",
               "compute_alone_vs_bare", "device_vs_bare"]
    print("\n" + " ".join(f"{c[:12]:>12}" for c in columns))
    for r in rows:
        print(" ".join(f"{_cell(r.get(c, '')):>12}" for c in columns))
    print(flush=True)


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)[:12]


def _rss_mean(timings: list[dict], row: dict) -> float:
    for t in timings:
        if (t["backend"], t["policy"], t["workers"]) == (row["backend"], row["policy"], row["workers"]):
            return sum(t["peak_rss_mb"]) / len(t["peak_rss_mb"])
    return math.nan


def _compare(rows: list[dict], args, bare: dict[str, float] | None = None) -> None:
    """Add the naive/pinned ratio, RSS growth across dataset sizes and, on GPUs, the bare-model ratio
    (`bare`: the bare rates measured so far, per modality; a missing one is measured and added)."""
    def key(r, **change):
        k = dict(modality=r["modality"], size=r["dataset_images"], backend=r["backend"], policy=r["policy"],
                 workers=r["workers"])
        k.update(change)
        return tuple(k.values())

    by_key = {key(r): r for r in rows}
    smallest = min(r["dataset_images"] for r in rows)
    bare = {} if bare is None else bare
    for r in rows:
        r["pinned_over_naive"] = r["pinned_over_intraop"] = math.nan
        if r["backend"] not in ("serial", "gpu") and r["policy"] in ("pinned", "naive"):
            other = by_key.get(key(r, policy="naive" if r["policy"] == "pinned" else "pinned"))
            pinned, naive = (r, other) if r["policy"] == "pinned" else (other, r)
            if other is not None:
                r["pinned_over_naive"] = pinned["steady_items_per_s"] / naive["steady_items_per_s"]
            intraop = by_key.get(key(r, backend="serial", policy="intraop"))
            if r["policy"] == "pinned" and intraop is not None:
                r["pinned_over_intraop"] = r["steady_items_per_s"] / intraop["steady_items_per_s"]
        first = by_key.get(key(r, size=smallest))
        r["rss_growth_mb"] = r["peak_rss_mb"] - first["peak_rss_mb"] if first is not None else math.nan
        if r["backend"] == "gpu":
            if r["modality"] not in bare:
                preset = args.vae if r["modality"] == "images" else args.text_encoder
                batch = args.batch if r["modality"] == "images" else args.text_batch
                bare[r["modality"]] = isolated(bare_rate, r["modality"], preset, batch, args.image_size, args.dtype)
            r["bare_items_per_s"] = bare[r["modality"]]
            r["vs_bare"] = r["steady_items_per_s"] / (r["workers"] * bare[r["modality"]])
            r["vs_bare_end_to_end"] = r["items_per_s"] / (r["workers"] * bare[r["modality"]])
            # where the rest goes: the compute step alone, and the device's pace inside the pipeline
            r["compute_alone_vs_bare"] = r["compute_alone_items_per_s"] / bare[r["modality"]]
            r["device_vs_bare"] = r["device_items_per_s"] / bare[r["modality"]]
            if r.get("decode_per_thread_per_s"):
                r["decode_threads_needed"] = bare[r["modality"]] / r["decode_per_thread_per_s"]
