"""CIFAR-10 as its sources ship it: the three formats `data.cifar` may name, read one way by every
user (the DDPM study decodes them; the inputs summary counts them).

  cifar-10-python.tar.gz        the official python batches (data_batch_1..5, the training set)
  cifar-10-batches-py/          the same, extracted
  an image folder               train/*.png (the Kaggle copy the study used), train/<class>/*.png, or
                                the same without train/ (the demo's <class>/*.jpg); 32x32 RGB each

Image order: the python batches in file order; image files by numeric stem (1.png < 2.png < 10.png),
then name, then class folder, so a folder written from the array in order reads back in order.
"""

from __future__ import annotations

import pickle
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np

from diffscale.errors import DataError
from diffscale.io import image_file

SIZE = 32
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
META = "batches.meta"  # the class names of the batches' integer labels
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _unpickle(blob: bytes, where: str) -> dict:
    try:
        batch = pickle.loads(blob, encoding="bytes")
        batch[b"data"] = np.asarray(batch[b"data"], dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise DataError(f"{where}: not a CIFAR-10 python batch (a pickled dict with b'data')") from None
    return {**batch, "where": where}


def _images_of(batch: dict) -> np.ndarray:
    data = batch[b"data"]
    if data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE:
        raise DataError(f"{batch['where']}: CIFAR-10 batch data has shape {list(data.shape)}, expected [N, 3072]")
    return data.reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)


def _label_names(blob: bytes | None) -> list[str]:
    """The class names of batches.meta; [] where it is absent or unreadable (labels then show as
    their numbers: the images, what the study trains on, do not depend on it)."""
    try:
        return [name.decode() for name in pickle.loads(blob, encoding="bytes")[b"label_names"]]
    except Exception:  # noqa: BLE001 - absent (None) or not the expected dict
        return []


def archive_batches(path: Path) -> tuple[list[dict], list[str]]:
    """The unpickled training batches of cifar-10-python.tar.gz, and its class names."""
    try:
        with tarfile.open(path) as tar:
            names = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in TRAIN_BATCHES if n not in names]
            if missing:
                raise DataError(f"{path}: not the CIFAR-10 python archive (no {BATCH_DIR}/{missing[0]})")
            batches = [_unpickle(tar.extractfile(names[n]).read(), f"{path}:{names[n].name}") for n in TRAIN_BATCHES]
            return batches, _label_names(tar.extractfile(names[META]).read() if META in names else None)
    except tarfile.TarError as exc:  # its message may go on with one line per method tried: keep the first
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(":")
        raise DataError(f"{path}: not a readable tar archive ({reason})") from None


def folder_batches(folder: Path) -> tuple[list[dict], list[str]]:
    """The unpickled training batches of an extracted cifar-10-batches-py folder, and its class names."""
    missing = [n for n in TRAIN_BATCHES if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder}: not a CIFAR-10 python batch folder (no {missing[0]})")
    batches = [_unpickle((folder / n).read_bytes(), str(folder / n)) for n in TRAIN_BATCHES]
    return batches, _label_names((folder / META).read_bytes() if (folder / META).is_file() else None)


def _order(path: Path) -> tuple:
    stem = path.stem
    return (int(stem) if stem.isdigit() else float("inf"), stem, path.parent.name)


def _image_root(folder: Path) -> Path:
    return folder / "train" if (folder / "train").is_dir() else folder


def image_files(folder: Path) -> list[Path]:
    """The image files of a CIFAR image folder (train/*.png, train/<class>/*.png, or without train/)."""
    root = _image_root(folder)
    files = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    files += [p for d in root.iterdir() if d.is_dir() for p in d.iterdir()
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root}: no images (expected train/*.png or train/<class>/*.png, "
                        f"{'/'.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=_order)


def decode_image(path: Path) -> np.ndarray:
    """One 32x32 RGB image as uint8 [32, 32, 3]; anything else is a one-line DataError."""
    with image_file(path) as img:
        if img.mode != "RGB" or img.size != (SIZE, SIZE):
            raise DataError(f"{path}: {img.size[0]}x{img.size[1]} {img.mode}, expected a 32x32 RGB image")
        return np.asarray(img, dtype=np.uint8)


def source_format(source: str | Path) -> tuple[str, Path]:
    """(format, path) of a CIFAR-10 source: "archive", "batches" (the extracted folder) or "images"."""
    source = Path(source)
    if source.is_file():
        return "archive", source
    if not source.is_dir():
        raise DataError(f"{source}: CIFAR-10 not found (data.cifar: the python archive, its folder, "
                        "or an image folder)")
    if (source / BATCH_DIR).is_dir():
        source = source / BATCH_DIR
    if any((source / n).exists() for n in TRAIN_BATCHES):
        return "batches", source
    return "images", source


def _batches(kind: str, path: Path) -> tuple[list[dict], list[str]]:
    return archive_batches(path) if kind == "archive" else folder_batches(path)


def read_images(source: str | Path) -> np.ndarray:
    """Decode any of the three formats to uint8 [N, 32, 32, 3]."""
    kind, path = source_format(source)
    if kind == "images":
        return np.stack([decode_image(p) for p in image_files(path)])
    return np.concatenate([_images_of(b) for b in _batches(kind, path)[0]])


def describe(source: str | Path) -> dict:
    """What a source holds, without decoding an image: its format, its number of training images and
    their count per class ({} where the format has no labels: Kaggle's flat train/*.png)."""
    kind, path = source_format(source)
    if kind == "images":
        root, files = _image_root(path), image_files(path)
        classes = Counter(p.parent.name for p in files if p.parent != root)
        return {"format": "image folder", "images": len(files), "classes": dict(sorted(classes.items()))}
    batches, names = _batches(kind, path)
    images = sum(len(_images_of(b)) for b in batches)
    classes = Counter(names[i] if i < len(names) else str(i) for b in batches for i in b.get(b"labels", []))
    return {"format": "python archive" if kind == "archive" else "python batches", "images": images,
            "classes": dict(sorted(classes.items()))}
