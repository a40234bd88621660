"""Embedding runs with random contents in the real on-disk format (diffscale.shards).

For tests and the training benchmark: the training reads them exactly as it reads the embedding
stage's output. Latent means are smooth-ish random fields, stds small and positive, caption
hidden states random; what is learned is meaningless, how fast it is learned is not.
"""

from __future__ import annotations

from pathlib import Path

from diffscale.shards import ragged_specs_from, shard_name, tensor_specs, with_offsets, write_index, write_shard


def write_embedding_runs(root: str | Path, *, images: int = 16, captions_per_image: int = 2,
                         latent_shape: tuple[int, int, int] = (4, 8, 8), hidden_dim: int = 32,
                         context: int = 77, shard_items: int = 8, scaling_factor: float = 0.18215,
                         seed: int = 0, name: str = "serial-pinned-w1",
                         text_storage: str = "full", text_dtype: str = "float32") -> tuple[Path, Path]:
    """Write `root/images/<name>/` and `root/text/<name>/`; return the two run directories.

    Text as the embedding stage stores it: `full` (hidden [77, D], all positions real) or `ragged`
    (captions of 3 to 20 real tokens, only those stored), its states in `text_dtype` (a gpu run's
    bfloat16, a CPU run's float32)."""
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
            "pooled": torch.randn((n, hidden_dim), generator=gen),
            "truncated": torch.zeros(n, dtype=torch.bool),
        }
        if text_storage == "ragged":
            lengths = torch.randint(3, 21, (n,), generator=gen, dtype=torch.int32)
            states = torch.randn((int(lengths.sum()), hidden_dim), generator=gen).to(getattr(torch, text_dtype))
            tensors = with_offsets({**tensors, "lengths": lengths, "tokens": states})
        else:
            tensors.update(hidden=torch.randn((n, context, hidden_dim), generator=gen).to(getattr(torch, text_dtype)),
                           mask=torch.ones((n, context), dtype=torch.int8))
        shards.append(write_shard(text_dir / shard_name(number), tensors))
        specs = tensor_specs(tensors)
    if text_storage == "ragged":
        write_index(text_dir, "text", shards, ragged_specs_from(specs, context), text_storage="ragged",
                    context_length=context, stored=specs)
    else:
        write_index(text_dir, "text", shards, specs)
    return image_dir, text_dir
