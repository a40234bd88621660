"""Embedding runs with random contents in the real on-disk format (diffscale.shards).

For tests and the training benchmark: the training reads them exactly as it reads the embedding
stage's output. Latent means are smooth-ish random fields, stds small and positive, caption
hidden states random; what is learned is meaningless, how fast it is learned is not.
"""

from __future__ import annotations

from pathlib import Path

from diffscale.shards import shard_name, tensor_specs, write_index, write_shard


def write_embedding_runs(root: str | Path, *, images: int = 16, captions_per_image: int = 2,
                         latent_shape: tuple[int, int, int] = (4, 8, 8), hidden_dim: int = 32,
                         context: int = 77, shard_items: int = 8, scaling_factor: float = 0.18215,
                         seed: int = 0, name: str = "serial-pinned-w1") -> tuple[Path, Path]:
    """Write `root/images/<name>/` and `root/text/<name>/`; return the two run directories."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    image_ids = torch.arange(images, dtype=torch.int64) * 7 + 100  # ids are not positions
    image_dir = Path(root) / "images" / name
    text_dir = Path(root) / "text" / name
    shards, specs = [], {}
    for number, start in enumerate(range(0, images, shard_items)):
        n = min(shard_items, images - start)
        tensors = {
            "image_id": image_ids[start:start + n],
            "latent_mean": torch.randn((n, *latent_shape), generator=gen) * 4.0,
            "latent_std": torch.rand((n, *latent_shape), generator=gen) * 0.1 + 0.01,
        }
        shards.append(write_shard(image_dir / shard_name(number), tensors))
        specs = tensor_specs(tensors)
    write_index(image_dir, "images", shards, specs, scaling_factor=scaling_factor)

    # captions are stored in another order than the images, as a parallel embedding run may write them
    caption_image = image_ids.repeat_interleave(captions_per_image).flip(0)
    caption_index = torch.arange(captions_per_image, dtype=torch.int64).repeat(images).flip(0)
    total = len(caption_image)
    shards = []
    for number, start in enumerate(range(0, total, shard_items)):
        n = min(shard_items, total - start)
        tensors = {
            "image_id": caption_image[start:start + n],
            "caption_index": caption_index[start:start + n],
            "hidden": torch.randn((n, context, hidden_dim), generator=gen),
            "mask": torch.ones((n, context), dtype=torch.int8),
            "pooled": torch.randn((n, hidden_dim), generator=gen),
            "truncated": torch.zeros(n, dtype=torch.bool),
        }
        shards.append(write_shard(text_dir / shard_name(number), tensors))
        specs = tensor_specs(tensors)
    write_index(text_dir, "text", shards, specs)
    return image_dir, text_dir
