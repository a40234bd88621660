"""CIFAR-10 for the DDPM study: the source (`data.cifar`, any of the three formats diffscale.cifar
reads) decoded once to a uint8 array [N, 32, 32, 3], cached as a .npy file (50,000 images =
154 MB) by `prepare`, so the DataLoader sweep measures the loader, not PNG decoding; `FileImages`
decodes the files in every step instead (ddpm.decode_each_step: the study's setting).

The batch order is a function of (seed, step) alone, and so is each image's horizontal flip: every
variant of a sweep (worker count, precision, compile, GPU count) sees the same images in the same
steps, so differences in its loss are the optimisation's. Each item also carries the id of the
DataLoader worker that made it, which is how a run proves it used the workers it says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffscale import atomic
from diffscale.cifar import SIZE, decode_image, image_files, read_images, source_format
from diffscale.errors import DataError


# --- the cache ----------------------------------------------------------------------------------

def info_path(cache: str | Path) -> Path:
    """The JSON beside the cache that says what it holds (source, images, shape, bytes)."""
    return Path(cache).with_suffix(".json")


def prepare(source: str | Path, cache: str | Path) -> dict:
    """Decode `source` once into the uint8 array file `cache` and its info_path JSON: both, each
    written atomically, or neither."""
    images = read_images(source)
    info = {"source": str(source), "cache": str(cache), "images": int(len(images)),
            "shape": list(images.shape), "bytes": int(images.nbytes)}
    with atomic.atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, images)
    try:
        atomic.write_json(info_path(cache), info)
    except BaseException:
        Path(cache).unlink(missing_ok=True)
        raise
    return info


def load_cache(cache: str | Path) -> np.ndarray:
    """The cached array, memory-mapped (DataLoader workers share the pages)."""
    try:
        with open(cache, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise DataError(f"{cache}: cannot read the CIFAR cache ({exc.strerror}); run the ddpm_data rule") from None
    if magic != b"\x93NUMPY":  # else NumPy answers a text file with advice to unpickle it
        raise DataError(f"{cache}: not a NumPy .npy file, so not a CIFAR cache; re-run the ddpm_data rule")
    try:
        images = np.load(cache, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{cache}: a damaged or truncated CIFAR cache ({exc}); re-run the ddpm_data rule") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3):
        raise DataError(f"{cache}: array {images.dtype} {list(images.shape)}, expected uint8 [N, 32, 32, 3]")
    if not len(images):
        raise DataError(f"{cache}: holds no images; re-run the ddpm_data rule on a non-empty data.cifar")
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
        kind, source = source_format(source)
        if kind != "images":
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
    """The cached array, or the image files themselves when ddpm.decode_each_step is set; an image
    folder given to a run that reads the cache is refused (it would be silently unused)."""
    if ddpm.get("decode_each_step"):
        if not source:
            raise DataError("ddpm.decode_each_step: the run needs the image folder (data.cifar)")
        return FileImages(source)
    if source:
        raise DataError(f"{source}: this run reads the cache {cache}, not an image folder "
                        "(ddpm.decode_each_step is off); leave the folder out, or set decode_each_step")
    return CachedImages(cache)


def to_model_input(images, device, channels_last: bool):
    """uint8 NCHW -> float in [-1, 1] on the device (the conversion runs there, not in the loader)."""
    import torch

    x = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
