"""Caption/latent pairs over the embedding shards, and the order the training visits them in.

Every caption of the text run is one training sample, joined with its image's latent
distribution by `image_id` (an image with five captions is seen five times per epoch, each time
with another caption, as in the original study). Items are read lazily from the memory-mapped
shards, so the dataset never has to fit in memory.

The order is a pure function of (seed, step): epoch e visits the samples in the permutation
`default_rng([seed, e])`, and the global batch of step s is positions [s*B, (s+1)*B) of the
concatenated epochs. It is cut into grad_accum micro-steps, each cut into one slice per process.
Hence a run resumed at step s reads exactly what an uninterrupted run reads, and 1 or N processes
see the same global batches (the DDP-equivalence test relies on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffscale.shards import INDEX, ShardReader
from diffscale.errors import DataError

IMAGE_TENSORS = ("image_id", "latent_mean", "latent_std")
TEXT_TENSORS = ("image_id", "hidden")


def _need(reader: ShardReader, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if n not in reader.index.get("tensors", {})]
    if missing:
        raise DataError(f"{reader.run_dir / INDEX}: {what} run has no tensor {missing[0]!r} "
                        f"(has: {', '.join(reader.names) or 'none'})")


def scaling_factor(index: dict, where: Path) -> float:
    """The VAE's latent scaling factor the embedding run recorded (top level or under `meta`)."""
    for holder in (index, index.get("meta") or {}):
        if isinstance(holder, dict) and holder.get("scaling_factor") is not None:
            return float(holder["scaling_factor"])
    raise DataError(f"{where / INDEX}: no scaling_factor recorded (the VAE's latent scale is needed to train)")


class LatentTextDataset:
    """Sample i: (latent_mean, latent_std) of an image and the hidden states of one of its captions."""

    def __init__(self, images_dir: str | Path, text_dir: str | Path):
        self.images = ShardReader(Path(images_dir))
        self.text = ShardReader(Path(text_dir))
        _need(self.images, IMAGE_TENSORS, "image")
        _need(self.text, TEXT_TENSORS, "text")
        self.scaling_factor = scaling_factor(self.images.index, self.images.run_dir)
        self.latent_shape = tuple(self.images.index["tensors"]["latent_mean"]["item_shape"])
        self.hidden_shape = tuple(self.text.index["tensors"]["hidden"]["item_shape"])
        self.text_dtype = self.text.index["tensors"]["hidden"]["dtype"]  # the captions' stored precision
        # ragged text (only real tokens stored, zeros after them): the U-Net attends with the mask
        self.text_mask = self.text.ragged
        if len(self.images) == 0 or len(self.text) == 0:
            empty = self.images if len(self.images) == 0 else self.text
            raise DataError(f"{empty.run_dir / INDEX}: the run holds no items")

        image_ids = self.images.column("image_id").numpy()
        order = np.argsort(image_ids, kind="stable")
        sorted_ids = image_ids[order]
        repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        if len(repeated):
            raise DataError(f"{self.images.run_dir / INDEX}: image_id {int(repeated[0])} appears more than once")
        caption_ids = self.text.column("image_id").numpy()
        pos = np.clip(np.searchsorted(sorted_ids, caption_ids), 0, len(sorted_ids) - 1)
        found = sorted_ids[pos] == caption_ids
        if not found.any():
            raise DataError(f"{self.text.run_dir / INDEX}: no caption's image_id is in {self.images.run_dir / INDEX} "
                            "(are the two runs from the same data?)")
        self.text_rows = np.flatnonzero(found).astype(np.int64)
        self.image_rows = order[pos[found]].astype(np.int64)
        self.unmatched_captions = int((~found).sum())

    def __len__(self) -> int:
        return len(self.text_rows)

    def __getitems__(self, indices: list[int]) -> dict:
        """A batch as stacked tensors in their stored dtype (the training step casts on device)."""
        import torch

        text_names = ["hidden", "mask"] if self.text_mask else ["hidden"]
        means, stds, text = [], [], []
        for i in indices:
            image = self.images.item(int(self.image_rows[i]), ["latent_mean", "latent_std"])
            means.append(image["latent_mean"])
            stds.append(image["latent_std"])
            text.append(self.text.item(int(self.text_rows[i]), text_names))
        batch = {"latent_mean": torch.stack(means), "latent_std": torch.stack(stds),
                 "hidden": torch.stack([t["hidden"] for t in text])}
        if self.text_mask:
            batch["mask"] = torch.stack([t["mask"] for t in text])
        return batch

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


@dataclass
class StepBatches:
    """Batch sampler: the index lists one process reads, micro-step by micro-step, from `start_step`."""

    num_samples: int
    global_batch: int
    grad_accum: int
    world_size: int
    rank: int
    seed: int
    start_step: int
    steps: int

    def __post_init__(self) -> None:
        if self.global_batch % (self.grad_accum * self.world_size):
            raise ValueError("global batch must split evenly into grad_accum x world_size micro-batches")
        self.micro = self.global_batch // (self.grad_accum * self.world_size)
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            self._epoch = epoch
        return self._perm

    def positions(self, step: int, micro_step: int) -> range:
        """Global sample positions this process reads at (step, micro_step)."""
        start = step * self.global_batch + micro_step * (self.global_batch // self.grad_accum) + self.rank * self.micro
        return range(start, start + self.micro)

    def indices(self, step: int, micro_step: int) -> list[int]:
        n = self.num_samples
        return [int(self.permutation(p // n)[p % n]) for p in self.positions(step, micro_step)]

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            for micro_step in range(self.grad_accum):
                yield self.indices(step, micro_step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.grad_accum


def as_batch(batch: dict) -> dict:
    """collate_fn: the dataset's __getitems__ already returns a stacked batch."""
    return batch


def make_loader(dataset: LatentTextDataset, sampler: StepBatches, workers: int, pin_memory: bool):
    """A DataLoader that prefetches whole micro-batches in `workers` processes (0: in the loop)."""
    from torch.utils.data import DataLoader

    extra = {"prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {}
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=as_batch, num_workers=workers,
                      pin_memory=pin_memory, **extra)
