"""Check a folder of captioned photos and prepare it for FLUX: one line per mistake, buckets.

The folder holds images with same-name `.txt` captions (the format of ostris/ai-toolkit, which
the original study used); `[trigger]` in a caption becomes the configured trigger word. Checked,
each with a one-line error naming the file: an image without caption, a caption without image,
an empty caption (read by diffscale.folders.subject_folder, which the inputs summary shares), an
unreadable image, an image smaller than the smallest bucket, and fewer than `flux.min_images` images.

Buckets: FLUX's VAE shrinks images 8x and the transformer packs 2x2 latent patches, so each side
must be a multiple of 16 px. One bucket per configured aspect ratio r (width / height), of about
the area resolution², sides rounded to 16 px. Each image goes to the bucket whose aspect ratio is
closest (in log ratio), is scaled to cover it and centre-cropped. The prepared folder holds the
cropped images (what the cache encodes and what quality is measured against), `dataset.json`
and `buckets.csv` (which image went to which bucket).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from diffscale import atomic
from diffscale.folders import subject_folder
from diffscale.errors import ConfigError, DataError

MULTIPLE = 16  # 8x VAE x 2x2 packing
DATASET_FILE = "dataset.json"
BUCKETS_FILE = "buckets.csv"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class Item:
    name: str  # file stem, the key of the item in every later file
    source: str
    caption: str  # trigger substituted
    width: int  # source size
    height: int
    bucket: tuple[int, int]  # (width, height)


def buckets_for(resolution: int, ratios: list[float]) -> list[tuple[int, int]]:
    """(width, height) per aspect ratio, area about resolution², sides multiples of 16, no duplicates."""
    if resolution % MULTIPLE:
        raise ConfigError(f"flux.resolution: {resolution} is not a multiple of {MULTIPLE} px")
    found: list[tuple[int, int]] = []
    for ratio in ratios:
        width = max(MULTIPLE, round(resolution * math.sqrt(ratio) / MULTIPLE) * MULTIPLE)
        height = max(MULTIPLE, round(resolution / math.sqrt(ratio) / MULTIPLE) * MULTIPLE)
        if (width, height) not in found:
            found.append((width, height))
    return found


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - ratio))


def check_folder(root: str | Path, trigger: str, resolution: int, ratios: list[float], min_images: int) -> list[Item]:
    """The items of a subject folder with their buckets, or a DataError naming the first problem."""
    from PIL import Image, UnidentifiedImageError

    buckets = buckets_for(resolution, ratios)
    smallest = min(min(b) for b in buckets)
    items = []
    for entry in subject_folder(root, trigger):
        try:
            with Image.open(entry.image) as img:
                img.load()
                width, height = img.size
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"{entry.image}: unreadable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if min(width, height) < smallest:
            raise DataError(f"{entry.image}: too small ({width}x{height}); the smallest bucket side is {smallest} px "
                            f"(resolution {resolution}: flux.resolution, --resolution by hand)")
        items.append(Item(entry.image.stem, str(entry.image), entry.caption, width, height,
                          nearest_bucket(width, height, buckets)))
    if len(items) < min_images:
        raise DataError(f"{root}: {len(items)} captioned images, flux.min_images (--min-images by hand) asks for at "
                        f"least {min_images}")
    return items


def crop_to_bucket(img, bucket: tuple[int, int]):
    """Scale to cover the bucket (keeping the aspect ratio), then centre-crop to it."""
    from PIL import Image

    width, height = bucket
    scale = max(width / img.width, height / img.height)
    size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return img.crop((left, top, left + width, top + height))


def buckets_csv(items: list[Item]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["image", "width", "height", "bucket_width", "bucket_height", "caption"])
    for item in items:
        writer.writerow([Path(item.source).name, item.width, item.height, *item.bucket, item.caption])
    return buf.getvalue()


def prepare(images: str | Path, out: str | Path, trigger: str, resolution: int = 512,
            bucket_ratios: list[float] | None = None, min_images: int = 5) -> list[Item]:
    """Check `images` and write the prepared dataset to `out` (all or nothing)."""
    from PIL import Image

    items = check_folder(images, trigger, resolution, bucket_ratios or [1.0], min_images)
    with atomic.atomic_dir(out, DATASET_FILE) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        for item in items:
            with Image.open(item.source) as img:
                crop_to_bucket(img, item.bucket).save(tmp / IMAGES_DIR / f"{item.name}.png")
        (tmp / BUCKETS_FILE).write_text(buckets_csv(items))
        atomic.write_json(tmp / DATASET_FILE, {
            "source": str(images), "trigger": trigger, "resolution": resolution,
            "buckets": buckets_for(resolution, bucket_ratios or [1.0]),
            "items": [asdict(item) for item in items]})
    return items


def load(prepared: str | Path) -> list[Item]:
    """The items of a prepared dataset folder."""
    import json

    path = Path(prepared) / DATASET_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DataError(f"{path}: missing or unreadable; run the flux_dataset stage first") from None
    return [Item(**{**item, "bucket": tuple(item["bucket"])}) for item in raw["items"]]


def image_path(prepared: str | Path, item: Item) -> Path:
    return Path(prepared) / IMAGES_DIR / f"{item.name}.png"
