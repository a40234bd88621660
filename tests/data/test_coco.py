"""COCO loading, validation, image checks, the people-centric filter and its outputs
(diffscale.data.coco, scripts/filter_coco.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffscale.data import coco
from diffscale.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "filter_coco.py"

SCENES = {
    1: ["A man riding a wave on a surfboard.", "A surfer on a big wave.", "A man surfing.",
        "A person riding a wave.", "A man in a wetsuit surfing."],
    2: ["Two women playing tennis.", "Two women on a tennis court.", "A pair of women with rackets.",
        "Two female tennis players.", "Two women holding rackets."],
    3: ["A plate of food with broccoli.", "A white plate of rice.", "Food on a plate.",
        "A plate with vegetables.", "A dish of food."],
    4: ["A train at a station.", "A red train.", "People waiting on the platform.",
        "People standing near a train.", "A train on the tracks."],
    5: ["A group of kids playing soccer.", "Children kicking a ball.", "Kids on a field.",
        "A bunch of young kids playing.", "Several children playing soccer."],
}
SIZES = {1: (64, 48), 2: (48, 64), 3: (40, 40), 4: (56, 42), 5: (32, 48)}


def write_coco(root: Path, scenes: dict = SCENES, images: bool = True) -> tuple[Path, Path]:
    """A COCO captions json (ids deliberately unsorted) and its JPEG folder."""
    data = {"info": {}, "licenses": [], "images": [], "annotations": []}
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in sorted(scenes, reverse=True):
        w, h = SIZES.get(image_id, (40, 30))
        name = f"{image_id:012d}.jpg"
        data["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
        if images:
            Image.new("RGB", (w, h), (image_id * 40 % 255, 90, 160)).save(folder / name, quality=90)
        for caption in scenes[image_id]:
            data["annotations"].append({"image_id": image_id, "id": len(data["annotations"]) + 1, "caption": caption})
    path = root / "captions.json"
    path.write_text(json.dumps(data))
    return path, folder


@pytest.fixture
def small(tmp_path):
    return write_coco(tmp_path)


# ---- the filter ---------------------------------------------------------------------------------
def test_filter_keeps_people_centric_images(small):
    captions, folder = small
    result = coco.filter_coco(captions, str(folder))
    labels = result.labels.to_pandas()
    assert labels["image_id"].tolist() == [1, 2, 3, 4, 5]  # sorted by id
    assert labels.set_index("image_id")["kept"].to_dict() == {1: True, 2: True, 3: False, 4: False, 5: True}
    reasons = labels.set_index("image_id")["reason"]
    assert reasons[3] == "no person in captions"
    assert reasons[4] == "person in 2 of 5 captions (needs 3)"
    assert dict(result.steps) == {"unreadable image file": 0, "no captions": 0, "no person in captions": 1,
                                  "person in fewer than 3 of 5 captions": 1, "kept": 3}
    row = labels.set_index("image_id").loc[2]
    assert (row["gender"], row["age"], row["group"], row["activity"]) == ("female", "adult", "pair", "tennis")
    assert row["path"] == str(folder / "000000000002.jpg")
    assert list(row["captions"]) == SCENES[2]  # annotation order
    kids = labels.set_index("image_id").loc[5]
    assert (kids["gender"], kids["age"], kids["group"]) == ("neutral", "child", "group")


def test_rule_scales_to_the_caption_count():
    rule = coco.FilterRule(3, 5)
    assert [rule.required(n) for n in (1, 5, 6, 7, 10)] == [1, 3, 4, 5, 6]
    assert coco.FilterRule(1, 5).required(5) == 1


def test_config_rule_changes_what_is_kept(small):
    captions, _ = small
    lenient = coco.filter_coco(captions, people_cfg={"min_person_captions": 2})
    assert dict(lenient.steps)["kept"] == 4
    strict = coco.filter_coco(captions, people_cfg={"min_person_captions": 5})
    assert dict(strict.steps)["kept"] == 3


def test_labels_only_without_image_folder(small, tmp_path):
    captions, _ = small
    summary = coco.build_manifest(captions, tmp_path / "out")
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert manifest["path"].tolist() == ["", "", ""]
    assert manifest[["width", "height"]].values.tolist() == [[64, 48], [48, 64], [32, 48]]
    assert "unreadable image file" not in summary["steps"]


def test_outputs_and_their_schema(small, tmp_path):
    captions, folder = small
    out, bench = tmp_path / "out", tmp_path / "bench"
    coco.build_manifest(captions, out, images=str(folder), bench_dir=bench)
    schema = pq.read_schema(out / "manifest.parquet")
    assert [(f.name, str(f.type)) for f in schema] == [
        ("image_id", "int64"), ("file_name", "string"), ("path", "string"), ("width", "int64"),
        ("height", "int64"), ("captions", "list<element: string>"), ("people", "bool"), ("gender", "string"),
        ("age", "string"), ("group", "string"), ("activity", "string"), ("n_person_captions", "int64"),
        ("n_captions", "int64")]
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert manifest["image_id"].tolist() == [1, 2, 5] and manifest["people"].all()
    labels = pd.read_parquet(out / "labels_all.parquet")
    assert len(labels) == 5 and labels["kept"].sum() == 3
    assert pd.read_csv(out / "skipped.csv").columns.tolist() == ["image_id", "file_name", "reason"]
    demo = pd.read_csv(out / "demographics.csv")
    assert demo.columns.tolist() == ["label", "category", "count", "fraction"]
    assert demo.groupby("label")["count"].sum().to_dict() == {"activity": 3, "age": 3, "gender": 3, "group": 3}
    table = pd.read_csv(bench / "coco_filter.csv")
    steps = table[table["section"] == "filter"].set_index("category")["count"]
    assert steps["input images"] == 5 and steps["kept"] == 3
    assert steps.drop("input images").sum() == 5  # every image in exactly one step
    for name in ("gender", "age", "group", "activities"):
        assert (bench / f"coco_filter_{name}.png").stat().st_size > 1000
    run = json.loads((out / "run.json").read_text())
    assert run["stage"] == "coco_manifest" and run["summary"]["kept"] == 3
    assert run["config"]["people"]["min_person_captions"] == 3
    assert not list(out.glob("*.tmp")) and not list(bench.glob("*.tmp"))


# ---- bad input: the json ------------------------------------------------------------------------
def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "captions.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ('{"images": [', r"captions.json: not valid JSON \(Expecting value at line 1 column 13\)"),
    ('[1, 2]', r"captions.json: expected a JSON object with 'images' and 'annotations' lists"),
    ('{"annotations": []}', r"captions.json: missing the 'images' list of the COCO captions format"),
    ('{"images": []}', r"captions.json: missing the 'annotations' list of the COCO captions format"),
    ('{"images": {}, "annotations": []}', r"captions.json: 'images' must be a list, found a dict"),
    ('{"images": [], "annotations": []}', r"captions.json: 'images' is empty; there is nothing to filter"),
    ('{"images": [{"id": 7, "width": 4, "height": 4}], "annotations": []}',
     r"captions.json: images\[0\] \(id 7\): missing 'file_name'"),
    ('{"images": [{"id": 7, "file_name": "a.jpg", "width": 0, "height": 4}], "annotations": []}',
     r"images\[0\] \(id 7\): 'width' must be a positive integer"),
    ('{"images": [{"id": 7, "file_name": "a.jpg", "width": 4, "height": 4},'
     ' {"id": 7, "file_name": "b.jpg", "width": 4, "height": 4}], "annotations": []}',
     r"image id 7 appears twice \(images\[0\] and images\[1\]\)"),
    ('{"images": [{"id": 7, "file_name": "a.jpg", "width": 4, "height": 4}],'
     ' "annotations": [{"id": 3, "image_id": 7}]}', r"annotations\[0\] \(id 3\): 'caption' must be a string"),
    ('{"images": [{"id": 7, "file_name": "a.jpg", "width": 4, "height": 4}],'
     ' "annotations": [{"id": 3, "image_id": 8, "caption": "a man"}, {"id": 4, "image_id": 9, "caption": "x"}]}',
     r"annotation 3 refers to image_id 8, which is not in 'images' \(1 more annotations do too\)"),
])
def test_bad_json_is_named(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        coco.load_captions(_write(tmp_path, text))


def test_missing_captions_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.json: captions file not found"):
        coco.load_captions(tmp_path / "nope.json")


def test_loads_through_pycocotools(small):
    index = coco.load_captions(small[0])
    assert type(index).__module__ == "pycocotools.coco"
    assert [a["caption"] for a in index.imgToAnns[2]] == SCENES[2]


def test_images_without_captions_are_skipped(tmp_path):
    captions, folder = write_coco(tmp_path)
    data = json.loads(captions.read_text())
    data["images"].append({"id": 9, "file_name": "000000000009.jpg", "width": 40, "height": 30})
    Image.new("RGB", (40, 30)).save(folder / "000000000009.jpg")
    captions.write_text(json.dumps(data))
    result = coco.filter_coco(captions, str(folder))
    assert {"image_id": 9, "file_name": "000000000009.jpg", "reason": "no captions"} in result.skipped
    assert dict(result.steps)["no captions"] == 1


# ---- bad input: image files ---------------------------------------------------------------------
def test_check_image_reasons(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (30, 20), (200, 10, 10)).save(good, quality=90)
    big = tmp_path / "big.jpg"
    Image.effect_noise((300, 200), 60).convert("RGB").save(big, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(big.read_bytes()[: int(big.stat().st_size * 0.8)])
    header_only = tmp_path / "header.jpg"
    header_only.write_bytes(good.read_bytes()[:40])
    png = tmp_path / "cut.png"
    Image.new("RGB", (30, 20)).save(png)
    png.write_bytes(png.read_bytes()[:-20])
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert coco.check_image(good, 30, 20) is None
    assert coco.check_image(tmp_path / "gone.jpg") == "missing file"
    assert coco.check_image(truncated, 300, 200) == "truncated (no JPEG end marker)"
    assert coco.check_image(header_only, 30, 20) == "truncated (header cut short)"
    assert coco.check_image(png, 30, 20) == "truncated (no PNG end chunk)"
    assert coco.check_image(text) == "not an image"
    assert coco.check_image(empty) == "empty file"
    assert coco.check_image(good, 31, 20) == "size 30x20 differs from the json's 31x20"
    assert coco.check_image(tmp_path) == "not a file"


def test_check_reads_headers_only(tmp_path, monkeypatch):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (30, 20)).save(good)
    from PIL import ImageFile

    def no_decode(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    assert coco.check_image(good, 30, 20) is None


def test_bad_files_are_skipped_below_the_fraction(tmp_path):
    scenes = {**SCENES, **{i: SCENES[1] for i in range(10, 60)}}
    captions, folder = write_coco(tmp_path, scenes)
    (folder / "000000000001.jpg").unlink()
    path = folder / "000000000002.jpg"
    path.write_bytes(path.read_bytes()[:100])
    result = coco.filter_coco(captions, str(folder), people_cfg={"max_bad_fraction": 0.05})
    assert sorted(result.skipped, key=lambda r: r["image_id"]) == [
        {"image_id": 1, "file_name": "000000000001.jpg", "reason": "missing file"},
        {"image_id": 2, "file_name": "000000000002.jpg", "reason": "truncated (header cut short)"},
    ]
    assert dict(result.steps)["unreadable image file"] == 2
    kept = result.manifest.to_pandas()["image_id"].tolist()
    assert 1 not in kept and 2 not in kept and 5 in kept


def test_too_many_bad_files_fail_naming_the_count(tmp_path):
    captions, folder = write_coco(tmp_path)
    (folder / "000000000001.jpg").unlink()
    (folder / "000000000003.jpg").write_text("junk")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"2 of 5 images \(40.0%\) are missing or unreadable, more than "
                                        r"data.people.max_bad_fraction \(1.0%\); first: 000000000001.jpg "
                                        r"\(id 1\): missing file"):
        coco.build_manifest(captions, out, images=str(folder))
    assert not out.exists()  # no partial output


def test_missing_image_folder(small, tmp_path):
    with pytest.raises(DataError, match=r"nowhere: image folder not found"):
        coco.filter_coco(small[0], str(tmp_path / "nowhere"))


def test_people_settings_are_checked():
    with pytest.raises(ConfigError, match=r"data.people.max_bad_fraction: 2 is greater than the maximum of 1"):
        coco.people_settings({"max_bad_fraction": 2})
    with pytest.raises(ConfigError, match=r"data.people.min_person_captions: 6 is more than per_captions \(5\)"):
        coco.people_settings({"min_person_captions": 6})
    with pytest.raises(ConfigError, match=r"data.people.words.male\[0\]: 'Big Man' does not match"):
        coco.people_settings({"words": {"male": ["Big Man"]}})
    assert coco.people_settings({})["per_captions"] == 5


# ---- instances ------------------------------------------------------------------------------------
def _instances(tmp_path, boxes: dict[int, int], images=(1, 2, 3, 4, 5)) -> Path:
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 40, "height": 30} for i in images],
            "annotations": [{"id": k, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1], "iscrowd": 0}
                            for k, (i, c) in enumerate(boxes.items(), 1)],
            "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                           {"id": 18, "name": "dog", "supercategory": "animal"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_instances_agreement(small, tmp_path):
    captions, _ = small
    instances = _instances(tmp_path, {1: 1, 2: 1, 3: 18, 4: 1})
    coco.build_manifest(captions, tmp_path / "out", instances=instances)
    table = pd.read_csv(tmp_path / "out" / "coco_filter.csv")
    agree = table[table["section"] == "agreement with person boxes"].set_index("category")
    assert agree.loc["people label and person box", "count"] == 3  # 1, 2, 4
    assert agree.loc["people label, no person box", "count"] == 1   # 5
    assert agree.loc["neither", "count"] == 1                        # 3
    assert agree.loc["recall", "fraction"] == pytest.approx(1.0)
    assert agree.loc["precision", "fraction"] == pytest.approx(0.75)


def test_instances_of_another_set_are_refused(small, tmp_path):
    instances = _instances(tmp_path, {1: 1}, images=(1, 99))
    with pytest.raises(DataError, match=r"instances.json: image id 99 is not in the captions file"):
        coco.filter_coco(small[0], instances=instances)


# ---- the CLI ------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_writes_the_same_files(small, tmp_path):
    captions, folder = small
    out = tmp_path / "by_hand"
    proc = _cli("--captions", str(captions), "--images", str(folder), "--out-dir", str(out),
                "--people", '{"min_person_captions": 2}')
    assert proc.returncode == 0, proc.stderr
    assert "kept: 4" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "coco_filter.csv", "coco_filter_activities.png", "coco_filter_age.png", "coco_filter_gender.png",
        "coco_filter_group.png", "demographics.csv", "labels_all.parquet", "manifest.parquet", "run.json",
        "skipped.csv"]


@pytest.mark.parametrize("args, message", [
    (["--people", "{bad"], "error: --people: not valid JSON"),
    (["--people", '{"per_captions": 0}'], "error: data.people.per_captions: 0 is less than the minimum of 1"),
])
def test_cli_config_errors(small, tmp_path, args, message):
    proc = _cli("--captions", str(small[0]), "--out-dir", str(tmp_path / "o"), *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1


def test_cli_bad_input_is_one_line(tmp_path):
    bad = _write(tmp_path, '{"images": [{"id": 7, "file_name": "a.jpg", "width": 4, "height": 4}], '
                           '"annotations": [{"id": 5, "image_id": 3, "caption": "x"}]}')
    proc = _cli("--captions", str(bad), "--out-dir", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: annotation 5 refers to image_id 3, which is not in 'images'"]
    assert not (tmp_path / "o").exists()


# ---- real data ----------------------------------------------------------------------------------
@pytest.mark.shared
def test_real_val2017_images(shared_data, tmp_path):
    """The 25 real val2017 images: headers read, sizes agree with the official json."""
    root = shared_data / "coco"
    out = tmp_path / "out"
    summary = coco.build_manifest(root / "annotations" / "captions_val2017_local25.json", out,
                                  images=str(root / "val2017"))
    assert summary["images"] == 25 and summary["captions"] == 125 and summary["skipped"] == 0
    labels = pd.read_parquet(out / "labels_all.parquet")
    assert labels["path"].str.startswith(str(root / "val2017")).all()
    assert 5 <= labels["kept"].sum() <= 20


@pytest.mark.shared
def test_real_val2017_captions_labels_only(shared_data, tmp_path):
    summary = coco.build_manifest(shared_data / "coco" / "annotations" / "captions_val2017.json", tmp_path / "o")
    assert summary["images"] == 5000 and summary["captions"] == 25014
    # about half of val2017 shows people (COCO's person category: 2,693 of 5,000 images)
    people = pd.read_parquet(tmp_path / "o" / "labels_all.parquet")["people"].mean()
    assert 0.45 < people < 0.55
    assert 0.35 < summary["kept"] / summary["images"] < 0.5


def test_a_failure_while_writing_leaves_none_of_the_outputs(small, tmp_path, monkeypatch):
    from diffscale.data import demographics

    captions, folder = small
    out, bench = tmp_path / "out", tmp_path / "bench"

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # after the parquet and CSV files, before the figures

    monkeypatch.setattr(demographics, "plot_figures", broken)
    with pytest.raises(KeyboardInterrupt):
        coco.build_manifest(captions, out, images=str(folder), bench_dir=bench)
    assert sorted(p.name for p in out.iterdir()) == [] and sorted(p.name for p in bench.iterdir()) == []
