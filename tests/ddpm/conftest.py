"""Fixtures of the DDPM study tests: the demo config shortened to tiny windows, a CIFAR-like set and
its uint8 cache, and one run directory per stage (tiny model, CPU), shared by the module."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from diffscale.config import load_config
from diffscale.ddpm import data as ddata

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ddpm_config() -> dict:
    cfg = copy.deepcopy(load_config(ROOT / "config.yaml"))
    cfg["ddpm"].update(steps=2, warmup_steps=2, repeats=2, profile_steps=2, compile_backend="aot_eager")
    return cfg


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """20 random 32x32 RGB images as CIFAR stores them."""
    return np.random.default_rng(0).integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def cache(images, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddpm-data") / "cifar-uint8.npy"
    np.save(path, images)
    return path


def write_batches(folder: Path, images: np.ndarray) -> Path:
    """The official python batch layout: data_batch_1..5 (pickled dicts, channel-major rows)."""
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(images, 5), start=1):
        rows = part.transpose(0, 3, 1, 2).reshape(len(part), -1)
        blob = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": [0] * len(part), b"data": rows}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(blob))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}))
    return folder


def write_archive(path: Path, images: np.ndarray) -> Path:
    import tarfile

    folder = write_batches(path.parent / "extract" / ddata.BATCH_DIR, images)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=ddata.BATCH_DIR)
    return path


def write_pngs(root: Path, images: np.ndarray, classes: bool) -> Path:
    """train/{i}.png (the Kaggle copy: numbered from 1), or train/<class>/{i:05d}.png."""
    from PIL import Image

    for i, image in enumerate(images):
        folder = root / "train" / (f"class{i % 3}" if classes else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / (f"{i:05d}.png" if classes else f"{i + 1}.png"))
    return root
