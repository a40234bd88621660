"""CIFAR-10 for the DDPM study: one loader for the three ways the data set comes, decoded once.

Sources (`data.cifar`):
  cifar-10-python.tar.gz        the official python batches (data_batch_1..5, the training set)
  cifar-10-batches-py/          the same, extracted
  an image folder               train/*.png (the Kaggle copy the study used), train/<class>/*.png, or
                                the same without train/ (the demo's <class>/*.jpg); 32x32 RGB each
All three decode to one uint8 array [N, 32, 32, 3], cached as a .npy file (50,000 images = 154 MB)
by `prepare`, so the DataLoader sweep measures the loader, not PNG decoding; `FileImages` decodes the
files in every step instead (ddpm.decode_each_step: the study's setting).

Image order: the python batches in file order; image files by numeric stem (1.png < 2.png < 10.png),
then name, then class folder, so a folder written from the array in order reads back in order.

The batch order is a function of (seed, step) alone, and so is each image's horizontal flip: every
variant of a sweep (worker count, precision, compile, GPU count) sees the same images in the same
steps, so differences in its loss are the optimisation's. Each item also carries the id of the
DataLoader worker that made it, which is how a run proves it used the workers it says.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from diffscale import atomic
from diffscale.errors import DataError

SIZE = 32
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# --- reading the three formats ------------------------------------------------------------------

def _from_batch(blob: bytes, where: str) -> np.ndarray:
    try:
        batch = pickle.loads(blob, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise DataError(f"{where}: not a CIFAR-10 python batch (a pickled dict with b'data')") from None
    if data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE:
        raise DataError(f"{where}: CIFAR-10 batch data has shape {list(data.shape)}, expected [N, 3072]")
    return data.reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)


def read_archive(path: Path) -> np.ndarray:
    """The training images of cifar-10-python.tar.gz."""
    try:
        with tarfile.open(path) as tar:
            names = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in TRAIN_BATCHES if n not in names]
            if missing:
                raise DataError(f"{path}: not the CIFAR-10 python archive (no {BATCH_DIR}/{missing[0]})")
            return np.concatenate([_from_batch(tar.extractfile(names[n]).read(), f"{path}:{names[n].name}")
                                   for n in TRAIN_BATCHES])
    except tarfile.TarError as exc:  # its message may go on with one line per method tried: keep the first
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(":")
        raise DataError(f"{path}: not a readable tar archive ({reason})") from None


def read_batch_folder(folder: Path) -> np.ndarray:
    """The training images of an extracted cifar-10-batches-py folder."""
    missing = [n for n in TRAIN_BATCHES if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder}: not a CIFAR-10 python batch folder (no {missing[0]})")
    return np.concatenate([_from_batch((folder / n).read_bytes(), str(folder / n)) for n in TRAIN_BATCHES])


def _order(path: Path) -> tuple:
    stem = path.stem
    return (int(stem) if stem.isdigit() else float("inf"), stem, path.parent.name)


def image_files(folder: Path) -> list[Path]:
    """The image files of a CIFAR image folder (train/*.png, train/<class>/*.png, or without train/)."""
    root = folder / "train" if (folder / "train").is_dir() else folder
    files = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    files += [p for d in root.iterdir() if d.is_dir() for p in d.iterdir()
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root}: no images (expected train/*.png or train/<class>/*.png, "
                        f"{'/'.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=_order)


def decode_image(path: Path) -> np.ndarray:
    """One 32x32 RGB image as uint8 [32, 32, 3]; anything else is a one-line DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode != "RGB" or img.size != (SIZE, SIZE):
                raise DataError(f"{path}: {img.size[0]}x{img.size[1]} {img.mode}, expected a 32x32 RGB image")
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None


def read_images(source: str | Path) -> np.ndarray:
    """Decode any of the three formats to uint8 [N, 32, 32, 3]."""
    source = Path(source)
    if source.is_file():
        return read_archive(source)
    if not source.is_dir():
        raise DataError(f"{source}: CIFAR-10 not found (data.cifar: the python archive, its folder, "
                        "or an image folder)")
    if (source / BATCH_DIR).is_dir():
        source = source / BATCH_DIR
    if any((source / n).exists() for n in TRAIN_BATCHES):
        return read_batch_folder(source)
    return np.stack([decode_image(p) for p in image_files(source)])


# --- the cache ----------------------------------------------------------------------------------

def prepare(source: str | Path, cache: str | Path) -> dict:
    """Decode `source` once into the uint8 array file `cache` (written atomically)."""
    images = read_images(source)
    with atomic.atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, images)
    return {"source": str(source), "cache": str(cache), "images": int(len(images)),
            "shape": list(images.shape), "bytes": int(images.nbytes)}


def load_cache(cache: str | Path) -> np.ndarray:
    """The cached array, memory-mapped (DataLoader workers share the pages)."""
    try:
        images = np.load(cache, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{cache}: not a readable CIFAR cache ({exc}); re-run the ddpm_data rule") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3):
        raise DataError(f"{cache}: array {images.dtype} {list(images.shape)}, expected uint8 [N, 32, 32, 3]")
    return images


# --- batches ------------------------------------------------------------------------------------

def step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> 1)


def step_items(n_images: int, global_batch: int, seed: int, step: int) -> list[tuple[int, bool]]:
    """(image index, flip) for the whole global batch of `step`: epochs of a seeded permutation."""
    per_epoch = n_images // global_batch
    if per_epoch == 0:
        raise DataError(f"{n_images} images cannot fill one global batch of {global_batch}")
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_images)
    picked = order[position * global_batch:(position + 1) * global_batch]
    flips = np.random.default_rng([seed, epoch, position, 1]).random(global_batch) < 0.5
    return [(int(i), bool(f)) for i, f in zip(picked, flips)]


class StepSampler:
    """Yields, for steps start..end-1, this rank's slice of the global batch as (index, flip) items."""

    def __init__(self, n_images: int, batch: int, world: int, rank: int, seed: int, start: int, end: int):
        self.n, self.batch, self.world, self.rank = n_images, batch, world, rank
        self.seed, self.start, self.end = seed, start, end

    def __iter__(self):
        for step in range(self.start, self.end):
            items = step_items(self.n, self.batch * self.world, self.seed, step)
            yield items[self.rank * self.batch:(self.rank + 1) * self.batch]

    def __len__(self) -> int:
        return self.end - self.start


def _worker_id() -> int:
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return -1 if info is None else info.id


class CachedImages:
    """Items from the cached uint8 array: (CHW uint8 image, flipped as told, worker id)."""

    def __init__(self, cache: str | Path):
        self.cache = str(cache)
        self.images = load_cache(cache)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, bool]):
        index, flip = item
        image = self.images[index]
        if flip:
            image = image[:, ::-1]
        return np.ascontiguousarray(image.transpose(2, 0, 1)), _worker_id()


class FileImages(CachedImages):
    """Items decoded from the image files in every step (the study's setting)."""

    def __init__(self, source: str | Path):
        source = Path(source)
        if not source.is_dir() or (source / BATCH_DIR).is_dir() or (source / TRAIN_BATCHES[0]).exists():
            raise DataError(f"{source}: ddpm.decode_each_step needs an image folder (train/*.png), "
                            "not the python batches")
        self.cache = str(source)
        self.files = image_files(source)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, bool]):
        index, flip = item
        image = decode_image(self.files[index])
        if flip:
            image = image[:, ::-1]
        return np.ascontiguousarray(image.transpose(2, 0, 1)), _worker_id()


def collate(items: list) -> dict:
    import torch

    images = torch.from_numpy(np.stack([image for image, _ in items]))
    return {"images": images, "workers": torch.tensor([w for _, w in items], dtype=torch.int16)}


def make_loader(dataset, sampler: StepSampler, workers: int, pin_memory: bool):
    """One uint8 batch per step; `workers` DataLoader processes (0: the loop reads them itself)."""
    from torch.utils.data import DataLoader

    extra = {"persistent_workers": False, "prefetch_factor": 4} if workers else {}
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, **extra)


def dataset_for(ddpm: dict, cache: str | Path, source: str | Path | None):
    """The cached array, or the image files themselves when ddpm.decode_each_step is set."""
    if ddpm.get("decode_each_step"):
        if not source:
            raise DataError("ddpm.decode_each_step: the run needs the image folder (data.cifar)")
        return FileImages(source)
    return CachedImages(cache)


def to_model_input(images, device, channels_last: bool):
    """uint8 NCHW -> float in [-1, 1] on the device (the conversion runs there, not in the loader)."""
    import torch

    x = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
