"""A summary of every study's inputs (counts, sizes), checked for shape; the report shows it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from diffscale import atomic, cifar as cifar_source, io
from diffscale.folders import subject_folder
from diffscale.errors import DataError


def coco_counts(captions: Path, images: Path | None = None) -> dict:
    """Counts from a COCO captions json, and with `images` how many of the images it lists are in
    that folder (none: a DataError, the wrong folder); the COCO stage does the full validation."""
    data = io.read_json(captions, missing="captions file not found", what="captions json")
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(f"{captions}: missing the '{key}' list of the COCO captions format")
    per_image = Counter(a["image_id"] for a in data["annotations"])
    counts = {
        "images": len(data["images"]),
        "captions": len(data["annotations"]),
        "captions_per_image_min": min(per_image.values(), default=0),
        "captions_per_image_max": max(per_image.values(), default=0),
    }
    if images is not None:
        counts["image_files"] = _listed_files(captions, data["images"], Path(images))
    return counts


def _listed_files(captions: Path, entries: list, images: Path) -> int:
    if not images.is_dir():
        raise DataError(f"{images}: not a folder (the COCO images {captions} lists)")
    names = [e.get("file_name") for e in entries if isinstance(e, dict) and e.get("file_name")]
    present = sum(1 for name in names if (images / name).is_file())
    if names and not present:
        raise DataError(f"{images}: holds none of the {len(names)} images {captions} lists (such as {names[0]})")
    return present


def write_summary(out: Path, captions: Path, images: Path | None, cifar: Path, subject: Path,
                  trigger: str = "[trigger]") -> dict:
    coco = coco_counts(captions, images)
    subject_items = subject_folder(subject, trigger)
    result = {
        "coco": coco,
        "cifar": cifar_source.describe(cifar),  # any format data.cifar may name, as the DDPM study reads it
        "subject": {"images": len(subject_items), "captions_with_trigger":
                    sum(trigger in item.caption for item in subject_items)},
    }
    atomic.write_json(out, result)
    return result
