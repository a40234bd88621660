"""How much disk the embeddings take, and what the full study's would take.

The original study's 37.7 GB of text embeddings exceeded its disk quota. Every run records its
shards' bytes per item (latents per image; text per caption) and per image (text: all of an image's
captions), and projects the full people-centric study from them: `FULL_STUDY_IMAGES` images with
this run's captions per image. With ragged text storage a caption's bytes are a fixed part (pooled
state, length, offset, ids) plus `bytes_per_token` for each real token, so the text projection is
built from those two and the run's real tokens per caption (`projected_text_gb` re-projects it at
another caption length).
"""

from __future__ import annotations

from pathlib import Path

# COCO train2014 images whose captions mention a person in at least 3 of 5 (the people-centric
# subset of the study, config/full.yaml: ~48k of 83k). Change it here to project another study.
FULL_STUDY_IMAGES = 48_000
GB = 1e9
KEYS = ("shard_bytes", "bytes_per_item", "bytes_per_image", "bytes_per_token", "fixed_bytes_per_caption",
        "tokens_per_caption", "projected_images", "projected_full_gb")


def projected_gb(bytes_per_image: float, images: int = FULL_STUDY_IMAGES) -> float:
    return bytes_per_image * images / GB


def projected_text_gb(fixed_bytes_per_caption: float, bytes_per_token: float, tokens_per_caption: float,
                      captions_per_image: float, images: int = FULL_STUDY_IMAGES) -> float:
    """Ragged text shards of `images` images: each caption its fixed bytes plus its real tokens'."""
    return projected_gb(captions_per_image * (fixed_bytes_per_caption + bytes_per_token * tokens_per_caption), images)


def storage(run_dir: str | Path, shards: list[dict], inputs, tokens: int | None = None) -> dict:
    """Bytes on disk of a run's shards per item and per image, and the projection; for ragged text
    (`tokens`: the real tokens stored) also per token, the fixed part per caption and real tokens
    per caption, from which the projection is built."""
    run_dir = Path(run_dir)
    total = sum((run_dir / s["file"]).stat().st_size for s in shards)
    items = max(sum(s["items"] for s in shards), 1)
    images = len({item.image_id for item in inputs.items}) or 1
    out = {"shard_bytes": total, "bytes_per_item": total / items, "bytes_per_image": total / images,
           "projected_images": FULL_STUDY_IMAGES, "projected_full_gb": projected_gb(total / images)}
    token_bytes = sum(s.get("tensor_bytes", {}).get("tokens", 0) for s in shards)
    if tokens and token_bytes:
        out.update(bytes_per_token=token_bytes / tokens, fixed_bytes_per_caption=(total - token_bytes) / items,
                   tokens_per_caption=tokens / items)
        out["projected_full_gb"] = projected_text_gb(out["fixed_bytes_per_caption"], out["bytes_per_token"],
                                                     out["tokens_per_caption"], items / images)
    return out
