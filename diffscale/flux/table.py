"""The study's contract tables (results/bench/flux_*.csv) and sample grid, from the run folders.

  flux_train.csv    one row per run (run.json): rates, speedup and efficiency against the 1-GPU run
                    of the same hardware and steps (same global batch), phase times, final loss
  flux_loss.csv     every metrics row of every run (loss curves)
  flux_quality.csv  PSNR/SSIM per run and checkpoint (quality.py has the protocol)
  flux_infer.csv    the inference rows of every hardware key
  flux_samples.png  one row per run, one column per checkpoint (step 0 first): the first sample
                    prompt, same seed everywhere
Every row carries `device`, `random_weights` and `run` (the folder whose run.json made it).
"""

from __future__ import annotations

from pathlib import Path

from diffscale import atomic, provenance
from diffscale.errors import DataError
from diffscale.flux.quality import grid
from diffscale.io import csv_text, read_csv, read_image
from diffscale.metrics import compute_ratio, cpus_used

TRAIN_COLUMNS = ["hw", "gpus", "cpus", "steps", "resolution", "batch_size", "lora_rank", "grad_checkpointing",
                 "steps_per_s", "images_per_s", "tflops", "mfu", "speedup", "efficiency", "setup_s", "cache_s",
                 "train_s", "sampling_s", "saving_s", "total_s", "job_time_s", "job_time_whole", "earlier_tries",
                 "earlier_tries_s", "resumed", "peak_mem_mb", "final_loss",
                 "model", "device", "random_weights", "run"]
LOSS_COLUMNS = ["hw", "gpus", "steps", "step", "loss", "device", "random_weights", "run"]
QUALITY_COLUMNS = ["hw", "gpus", "steps", "checkpoint_step", "psnr", "ssim", "n_images", "device",
                   "random_weights", "run"]
# what the tables take from a run's files, checked before anything is written
METRICS_REQUIRED = ["step", "loss"]
QUALITY_REQUIRED = ["checkpoint_step", "psnr", "ssim", "n_images"]
TAG_KEYS = ["hw", "gpus", "steps", "device", "random_weights"]


def _results(run: Path, required: list[str] = ()) -> dict:
    return provenance.read_results(run, "FLUX training run", required)


def train_rows(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for run in run_dirs:
        res = _results(run)
        resolution = res.get("resolution")
        rows.append({**{k: res.get(k) for k in TRAIN_COLUMNS}, "resolution": resolution,
                     "cpus": cpus_used(res["gpus"], res.get("threads")), "run": str(run)})
    for row in rows:
        base = [r for r in rows if r["hw"] == row["hw"] and r["steps"] == row["steps"] and r["gpus"] == 1]
        if base and base[0]["steps_per_s"]:
            row["speedup"] = row["steps_per_s"] / base[0]["steps_per_s"]
            row["efficiency"] = row["speedup"] / compute_ratio(row["gpus"], 1, row["cpus"], base[0]["cpus"])
    return rows


def _tag(run: Path) -> dict:
    res = _results(run, TAG_KEYS)
    return {"hw": res["hw"], "gpus": res["gpus"], "steps": res["steps"], "device": res["device"],
            "random_weights": res["random_weights"], "run": str(run)}


def loss_rows(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for run in run_dirs:
        path = run / "metrics.csv"
        rows += [{**_tag(run), **_loss(path, line, r)}
                 for line, r in enumerate(read_csv(path, required=METRICS_REQUIRED), start=2)]
    return rows


def _loss(path: Path, line: int, row: dict) -> dict:
    try:
        return {"step": int(row["step"]), "loss": float(row["loss"])}
    except (TypeError, ValueError):  # an empty cell, a short row (None) or text
        raise DataError(f"{path}: line {line}: step {row['step']!r} and loss {row['loss']!r} must be numbers") from None


def quality_rows(run_dirs: list[Path]) -> list[dict]:
    return [{**_tag(run), **r} for run in run_dirs for r in read_csv(run / "quality.csv", required=QUALITY_REQUIRED)]


def infer_rows(infer_dirs: list[Path]) -> list[dict]:
    rows = []
    for folder in infer_dirs:
        rows += [{**r, "run": str(folder)} for r in read_csv(folder / "infer.csv")]
    return rows


def sample_grid_rows(run_dirs: list[Path]) -> list[list[Path | None]]:
    """Per run, the first sample prompt's image at each checkpoint, in the run folder being read."""
    rows = []
    for run in run_dirs:
        checkpoints = _results(run, ["checkpoints"])["checkpoints"]
        rows.append([_sample(run, c["samples"][0]) if c.get("samples") else None for c in checkpoints])
    return rows


def _sample(run: Path, listed: str) -> Path:
    """run.json lists a sample as the loop saw it: <out_dir>/samples/step-NNNNN/prompt_I.png, relative
    to the loop's working directory, so in a moved or copied run folder it names the original (or
    nothing). The parts after `samples` are kept and the folder is the one being read."""
    parts = Path(listed).parts
    inside = parts[len(parts) - parts[::-1].index("samples"):] if "samples" in parts else parts[-1:]
    path = run.joinpath("samples", *inside)
    if not path.is_file():
        raise DataError(f"{path}: sample image missing (run.json lists {listed})")
    read_image(path)  # a corrupt sample is named here, not inside the grid
    return path


def write_tables(run_dirs: list[Path], infer_dirs: list[Path], out_dir: Path, grid_path: Path) -> list[Path]:
    run_dirs, infer_dirs = provenance.distinct_runs(run_dirs), provenance.distinct_runs(infer_dirs)
    # every input is read and checked (columns, sample images) before the first output is written
    infer = infer_rows(infer_dirs)
    infer_columns = list(dict.fromkeys([k for r in infer for k in r])) if infer else ["hw", "model", "run"]
    tables = {
        "flux_train.csv": csv_text(train_rows(run_dirs), TRAIN_COLUMNS),
        "flux_loss.csv": csv_text(loss_rows(run_dirs), LOSS_COLUMNS),
        "flux_quality.csv": csv_text(quality_rows(run_dirs), QUALITY_COLUMNS),
        "flux_infer.csv": csv_text(infer, infer_columns),
    }
    rows = sample_grid_rows(run_dirs)
    if not any(path for row in rows for path in row):
        raise DataError(f"{', '.join(str(run / 'run.json') for run in run_dirs)}: no checkpoint has a sample image")
    image = grid(rows)
    written = [Path(out_dir) / name for name in tables] + [Path(grid_path)]
    with atomic.all_or_none(written):
        for name, text in tables.items():
            atomic.write_text(Path(out_dir) / name, text)
        with atomic.atomic_path(grid_path) as tmp:
            image.save(tmp, format="PNG")
    return written
