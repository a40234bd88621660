"""COCO people filter: captions/s and peak memory of the whole labelling run (no image reads).

Writes a synthetic COCO captions file (default 83,000 images x 5 captions, the size of COCO 2014
train) or takes a real one (--captions), then runs `scripts/filter_coco.py` on it in a fresh
process pinned to --cpus cores, so the figures are the CLI's own: wall time from start to the last
output file, its phases (load, label, write) from run.json, and its peak resident memory.
Targets, labels only: under 60 s on one core and under 2 GB. `--image-files N` labels N synthetic
images instead, each with a small JPEG, and times the header checks (the filter checks the file of
every image it labels).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffscale.errors import DataError

TARGET_S = 60.0
TARGET_RSS_MB = 2048.0
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "filter_coco.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=83_000, help="synthetic images (5 captions each)")
    parser.add_argument("--people-fraction", type=float, default=0.6,
                        help="share of synthetic images whose captions name people (default 0.6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic captions (default 0)")
    parser.add_argument("--captions", type=Path, help="a real COCO captions json instead of the synthetic one")
    parser.add_argument("--cpus", type=int, default=1, help="cores the filter process may use (default 1)")
    parser.add_argument("--image-files", type=int, default=0,
                        help="label this many images (at most --images) that also have synthetic JPEG files, whose "
                             "headers are checked (default 0: --images of them, labels only)")


def check_arguments(args: argparse.Namespace) -> None:
    """--captions names a file now, not when the filter process fails on it."""
    if args.captions is not None and not args.captions.is_file():
        raise DataError(f"bench coco: --captions: {args.captions}: no such file (expected a COCO captions json)")


def _pin(cpus: int):
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

    def preexec() -> None:
        if available:
            os.sched_setaffinity(0, available[:max(1, cpus)])

    return preexec


def run_filter(captions: Path, out_dir: Path, cpus: int = 1, images: Path | None = None) -> dict:
    """Run the CLI on `captions` in a child process; its wall time, phases and peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cpus), "OPENBLAS_NUM_THREADS": str(cpus),
           "MKL_NUM_THREADS": str(cpus), "ARROW_NUM_THREADS": str(cpus)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    command = [sys.executable, str(SCRIPT), "--captions", str(captions), "--out-dir", str(out_dir)]
    if images is not None:
        command += ["--images", str(images)]
    proc = subprocess.run(command, env=env, preexec_fn=_pin(cpus), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    user_error = proc.stderr.strip().splitlines()[-1:] if proc.returncode == 2 else []
    if user_error and user_error[0].startswith("error: "):  # the filter's own one-line message
        raise DataError(f"bench coco: {user_error[0].removeprefix('error: ')}")
    if proc.returncode != 0:
        raise RuntimeError(f"filter_coco.py failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:
        peak_kb = before  # an earlier, larger child set the maximum; report it rather than nothing
    summary = json.loads((out_dir / "run.json").read_text())["summary"]
    return {"seconds": seconds, "peak_rss_mb": peak_kb / 1024, **summary}


def write_image_files(data: dict, folder: Path) -> None:
    """Flat-colour JPEGs of the json's sizes: real headers and end markers, cheap to make."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(data["images"]):
        Image.new("RGB", (img["width"], img["height"]), (k % 256, 80, 160)).save(folder / img["file_name"], quality=80)


def run(args: argparse.Namespace) -> list[dict]:
    from diffscale.data.synthetic import coco_captions

    with tempfile.TemporaryDirectory(prefix="bench_coco_") as tmp:
        tmp = Path(tmp)
        images = None
        if args.captions:
            captions, source = args.captions, str(args.captions)
        else:
            n = min(args.image_files, args.images) if args.image_files else args.images
            data = coco_captions(n, args.people_fraction, args.seed)
            captions, source = tmp / "captions.json", f"synthetic ({n} images, seed {args.seed})"
            captions.write_text(json.dumps(data))
            if args.image_files:
                images = tmp / "images"
                write_image_files(data, images)
                source += ", with image files"
        found = run_filter(captions, tmp / "out", args.cpus, images)
    check_s = found.get("image_check_s")
    return [{
        "stage": "coco_filter",
        "source": source,
        "cpus": args.cpus,
        "images": found["images"],
        "captions": found["captions"],
        "kept": found["kept"],
        "seconds": found["seconds"],
        "captions_per_s": found["captions"] / found["seconds"],
        "label_captions_per_s": found["captions_per_s"],
        "load_s": found["load_s"],
        "label_s": found["label_s"],
        "write_s": found["write_s"],
        "image_check_s": check_s if check_s is not None else "",
        "images_checked_per_s": found["images"] / check_s if check_s else "",
        "peak_rss_mb": found["peak_rss_mb"],
        "target_s": TARGET_S,
        "target_rss_mb": TARGET_RSS_MB,
        "meets_targets": found["seconds"] < TARGET_S and found["peak_rss_mb"] < TARGET_RSS_MB,
    }]
