"""How much disk the embeddings take, and what the full study's would take.

The original study's 37.7 GB of text embeddings exceeded its disk quota. Every run records its
shards' bytes per item (latents per image; text per caption) and per image (text: all of an image's
captions), and projects the full people-centric study from them: `FULL_STUDY_IMAGES` images with
this run's captions per image. With ragged text storage a caption's size grows with its real
tokens, so the projection also carries bytes per token (what a longer or shorter caption adds).
"""

from __future__ import annotations

from pathlib import Path

# COCO train2014 images whose captions mention a person in at least 3 of 5 (the people-centric
# subset of the study, config/full.yaml: ~48k of 83k). Change it here to project another study.
FULL_STUDY_IMAGES = 48_000
GB = 1e9
KEYS = ("shard_bytes", "bytes_per_item", "bytes_per_image", "bytes_per_token", "projected_images",
        "projected_full_gb")


def projected_gb(bytes_per_image: float, images: int = FULL_STUDY_IMAGES) -> float:
    return bytes_per_image * images / GB


def storage(run_dir: str | Path, shards: list[dict], inputs, tokens: int | None = None) -> dict:
    """Bytes on disk of a run's shards per item, per image and per real token, and the projection."""
    run_dir = Path(run_dir)
    total = sum((run_dir / s["file"]).stat().st_size for s in shards)
    items = sum(s["items"] for s in shards)
    images = len({item.image_id for item in inputs.items}) or 1
    per_image = total / images
    out = {"shard_bytes": total, "bytes_per_item": total / max(items, 1), "bytes_per_image": per_image,
           "projected_images": FULL_STUDY_IMAGES, "projected_full_gb": projected_gb(per_image)}
    if tokens:
        out["bytes_per_token"] = total / tokens
    return out
