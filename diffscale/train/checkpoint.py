"""Checkpoints: one dict per file, written atomically by rank 0.

A checkpoint holds the model, its EMA, the optimizer, the grad scaler, the learning-rate
schedule, the step, every process's RNG states, the run config, and what sampling needs (the
U-Net's architecture config, the noise schedule, the unconditional embedding, the latent shape
and scaling factor), plus the metrics rows so far, so a resumed run writes a complete metrics.csv.

Where they live. Snakemake deletes a job's declared outputs before it runs the job again, so the
resumable checkpoint cannot be one of them. A run directory
`results/train/unet/{hw}/{precision}-g{gpus}/` declares its files (checkpoint.pt, metrics.csv,
run.json, config.json), and the loop checkpoints to `resume/last.pt` inside it, which is not
declared and survives: a killed job re-run by Snakemake continues from there. At the end the
last checkpoint is renamed to `checkpoint.pt` (the final checkpoint, same format) as the run's
very last act, so a job killed before that point still finds `resume/last.pt`.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from diffscale import atomic
from diffscale.errors import DataError, ModelSpecError
from diffscale.train import compat

FORMAT = "diffscale-unet-checkpoint"
VERSION = 1
RESUME_DIR = "resume"
RESUME_FILE = "last.pt"
FINAL_FILE = "checkpoint.pt"


def resume_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / RESUME_DIR / RESUME_FILE


def rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, checkpoint: dict) -> Path:
    import torch

    with atomic.atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **checkpoint}, tmp)
    return Path(path)


def load(path: str | Path) -> dict:
    """Read a checkpoint on the CPU; a missing, truncated or foreign file is a DataError naming it."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, **compat.load_kwargs())
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataError(f"{path}: not a diffscale U-Net checkpoint")
    if ckpt.get("version") != VERSION:
        raise DataError(f"{path}: checkpoint version {ckpt.get('version')!r}, expected {VERSION}")
    return ckpt


def check_weights(state: dict, model, where: str, expected: str) -> None:
    """Raise ModelSpecError naming the first tensor whose name or shape the model does not share."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise ModelSpecError(f"{where}: holds no {name!r}; it is not a checkpoint of {expected}")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ModelSpecError(
                f"{where}: a U-Net of another size than {expected}: {name} is {list(state[name].shape)} "
                f"in the checkpoint, {list(tensor.shape)} in the model")
    extra = sorted(set(state) - set(own))
    if extra:
        raise ModelSpecError(f"{where}: has {extra[0]!r}, which {expected} lacks; it is another architecture")


def full_unet_config(arch: dict) -> dict:
    """An architecture config with the class defaults filled in, as a built model's `config` is."""
    import torch
    from diffusers import UNet2DConditionModel

    if hasattr(torch, "get_default_device"):  # the meta device as a context: nothing is allocated
        with torch.device("meta"):
            return dict(UNet2DConditionModel.from_config(arch).config)
    return dict(UNet2DConditionModel.from_config(arch).config)


def architecture_differences(saved: dict, current: dict) -> list[str]:
    """Keys of two full architecture configs whose values differ (private `_` keys ignored)."""
    keys = {k for k in set(saved) | set(current) if not str(k).startswith("_")}
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return sorted(k for k in keys if norm(saved.get(k)) != norm(current.get(k)))

