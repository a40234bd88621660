"""What the embedding stage reads: the COCO manifest and its skip list, as work items.

The manifest (results/data/coco/manifest.parquet, rule `coco_manifest`) has one row per image:
image_id, file_name, path, width, height, captions (list of str), people, demographics… sorted by
image_id. skipped.csv (image_id, file_name, reason) lists images to leave out; they are left out
of both modalities, so latents and captions describe the same set of images.

Items come out in a fixed order — images by image_id, captions by (image_id, caption index) — which
is the order of the index whatever the backend or worker count. Captions that are empty (or not
text) are left out and listed: training on an empty caption under a real image would teach
unconditional generation at a rate nobody chose (the training stage has its own caption dropout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from diffscale import io
from diffscale.errors import DataError

MANIFEST_COLUMNS = {"images": ["image_id", "file_name", "path"], "text": ["image_id", "file_name", "captions"]}
SKIP_COLUMNS = ["image_id", "file_name", "reason"]


class ImageItem(NamedTuple):
    image_id: int
    path: str


class TextItem(NamedTuple):
    image_id: int
    caption_index: int
    caption: str


@dataclass
class Inputs:
    modality: str
    items: list  # ImageItem or TextItem, in index order
    skipped: list[dict] = field(default_factory=list)  # {image_id, [caption_index], file_name, reason}
    images: int = 0  # images in the manifest, before the skip list
    max_images: int | None = None  # only the first N usable images were taken (embed.scaling_images)


def read_skip_list(path: str | Path | None) -> dict[int, dict]:
    """image_id -> {image_id, file_name, reason}; a missing argument means nothing to skip."""
    if path is None:
        return {}
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: skip list not found") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; expected a header {','.join(SKIP_COLUMNS)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    io.check_columns(path, table.columns, SKIP_COLUMNS)
    out = {}
    for row, (image_id, file_name, reason) in enumerate(table[SKIP_COLUMNS].itertuples(index=False), start=2):
        try:
            key = int(image_id)
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {row}: image_id {image_id!r} is not an integer") from None
        out[key] = {"image_id": key, "file_name": str(file_name), "reason": str(reason)}
    return out


def read_manifest(path: str | Path, modality: str):
    """The manifest's columns this modality needs, sorted by image_id; DataError naming the file."""
    import pandas as pd
    import pyarrow
    import pyarrow.parquet

    path = Path(path)
    columns = MANIFEST_COLUMNS[modality]
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (made by rule coco_manifest)")
    try:
        present = pyarrow.parquet.read_schema(path).names
        missing = [c for c in columns if c not in present]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r} (the {modality} embedding needs "
                            f"{', '.join(columns)})")
        table = pd.read_parquet(path, columns=columns)
    except (pyarrow.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet manifest ({str(exc).splitlines()[0]})") from None
    if table["image_id"].isna().any():
        raise DataError(f"{path}: image_id has missing values")
    duplicated = table["image_id"][table["image_id"].duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: image_id {int(duplicated.iloc[0])} appears more than once")
    return table.sort_values("image_id", kind="stable").reset_index(drop=True)


def _caption_text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def load_inputs(manifest: str | Path, modality: str, skip_list: str | Path | None = None,
                max_images: int | None = None) -> Inputs:
    """The work items of `manifest` less its skip list; with `max_images`, those of the first N
    images not skipped (by image_id: the same images for every run and modality)."""
    table = read_manifest(manifest, modality)
    skip = read_skip_list(skip_list)
    inputs = Inputs(modality, [], images=len(table))
    inputs.skipped = [dict(entry, source="skip list") for entry in sorted(skip.values(), key=lambda e: e["image_id"])]
    if max_images is not None:
        usable = table[~table["image_id"].astype(int).isin(list(skip))]
        table = usable.head(max_images)
        inputs.max_images = max_images
    if modality == "images":
        for image_id, path in table[["image_id", "path"]].itertuples(index=False):
            if int(image_id) not in skip:
                inputs.items.append(ImageItem(int(image_id), str(path)))
        return inputs
    for image_id, file_name, captions in table[["image_id", "file_name", "captions"]].itertuples(index=False):
        image_id = int(image_id)
        if image_id in skip:
            continue
        if captions is None or (isinstance(captions, float) and math.isnan(captions)):
            captions = []
        if isinstance(captions, str):
            raise DataError(f"{manifest}: image_id {image_id}: captions is a string; expected a list of strings")
        for index, caption in enumerate(list(captions)):
            text = _caption_text(caption)
            if text:
                inputs.items.append(TextItem(image_id, index, text))
            else:
                inputs.skipped.append({"image_id": image_id, "caption_index": index, "file_name": str(file_name),
                                       "reason": "empty caption", "source": "embed"})
    return inputs
