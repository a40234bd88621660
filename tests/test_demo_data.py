"""The demo's synthetic data is well-formed, deterministic and shaped like the real inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from diffscale.data import synthetic
from diffscale import cifar
from diffscale.folders import subject_folder
from diffscale.data.summary import coco_counts, write_summary
from diffscale.errors import DataError


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    synthetic.make_coco(root / "coco" / "captions.json", root / "coco" / "images", 24, 0.6, seed=0)
    synthetic.make_cifar(root / "cifar", per_class=3, seed=0)
    synthetic.make_subject(root / "subject", n_images=4, seed=0)
    return root


def test_coco_json_follows_the_official_schema(demo):
    data = json.loads((demo / "coco" / "captions.json").read_text())
    assert set(data) == {"info", "licenses", "images", "annotations"}
    image = data["images"][0]
    assert {"id", "file_name", "width", "height", "license", "coco_url", "date_captured", "flickr_url"} <= set(image)
    assert {"id", "image_id", "caption"} == set(data["annotations"][0])
    coco = COCO(str(demo / "coco" / "captions.json"))  # the official loader accepts it
    assert len(coco.getImgIds()) == 24 and len(coco.getAnnIds()) == 120
    assert len({a["id"] for a in data["annotations"]}) == 120


def test_images_match_their_declared_size(demo):
    data = json.loads((demo / "coco" / "captions.json").read_text())
    sizes = set()
    for entry in data["images"]:
        with Image.open(demo / "coco" / "images" / entry["file_name"]) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert img.size == (entry["width"], entry["height"])
            sizes.add(img.size)
    assert len(sizes) >= 4  # varied sizes and aspect ratios, like COCO


def test_some_captions_are_about_people_and_some_not(demo):
    data = json.loads((demo / "coco" / "captions.json").read_text())
    people_words = ("man", "woman", "men", "women", "kids", "children", "girl", "boy", "people", "chef",
                    "surfer", "skier", "couple", "guy", "lady", "skateboarder", "skater", "citizen", "cook")
    by_image = {}
    for a in data["annotations"]:
        words = set(a["caption"].lower().split())
        by_image.setdefault(a["image_id"], []).append(bool(words & set(people_words)))
    mentions = [sum(v) for v in by_image.values()]
    assert sum(m >= 3 for m in mentions) >= 10  # clearly people-centric
    assert sum(m == 0 for m in mentions) >= 6  # clearly not
    assert any(m == 2 for m in mentions)  # ambiguous: only two of five captions


def test_cifar_and_subject_folders(demo):
    found = cifar.describe(demo / "cifar")
    assert found["images"] == 30 and len(found["classes"]) == 10 and set(found["classes"].values()) == {3}
    assert cifar.read_images(demo / "cifar").shape == (30, 32, 32, 3)
    subject = subject_folder(demo / "subject", trigger="sks disc")
    assert len(subject) == 4
    assert all(s.caption.startswith("a photo of sks disc ") for s in subject)
    raw = (demo / "subject" / "subject_000.txt").read_text()
    assert "[trigger]" in raw


def test_generation_is_deterministic(demo, tmp_path):
    synthetic.make_coco(tmp_path / "captions.json", tmp_path / "images", 24, 0.6, seed=0)
    assert (tmp_path / "captions.json").read_bytes() == (demo / "coco" / "captions.json").read_bytes()
    assert digest(tmp_path / "images") == digest(demo / "coco" / "images")
    synthetic.make_coco(tmp_path / "other.json", tmp_path / "other", 24, 0.6, seed=1)
    assert (tmp_path / "other.json").read_bytes() != (demo / "coco" / "captions.json").read_bytes()


def test_the_demo_writers_replace_only_their_own_folders(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep")
    for make in (lambda: synthetic.make_cifar(mine, per_class=1), lambda: synthetic.make_subject(mine, n_images=1),
                 lambda: synthetic.make_coco(tmp_path / "c.json", mine, 3, 0.6)):
        with pytest.raises(DataError, match=rf"^{mine}: a folder of other files"):
            make()
    assert [p.name for p in mine.iterdir()] == ["precious.txt"] and not (tmp_path / "c.json").exists()
    synthetic.make_cifar(tmp_path / "cifar", per_class=1)
    assert synthetic.make_cifar(tmp_path / "cifar", per_class=2) == 20  # its own earlier output: replaced
    (tmp_path / "c.json").mkdir()  # the captions path is a folder: neither captions nor images appear
    with pytest.raises(IsADirectoryError):
        synthetic.make_coco(tmp_path / "c.json", tmp_path / "images", 3, 0.6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "cifar", "mine"]


def test_summary_counts(demo, tmp_path):
    result = write_summary(tmp_path / "s.json", demo / "coco" / "captions.json", demo / "coco" / "images",
                           demo / "cifar", demo / "subject")
    assert result["coco"] == {"images": 24, "captions": 120, "captions_per_image_min": 5,
                              "captions_per_image_max": 5, "image_files": 24}
    assert result["cifar"] == {"format": "image folder", "images": 30,
                               "classes": {name: 3 for name in synthetic.CIFAR_CLASSES}}
    assert result["subject"]["images"] == 4
    assert json.loads((tmp_path / "s.json").read_text()) == result
    captions = demo / "coco" / "captions.json"
    first = json.loads(captions.read_text())["images"][0]["file_name"]
    with pytest.raises(DataError, match=rf"^{demo / 'cifar'}: holds none of the 24 images {captions} lists "
                                        rf"\(such as {first}\)$"):  # the wrong folder: was 'image_files: 0'
        write_summary(tmp_path / "t.json", captions, demo / "cifar", demo / "cifar", demo / "subject")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'nowhere'}: not a folder \(the COCO images"):
        write_summary(tmp_path / "t.json", captions, tmp_path / "nowhere", demo / "cifar", demo / "subject")
    assert not (tmp_path / "t.json").exists()


def test_subject_folder_errors_name_the_file(tmp_path):
    synthetic.make_subject(tmp_path / "s", n_images=2)
    (tmp_path / "s" / "subject_001.txt").unlink()
    with pytest.raises(DataError, match=r"subject_001.txt: missing caption for subject_001.png"):
        subject_folder(tmp_path / "s", "x")
    (tmp_path / "s" / "subject_001.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"subject_001.txt: caption is empty"):
        subject_folder(tmp_path / "s", "x")
    (tmp_path / "s" / "orphan.txt").write_text("a photo")
    with pytest.raises(DataError, match=r"orphan.txt: caption has no image of the same name"):
        subject_folder(tmp_path / "s", "x")


def test_malformed_captions_json_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad.json: not valid JSON"):
        coco_counts(bad)
    bad.write_text('{"images": []}')
    with pytest.raises(DataError, match=r"bad.json: missing the 'annotations' list"):
        coco_counts(bad)


def test_real_photos_as_a_subject_folder(shared_data, tmp_path):
    """The 6 real captioned photos laid out as a custom-subject folder load with their captions."""
    import shutil

    items = json.loads((shared_data / "photos" / "captions.json").read_text())["items"]
    for item in items:
        shutil.copy(shared_data / "photos" / item["file"], tmp_path / item["file"])
        (tmp_path / item["file"]).with_suffix(".txt").write_text(f"[trigger], {item['caption']}\n")
    loaded = subject_folder(tmp_path, trigger="sks")
    assert len(loaded) == 6
    by_name = {c.image.name: c.caption for c in loaded}
    assert by_name["chelsea.png"] == "sks, a facial photo of a tabby cat"
    with Image.open(loaded[0].image) as img:
        assert min(img.size) >= 64
