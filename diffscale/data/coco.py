"""COCO captions -> the people-centric manifest of study 1.

Loading goes through pycocotools' COCO index after the json has been checked, so a malformed
file, a missing `images`/`annotations` list, a broken entry or an annotation whose image_id is
not in `images` stops the run with one line naming the file and the id. Image files are checked
from their headers only (PIL opens lazily; the JPEG/PNG end marker is read from the file's tail),
never decoded: a missing, empty, truncated or non-image file, or one whose size differs from the
json, is listed in skipped.csv and left out, and only more than `max_bad_fraction` of them stops
the run (naming the count).

The filter, in order (each step's removals are reported):
  1. unreadable image file    (only with an image folder)
  2. no captions              (an image the annotations never mention)
  3. no person in captions    (people label false, see diffscale.data.people)
  4. person in fewer than k of n captions (not people-centric; `min_person_captions` of
     `per_captions`, scaled to the image's own caption count: 3 of 5 asks 4 of 6)
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq

from diffscale import atomic
from diffscale.io import read_json as read_json_file
from diffscale.config import check_person_captions, fill_defaults, schema
from diffscale.data.people import Lexicon
from diffscale.errors import ConfigError, DataError

MANIFEST_COLUMNS = {
    "image_id": pa.int64(), "file_name": pa.string(), "path": pa.string(), "width": pa.int64(),
    "height": pa.int64(), "captions": pa.list_(pa.string()), "people": pa.bool_(), "gender": pa.string(),
    "age": pa.string(), "group": pa.string(), "activity": pa.string(), "n_person_captions": pa.int64(),
    "n_captions": pa.int64(),
}
LABEL_COLUMNS = {**MANIFEST_COLUMNS, "kept": pa.bool_(), "reason": pa.string()}
SKIPPED_COLUMNS = ["image_id", "file_name", "reason"]

STEP_BAD_FILE = "unreadable image file"
STEP_NO_CAPTIONS = "no captions"
STEP_NO_PERSON = "no person in captions"
JPEG_END = b"\xff\xd9"
PNG_END = b"IEND"
TAIL_BYTES = 1024  # some encoders pad after the end marker


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilterRule:
    """Which images are people-centric: a person in at least `min_person_captions` of every
    `per_captions` captions."""

    min_person_captions: int = 3
    per_captions: int = 5
    max_bad_fraction: float = 0.01

    def required(self, n_captions: int) -> int:
        """Person captions an image with `n_captions` captions needs (at least one)."""
        return max(1, math.ceil(self.min_person_captions * n_captions / self.per_captions - 1e-9))

    @property
    def step_name(self) -> str:
        return f"person in fewer than {self.min_person_captions} of {self.per_captions} captions"


def people_settings(people_cfg: Mapping | None, source: str = "data.people") -> dict:
    """The `data.people` config slice, checked against the schema and with defaults filled."""
    cfg = json.loads(json.dumps(dict(people_cfg or {})))
    sub = schema()["properties"]["data"]["properties"]["people"]
    validator = jsonschema.Draft202012Validator({**sub, "$defs": schema()["$defs"]})
    errors = sorted(validator.iter_errors(cfg), key=lambda e: len(list(e.absolute_path)))
    if errors:
        error = errors[-1]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise ConfigError(f"{source}{where}: {error.message}")
    fill_defaults(cfg, sub, schema())
    check_person_captions(cfg, source)
    return cfg


def rule_of(settings: Mapping) -> FilterRule:
    return FilterRule(settings["min_person_captions"], settings["per_captions"], settings["max_bad_fraction"])


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------
def read_json(path: str | Path, what: str) -> Any:
    return read_json_file(path, missing=f"{what} file not found", what=f"{what} json")


def _ident(entry: Any, key: str = "id") -> str:
    return f" (id {entry[key]})" if isinstance(entry, dict) and key in entry else ""


def validate_coco(data: Any, path: str | Path, what: str = "captions") -> None:
    """Raise DataError (naming the file and the entry) unless `data` is a COCO annotation file
    whose annotations all refer to listed images."""
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images' and 'annotations' lists "
                        f"(the COCO {what} format), found a {type(data).__name__}")
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(f"{path}: missing the '{key}' list of the COCO {what} format")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: '{key}' must be a list, found a {type(data[key]).__name__}")
    if what == "captions" and not data["images"]:
        raise DataError(f"{path}: 'images' is empty; there is nothing to filter (a COCO captions file lists its "
                        f"images)")
    seen: dict[int, int] = {}
    for i, img in enumerate(data["images"]):
        where = f"{path}: images[{i}]{_ident(img)}"
        if not isinstance(img, dict):
            raise DataError(f"{where}: expected an object")
        for key in ("id", "file_name", "width", "height"):
            if key not in img:
                raise DataError(f"{where}: missing '{key}'")
        if not _is_int(img["id"]):
            raise DataError(f"{where}: 'id' must be an integer")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DataError(f"{where}: 'file_name' must be a non-empty string")
        for key in ("width", "height"):
            if not _is_int(img[key]) or img[key] <= 0:
                raise DataError(f"{where}: '{key}' must be a positive integer")
        if img["id"] in seen:
            raise DataError(f"{path}: image id {img['id']} appears twice (images[{seen[img['id']]}] and images[{i}])")
        seen[img["id"]] = i
    unknown: list[tuple[int, Any, Any]] = []
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]{_ident(ann)}"
        if not isinstance(ann, dict):
            raise DataError(f"{where}: expected an object")
        if "image_id" not in ann:
            raise DataError(f"{where}: missing 'image_id'")
        if what == "captions" and not isinstance(ann.get("caption"), str):
            raise DataError(f"{where}: 'caption' must be a string")
        if what == "instances" and not _is_int(ann.get("category_id")):
            raise DataError(f"{where}: 'category_id' must be an integer")
        if ann["image_id"] not in seen:
            unknown.append((i, ann.get("id"), ann["image_id"]))
    if unknown:
        i, ann_id, image_id = unknown[0]
        more = f" ({len(unknown) - 1} more annotations do too)" if len(unknown) > 1 else ""
        name = f"annotation {ann_id}" if ann_id is not None else f"annotations[{i}]"
        raise DataError(f"{path}: {name} refers to image_id {image_id!r}, which is not in 'images'{more}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def coco_index(data: dict):
    """pycocotools' COCO index over an already validated dataset."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress lines
        coco.createIndex()
    return coco


def load_captions(path: str | Path):
    """The captions json as a pycocotools COCO index, after validation."""
    data = read_json(path, "captions")
    validate_coco(data, path, "captions")
    return coco_index(data)


def person_images(path: str | Path, image_ids: set[int]) -> set[int]:
    """Images with at least one `person` box in a COCO instances json."""
    data = read_json(path, "instances")
    validate_coco(data, path, "instances")
    categories = data.get("categories")
    if not isinstance(categories, list):
        raise DataError(f"{path}: missing the 'categories' list of the COCO instances format")
    coco = coco_index(data)
    person = coco.getCatIds(catNms=["person"])
    if not person:
        raise DataError(f"{path}: no category named 'person' in 'categories'")
    foreign = sorted(set(coco.imgs) - image_ids)
    if foreign:
        raise DataError(f"{path}: image id {foreign[0]} is not in the captions file "
                        f"({len(foreign)} such images): instances and captions are of different sets")
    return set(coco.getImgIds(catIds=person))


# ---------------------------------------------------------------------------------------------
# Image files: headers only
# ---------------------------------------------------------------------------------------------
def check_image(path: str | Path, width: int | None = None, height: int | None = None) -> str | None:
    """None when `path` is a complete image of the expected size, else the reason it is not.
    Reads the header and the last kilobyte; never decodes the pixels."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing file"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not path.is_file():
        return "not a file"
    if size == 0:
        return "empty file"
    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
        with open(path, "rb") as f:
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as exc:
        if "truncated" in str(exc).lower():
            return "truncated (header cut short)"
        return f"unreadable ({exc})"
    if fmt == "JPEG" and JPEG_END not in tail:
        return "truncated (no JPEG end marker)"
    if fmt == "PNG" and PNG_END not in tail[-12:]:
        return "truncated (no PNG end chunk)"
    if width is not None and height is not None and (w, h) != (width, height):
        return f"size {w}x{h} differs from the json's {width}x{height}"
    return None


def check_images(images: list[dict], image_dir: str, threads: int = 8) -> dict[int, str]:
    """{image_id: reason} for every unusable file (threads: file checks wait on storage)."""
    def one(img: dict) -> tuple[int, str | None]:
        return img["id"], check_image(os.path.join(image_dir, img["file_name"]), img["width"], img["height"])

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return {image_id: reason for image_id, reason in pool.map(one, images, chunksize=256) if reason}


# ---------------------------------------------------------------------------------------------
# The filter
# ---------------------------------------------------------------------------------------------
@dataclass
class FilterResult:
    labels: pa.Table              # every image, LABEL_COLUMNS, sorted by image_id
    skipped: list[dict]           # image_id, file_name, reason
    steps: list[tuple[str, int]]  # (step, images it removed), in order; then ("kept", n)
    n_images: int
    n_captions: int
    person_boxes: set[int] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def manifest(self) -> pa.Table:
        kept = self.labels.filter(self.labels.column("kept"))
        return kept.select(list(MANIFEST_COLUMNS))


def filter_coco(captions: str | Path, images: str | None = None, instances: str | Path | None = None,
                people_cfg: Mapping | None = None, threads: int = 8) -> FilterResult:
    """Label every image of a COCO captions file and keep the people-centric ones."""
    settings = people_settings(people_cfg)
    rule = rule_of(settings)
    lexicon = Lexicon.from_config(settings)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    coco = load_captions(captions)
    person_boxes = person_images(instances, set(coco.imgs)) if instances else None
    timings["load_s"] = time.perf_counter() - start

    entries = [coco.imgs[i] for i in sorted(coco.imgs)]
    bad: dict[int, str] = {}
    if images:
        if not Path(images).is_dir():
            raise DataError(f"{images}: image folder not found")
        start = time.perf_counter()
        bad = check_images(entries, images, threads)
        timings["image_check_s"] = time.perf_counter() - start
        if entries and len(bad) / len(entries) > rule.max_bad_fraction:
            first = next(e for e in entries if e["id"] in bad)
            raise DataError(
                f"{images}: {len(bad)} of {len(entries)} images ({len(bad) / len(entries):.1%}) are missing or "
                f"unreadable, more than data.people.max_bad_fraction ({rule.max_bad_fraction:.1%}); first: "
                f"{first['file_name']} (id {first['id']}): {bad[first['id']]}")

    start = time.perf_counter()
    columns: dict[str, list] = {name: [] for name in LABEL_COLUMNS}
    skipped: list[dict] = []
    removed = {STEP_BAD_FILE: 0, STEP_NO_CAPTIONS: 0, STEP_NO_PERSON: 0, rule.step_name: 0}
    n_captions = 0
    for img in entries:
        image_id = img["id"]
        captions_of = [a["caption"].strip() for a in coco.imgToAnns.get(image_id, ())]
        n_captions += len(captions_of)
        labels = lexicon.label(captions_of)
        if image_id in bad:
            reason, step = bad[image_id], STEP_BAD_FILE
        elif not captions_of:
            reason, step = STEP_NO_CAPTIONS, STEP_NO_CAPTIONS
        elif not labels.people:
            reason, step = STEP_NO_PERSON, STEP_NO_PERSON
        elif labels.n_person_captions < rule.required(len(captions_of)):
            reason = (f"person in {labels.n_person_captions} of {len(captions_of)} captions "
                      f"(needs {rule.required(len(captions_of))})")
            step = rule.step_name
        else:
            reason, step = "", None
        if step is not None:
            removed[step] += 1
        if step in (STEP_BAD_FILE, STEP_NO_CAPTIONS):
            skipped.append({"image_id": image_id, "file_name": img["file_name"], "reason": reason})
        row = {
            "image_id": image_id, "file_name": img["file_name"],
            "path": os.path.join(images, img["file_name"]) if images else "",
            "width": img["width"], "height": img["height"], "captions": captions_of,
            "people": labels.people, "gender": labels.gender, "age": labels.age, "group": labels.group,
            "activity": labels.activity, "n_person_captions": labels.n_person_captions,
            "n_captions": labels.n_captions, "kept": step is None, "reason": reason,
        }
        for name in LABEL_COLUMNS:
            columns[name].append(row[name])
    table = pa.table({name: pa.array(columns[name], type=kind) for name, kind in LABEL_COLUMNS.items()})
    timings["label_s"] = time.perf_counter() - start
    steps = [(name, count) for name, count in removed.items() if name != STEP_BAD_FILE or images]
    steps.append(("kept", sum(columns["kept"])))
    return FilterResult(table, skipped, steps, len(entries), n_captions, person_boxes, timings)


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
def write_parquet(table: pa.Table, path: str | Path) -> Path:
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_skipped(rows: list[dict], path: str | Path) -> Path:
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SKIPPED_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic.write_text(path, buf.getvalue())


def build_manifest(captions: str | Path, out_dir: str | Path, images: str | None = None,
                   instances: str | Path | None = None, people_cfg: Mapping | None = None,
                   bench_dir: str | Path | None = None, threads: int = 8) -> dict:
    """Filter a COCO captions file and write every output of the `coco_manifest` rule:
    out_dir/{manifest,labels_all}.parquet, demographics.csv, skipped.csv, run.json, and
    bench_dir/coco_filter.csv with its four figures (bench_dir defaults to out_dir).
    Nothing is written when the input is bad."""
    from diffscale import provenance
    from diffscale.data import demographics

    out_dir = Path(out_dir)
    bench_dir = Path(bench_dir) if bench_dir is not None else out_dir
    settings = people_settings(people_cfg)
    result = filter_coco(captions, images, instances, settings, threads)

    start = time.perf_counter()
    labels = result.labels.to_pandas()
    kept = labels[labels["kept"]]
    profile = demographics.demographics_table(kept)
    table = demographics.filter_table(result.steps, result.n_images, labels, profile, result.person_boxes)
    outputs = [out_dir / name for name in ("manifest.parquet", "labels_all.parquet", "demographics.csv",
                                           "skipped.csv", "run.json")]
    outputs += [bench_dir / "coco_filter.csv", *(bench_dir / f"coco_filter_{name}.png" for name in demographics.FIGURES)]
    with atomic.all_or_none(outputs):  # interrupted or failed: none of them, not some
        write_parquet(result.manifest, out_dir / "manifest.parquet")
        write_parquet(result.labels, out_dir / "labels_all.parquet")
        demographics.write_csv(profile, out_dir / "demographics.csv")
        write_skipped(result.skipped, out_dir / "skipped.csv")
        demographics.write_csv(table, bench_dir / "coco_filter.csv")
        demographics.plot_figures(profile, bench_dir)
        result.timings["write_s"] = time.perf_counter() - start
        summary = _summary(result, len(kept))
        provenance.write_run_json(
            out_dir / "run.json", stage="coco_manifest",
            config_slice={"people": settings, "captions": str(captions), "images": images,
                          "instances": str(instances) if instances else None},
            summary=summary)
    return summary


def _summary(result, kept: int) -> dict:
    return {
        "images": result.n_images,
        "captions": result.n_captions,
        "kept": kept,
        "skipped": len(result.skipped),
        "steps": dict(result.steps),
        "captions_per_s": result.n_captions / result.timings["label_s"] if result.timings["label_s"] else None,
        **result.timings,
    }
