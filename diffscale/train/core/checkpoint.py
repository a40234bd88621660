"""Checkpoints: one dict per file, written atomically by rank 0, resumed exactly.

A loop's checkpoint is a plain dict it builds itself (weights, optimizer, precision.state_dict(),
lr schedule, step, its config, metrics rows so far, ...) plus `"rng"`: every process's RNG states,
gathered with `gather_rng(ctx)`, so a resumed run draws the same numbers as one never interrupted.

    ckpt = checkpoint.Store(out_dir, format="diffscale-flux-checkpoint", version=1)
    ...
    rng = checkpoint.gather_rng(ctx)                  # on every process (a collective)
    if ctx.is_main:
        ckpt.save({"step": done, "model": ..., "rng": rng, ...})   # -> out_dir/resume/last.pt
    ...
    if ckpt.resume_path.is_file():                    # at start-up, resume
        state = ckpt.load(ckpt.resume_path)
        checkpoint.restore_rng(state["rng"], ctx.rank)
    ...
    ckpt.finalize()                                   # resume/last.pt -> checkpoint.pt, the last act

Where they live. Snakemake deletes a job's declared outputs before it runs the job again, so the
resumable checkpoint cannot be one of them: the loop writes `resume/last.pt` inside its run
directory (not declared, survives a killed job), and at the very end renames it to the declared
`checkpoint.pt`. A job killed before that still finds `resume/last.pt`.

`load` reads on the CPU; a missing, truncated or foreign file (another `format`) or another
`version` is a DataError naming the file.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np

from diffscale import atomic
from diffscale.errors import DataError
from diffscale.train.core import compat

RESUME_DIR = "resume"
RESUME_FILE = "last.pt"
FINAL_FILE = "checkpoint.pt"


def resume_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / RESUME_DIR / RESUME_FILE


def final_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / FINAL_FILE


def rng_state() -> dict:
    """This process's torch, numpy, Python (and CUDA, where present) RNG states."""
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


def gather_rng(ctx) -> list[dict]:
    """Every process's RNG states in rank order (a collective: call it on every process)."""
    return ctx.gather(rng_state())


def restore_rng(states: list[dict], rank: int) -> None:
    """Set this process's RNG states from a checkpoint's list (a run resumed on more processes
    than it was saved with leaves the extra ones as seeded)."""
    if rank < len(states):
        set_rng_state(states[rank])


def save(path: str | Path, checkpoint: dict, format: str, version: int) -> Path:
    """torch.save {"format", "version", **checkpoint} atomically (path.tmp, then os.replace)."""
    import torch

    with atomic.atomic_path(path) as tmp:
        torch.save({"format": format, "version": version, **checkpoint}, tmp)
    return Path(path)


def load(path: str | Path, format: str, version: int, kind: str = "diffscale") -> dict:
    """Read a checkpoint on the CPU; DataError naming the file if it is missing, unreadable, not of
    `format` ("not a {kind} checkpoint") or of another version."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):  # torch.load's own words here are about mmap or a miniz internal error
        raise DataError(f"{path}: not a readable checkpoint (torch.save writes a zip archive and this file is "
                        "not one: a truncated copy, or another kind of file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, **compat.load_kwargs())
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != format:
        raise DataError(f"{path}: not a {kind} checkpoint")
    if ckpt.get("version") != version:
        raise DataError(f"{path}: checkpoint version {ckpt.get('version')!r}, expected {version}")
    return ckpt


def finalize(out_dir: str | Path) -> Path:
    """Move resume/last.pt to checkpoint.pt (the run's last act) and drop the empty resume/."""
    resume = resume_path(out_dir)
    final = final_path(out_dir)
    os.replace(resume, final)
    with contextlib.suppress(OSError):
        resume.parent.rmdir()
    return final


class Store:
    """The checkpoints of one run directory in one format: save/load/finalize with it bound."""

    def __init__(self, out_dir: str | Path, format: str, version: int = 1, kind: str | None = None):
        self.out_dir, self.format, self.version = Path(out_dir), format, version
        self.kind = kind or format

    @property
    def resume_path(self) -> Path:
        return resume_path(self.out_dir)

    @property
    def final_path(self) -> Path:
        return final_path(self.out_dir)

    def save(self, checkpoint: dict, path: str | Path | None = None) -> Path:
        return save(path or self.resume_path, checkpoint, self.format, self.version)

    def load(self, path: str | Path | None = None) -> dict:
        return load(path or self.resume_path, self.format, self.version, self.kind)

    def finalize(self) -> Path:
        return finalize(self.out_dir)
