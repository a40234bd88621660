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

import csv
import json
from pathlib import Path

from diffscale import atomic
from diffscale.errors import DataError
from diffscale.flux.quality import grid
from diffscale.io import csv_text

TRAIN_COLUMNS = ["hw", "gpus", "steps", "resolution", "batch_size", "lora_rank", "grad_checkpointing",
                 "steps_per_s", "images_per_s", "tflops", "mfu", "speedup", "efficiency", "setup_s", "cache_s",
                 "train_s", "sampling_s", "saving_s", "total_s", "peak_mem_mb", "final_loss", "model", "device",
                 "random_weights", "run"]
LOSS_COLUMNS = ["hw", "gpus", "steps", "step", "loss", "device", "random_weights", "run"]
QUALITY_COLUMNS = ["hw", "gpus", "steps", "checkpoint_step", "psnr", "ssim", "n_images", "device",
                   "random_weights", "run"]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise DataError(f"{path}: missing or unreadable; the run did not finish") from None


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        raise DataError(f"{path}: missing or unreadable") from None



def train_rows(run_dirs: list[Path]) -> list[dict]:
    rows = []
    for run in run_dirs:
        res = _read_json(run / "run.json")["results"]
        resolution = res.get("resolution")
        rows.append({**{k: res.get(k) for k in TRAIN_COLUMNS}, "resolution": resolution, "run": str(run)})
    for row in rows:
        base = [r for r in rows if r["hw"] == row["hw"] and r["steps"] == row["steps"] and r["gpus"] == 1]
        if base and base[0]["steps_per_s"]:
            row["speedup"] = row["steps_per_s"] / base[0]["steps_per_s"]
            row["efficiency"] = row["speedup"] / row["gpus"]
    return rows


def _tag(run: Path) -> dict:
    res = _read_json(run / "run.json")["results"]
    return {"hw": res["hw"], "gpus": res["gpus"], "steps": res["steps"], "device": res["device"],
            "random_weights": res["random_weights"], "run": str(run)}


def loss_rows(run_dirs: list[Path]) -> list[dict]:
    return [{**_tag(run), "step": int(r["step"]), "loss": float(r["loss"])}
            for run in run_dirs for r in _read_csv(run / "metrics.csv")]


def quality_rows(run_dirs: list[Path]) -> list[dict]:
    return [{**_tag(run), **r} for run in run_dirs for r in _read_csv(run / "quality.csv")]


def infer_rows(infer_dirs: list[Path]) -> list[dict]:
    rows = []
    for folder in infer_dirs:
        rows += [{**r, "run": str(folder)} for r in _read_csv(folder / "infer.csv")]
    return rows


def sample_grid_rows(run_dirs: list[Path]) -> list[list[str | None]]:
    """Per run, the first sample prompt's image at each checkpoint."""
    rows = []
    for run in run_dirs:
        checkpoints = _read_json(run / "run.json")["results"]["checkpoints"]
        rows.append([c["samples"][0] if c["samples"] else None for c in checkpoints])
    return rows


def write_tables(run_dirs: list[Path], infer_dirs: list[Path], out_dir: Path, grid_path: Path) -> list[Path]:
    run_dirs, infer_dirs = [Path(p) for p in run_dirs], [Path(p) for p in infer_dirs]
    infer = infer_rows(infer_dirs)
    infer_columns = list(dict.fromkeys([k for r in infer for k in r])) if infer else ["hw", "model", "run"]
    written = [
        atomic.write_text(out_dir / "flux_train.csv", csv_text(train_rows(run_dirs), TRAIN_COLUMNS)),
        atomic.write_text(out_dir / "flux_loss.csv", csv_text(loss_rows(run_dirs), LOSS_COLUMNS)),
        atomic.write_text(out_dir / "flux_quality.csv", csv_text(quality_rows(run_dirs), QUALITY_COLUMNS)),
        atomic.write_text(out_dir / "flux_infer.csv", csv_text(infer, infer_columns)),
    ]
    rows = sample_grid_rows(run_dirs)
    with atomic.atomic_path(grid_path) as tmp:
        grid(rows).save(tmp, format="PNG")
    return [*written, Path(grid_path)]
