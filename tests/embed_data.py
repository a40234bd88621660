"""A COCO manifest as rule `coco_manifest` writes it, built for the embedding tests.

Synthetic images (diffscale.data.synthetic.draw_image) of varied sizes, plus — when
../shared/data is present — real COCO val2017 JPEGs with their real captions. Bad input on
purpose: one corrupt JPEG, one image on the skip list, one empty caption, one caption far over
CLIP's 77 tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from diffscale.data.synthetic import draw_image

SHARED_COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco"
SIZES = [(160, 120), (120, 160), (200, 96), (96, 96)]
LONG_CAPTION = "a man " + " ".join(f"holding a {c} umbrella" for c in ["red", "blue", "green", "white"] * 8)


@dataclass
class Fixture:
    manifest: Path
    skipped: Path
    corrupt_id: int
    skip_listed_id: int
    long_caption_id: int
    empty_caption_id: int
    real_ids: list[int]


def _row(image_id: int, path: Path, width: int, height: int, captions: list[str]) -> dict:
    return dict(image_id=image_id, file_name=path.name, path=str(path), width=width, height=height,
                captions=captions, people=True, gender="man", age="adult", group="single", activity="sport",
                n_person_captions=len(captions), n_captions=len(captions))


def make_manifest(root: Path, n_synthetic: int = 18, n_real: int = 4) -> Fixture:
    """Write root/manifest.parquet and root/skipped.csv; rows out of order, as a test of sorting."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_synthetic):
        image_id = 500 + 7 * i
        width, height = SIZES[i % len(SIZES)]
        path = images / f"{image_id:012d}.jpg"
        draw_image(np.random.default_rng(i), width, height).save(path, quality=90)
        captions = [f"a person number {i} standing on a street", f"someone in scene {i} near a wall"]
        rows.append(_row(image_id, path, width, height, captions))
    real_ids = []
    annotations = SHARED_COCO / "annotations" / "captions_val2017_local25.json"
    if n_real and annotations.is_file():
        data = json.loads(annotations.read_text())
        captions: dict[int, list[str]] = {}
        for a in data["annotations"]:
            captions.setdefault(a["image_id"], []).append(a["caption"])
        for image in sorted(data["images"], key=lambda im: im["id"])[:n_real]:
            path = SHARED_COCO / "val2017" / image["file_name"]
            rows.append(_row(image["id"], path, image["width"], image["height"], captions[image["id"]]))
            real_ids.append(image["id"])
    corrupt, skip_listed, long_one, empty_one = rows[3], rows[5], rows[1], rows[2]
    Path(corrupt["path"]).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    long_one["captions"] = long_one["captions"] + [LONG_CAPTION]
    empty_one["captions"] = ["   "] + empty_one["captions"]
    manifest = root / "manifest.parquet"
    pd.DataFrame(rows[::-1]).to_parquet(manifest, index=False)
    skipped = root / "skipped.csv"
    pd.DataFrame([{"image_id": skip_listed["image_id"], "file_name": skip_listed["file_name"],
                   "reason": "grayscale"}]).to_csv(skipped, index=False)
    return Fixture(manifest, skipped, corrupt["image_id"], skip_listed["image_id"], long_one["image_id"],
                   empty_one["image_id"], real_ids)


def demo_settings(modality: str, backend: str = "serial", **change) -> "EmbedSettings":  # noqa: F821
    """Settings of the demo config (config.yaml) for one modality, with `change` applied."""
    from diffscale.config import load_config
    from diffscale.embed.settings import EmbedSettings, settings_for

    cfg = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    return EmbedSettings.from_dict({**settings_for(cfg, modality, backend), **change})
