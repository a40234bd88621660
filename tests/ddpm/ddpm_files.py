"""CIFAR-10 as its sources ship it, written from an array for the DDPM data tests: the official python
batches, their .tar.gz and PNG folders. (A module of its own: `from conftest import` resolves to
whichever test folder's conftest was imported first.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffscale import cifar


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

    folder = write_batches(path.parent / "extract" / cifar.BATCH_DIR, images)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=cifar.BATCH_DIR)
    return path


def write_pngs(root: Path, images: np.ndarray, classes: bool) -> Path:
    """train/{i}.png (the Kaggle copy: numbered from 1), or train/<class>/{i:05d}.png."""
    from PIL import Image

    for i, image in enumerate(images):
        folder = root / "train" / (f"class{i % 3}" if classes else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / (f"{i:05d}.png" if classes else f"{i + 1}.png"))
    return root
