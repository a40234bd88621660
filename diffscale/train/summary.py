"""The U-Net training study for the report: one table row per run, loss curves, a sample grid.

Built only from what the runs left in their directories (run.json, metrics.csv, samples.json),
so a table row can always be traced to the run that produced it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from diffscale import atomic, figures, io, provenance
from diffscale.errors import DataError
from diffscale.metrics import compute_ratio, efficiency, speedup
from diffscale.train.generate import MANIFEST

COLUMNS = ["hw", "precision", "tf32", "gpus", "cpus", "device", "samples_per_s", "samples_per_s_per_device", "speedup",
           "efficiency", "final_loss", "tflops", "mfu", "train_time_s", "job_time_s", "job_time_whole", "earlier_tries",
           "earlier_tries_s", "steps", "global_batch", "micro_batch",
           "model", "params", "gflops_per_sample", "resumed", "partition", "slurm_job", "config_hash"]
LOSS_CURVE = ["step", "loss"]  # the columns of a run's metrics.csv the loss figure plots


def study_rows(run_dirs: list[str | Path]) -> list[dict]:
    """One row per run; speedup and efficiency against the 1-device run of the same hw and precision
    (efficiency per GPU, or per CPU on CPUs: metrics.compute_ratio)."""
    rows = []
    for run_dir in provenance.distinct_runs(run_dirs):
        record = provenance.read_record(run_dir)
        results = provenance.results_of(record, run_dir, "training run")
        slurm = record.get("slurm") or {}
        rows.append({
            **{k: results.get(k) for k in COLUMNS if k in results},
            "gflops_per_sample": results["flops_per_sample"] / 1e9 if results.get("flops_per_sample") else None,
            "partition": slurm.get("partition", ""),
            "slurm_job": slurm.get("job_id", ""),
            "config_hash": record.get("config_hash"),
            # train.tf32: fp32 matmuls on TF32 tensor cores where the GPU has them (Ampere on; not a K80)
            "tf32": ((record.get("config") or {}).get("train") or {}).get("tf32"),
        })
    base = {(r["hw"], r["precision"]): r for r in rows if r["gpus"] == 1}
    for row in rows:
        first = base.get((row["hw"], row["precision"]))
        one = first["samples_per_s"] if first else None
        # throughput ratio: the global batch is fixed, so time per step ~ 1 / samples_per_s
        row["speedup"] = speedup(1.0 / one, 1.0 / row["samples_per_s"]) if one else None
        ratio = compute_ratio(row["gpus"], 1, row.get("cpus"), first.get("cpus")) if one else None
        row["efficiency"] = efficiency(1.0 / one, 1.0 / row["samples_per_s"], ratio) if one else None
    return [{k: row.get(k) for k in COLUMNS} for row in rows]


def run_label(run_dir: str | Path) -> str:
    """`hw precision-gN` from a run directory results/train/unet/<hw>/<variant>."""
    path = Path(run_dir)
    return f"{path.parent.name} {path.name}"


def write_study(run_dirs: list[str | Path], table: str | Path, loss_figure: str | Path) -> Path:
    """The study table (CSV) and the loss curves of every run (PNG)."""
    plt = figures.pyplot()
    import pandas as pd

    # every input is read and checked before the first output is written
    frame = pd.DataFrame(study_rows(run_dirs), columns=COLUMNS)
    curves = [(run_dir, _loss_curve(run_dir)) for run_dir in map(Path, run_dirs)]
    with atomic.all_or_none([table, loss_figure]):
        with atomic.atomic_path(table) as tmp:
            frame.to_csv(tmp, index=False)

        fig, ax = plt.subplots(figsize=(7, 4))
        styles = ["-", "--", ":", "-."]
        for number, (run_dir, metrics) in enumerate(curves):
            # runs share their sample sequence, so their curves may overlap: line styles keep them apart
            ax.plot(metrics["step"], metrics["loss"], linestyle=styles[number % len(styles)], marker=".",
                    label=run_label(run_dir))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (MSE of predicted noise)")
        ax.set_title("Text-conditioned U-Net: training loss per run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        figures.save(fig, loss_figure, dpi=120)
    return Path(table)


def _loss_curve(run_dir: Path):
    """A run's metrics.csv (a DataFrame), or a DataError naming the file and the first missing column."""
    path = run_dir / "metrics.csv"
    return io.read_frame(path, missing=provenance.UNFINISHED, required=LOSS_CURVE)


def _gallery(folder: Path) -> dict:
    """A generate.py folder's samples.json, checked for what the grid reads: a DataError naming it."""
    path = folder / MANIFEST
    manifest = io.read_json(path, missing="missing; generate.py did not finish")
    images = manifest.get("images") if isinstance(manifest, dict) else None
    if not images or not isinstance(images, list) or not all(isinstance(i, dict) and {"file", "prompt"} <= i.keys()
                                                             for i in images):
        raise DataError(f"{path}: expected 'images', a non-empty list of {{file, prompt}} entries (generate.py's)")
    settings = manifest.get("settings")
    wanted = ("scheduler", "num_inference_steps", "guidance_scale", "seed", "weights")
    if not isinstance(settings, dict) or not set(wanted) <= settings.keys():
        raise DataError(f"{path}: expected 'settings' with {', '.join(wanted)} (generate.py's)")
    return manifest


def write_sample_grid(sample_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """One row per run, one column per prompt, from generate.py output directories."""
    plt = figures.pyplot()

    manifests = [(Path(d), _gallery(Path(d))) for d in sample_dirs]
    if not manifests:
        raise DataError("no sample directories given")
    prompts = [item["prompt"] for item in manifests[0][1]["images"]]
    for folder, manifest in manifests[1:]:
        if [item["prompt"] for item in manifest["images"]] != prompts:
            raise DataError(f"{folder / MANIFEST}: other prompts than {manifests[0][0] / MANIFEST}")
    labels = labels or [run_label(folder) for folder, _ in manifests]
    # every image is read before drawing: a bad one is an error before a figure is open
    images = [[io.read_image(folder / item["file"], missing="sample image missing; generate.py did not finish")
               for item in manifest["images"]] for folder, manifest in manifests]
    rows, cols = len(manifests), len(prompts)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols + 0.6, 1.9 * rows + 0.5), squeeze=False)
    for r, (folder, manifest) in enumerate(manifests):
        for c, item in enumerate(manifest["images"]):
            ax = axes[r][c]
            ax.imshow(images[r][c])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("\n".join(textwrap.wrap(item["prompt"], 24)), fontsize=7)
            if c == 0:
                ax.set_ylabel(labels[r], fontsize=8)
    settings = manifests[0][1]["settings"]
    fig.suptitle(f"{settings['scheduler']}, {settings['num_inference_steps']} steps, guidance "
                 f"{settings['guidance_scale']}, seed {settings['seed']}, {settings['weights']} weights", fontsize=8)
    fig.tight_layout()
    figures.save(fig, out, dpi=120)
    return Path(out)
