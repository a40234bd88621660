"""The dataset check: one line per mistake naming the file, no output; buckets; the demo's subject."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from diffscale.data.synthetic import make_subject
from diffscale.errors import DataError
from diffscale.flux import dataset as ds

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "flux_dataset.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture
def folder(tmp_path, subject) -> Path:
    copy = tmp_path / "photos"
    shutil.copytree(subject, copy)
    return copy


def test_the_demo_subject_has_same_name_captions_with_the_trigger(subject):
    images = sorted(subject.glob("*.png"))
    assert len(images) == 5
    for image in images:
        assert "[trigger]" in image.with_suffix(".txt").read_text()


def test_prepare_substitutes_the_trigger_buckets_and_crops(folder, tmp_path):
    with Image.open(folder / "subject_001.png") as img:  # one landscape image: the 4:3 bucket
        img.resize((160, 96)).save(folder / "subject_001.png")
    items = ds.prepare(folder, tmp_path / "out", "sks disc", 64, [1.0, 0.75, 1.3333], 5)
    assert [i.caption.startswith("a photo of sks disc") for i in items] == [True] * 5
    buckets = {i.name: i.bucket for i in items}
    assert buckets["subject_001"] == (80, 48) and buckets["subject_000"] == (64, 64)
    with Image.open(tmp_path / "out" / "images" / "subject_001.png") as img:
        assert img.size == (80, 48)
    table = (tmp_path / "out" / "buckets.csv").read_text().splitlines()
    assert table[0].startswith("image,width,height,bucket_width,bucket_height") and len(table) == 6
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["trigger"] == "sks disc"


def test_buckets_are_multiples_of_16_with_about_the_resolution_area():
    buckets = ds.buckets_for(512, [1.0, 0.75, 1.3333])
    assert buckets == [(512, 512), (448, 592), (592, 448)]
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in buckets)


def _no_caption(folder: Path) -> str:
    (folder / "subject_002.txt").unlink()
    return f"{folder / 'subject_002.txt'}: missing caption for subject_002.png"


def _no_image(folder: Path) -> str:
    (folder / "subject_003.png").unlink()
    return f"{folder / 'subject_003.txt'}: caption has no image of the same name"


def _empty_caption(folder: Path) -> str:
    (folder / "subject_000.txt").write_text("  \n")
    return f"{folder / 'subject_000.txt'}: caption is empty"


def _unreadable(folder: Path) -> str:
    (folder / "subject_004.png").write_bytes(b"not a png")
    return f"{folder / 'subject_004.png'}: unreadable image"


def _not_utf8(folder: Path) -> str:
    (folder / "subject_001.txt").write_bytes(b"\xff\xfea photo")  # UTF-16 from a Windows editor
    return f"{folder / 'subject_001.txt'}: not UTF-8 text (expected the caption file)"


def _too_small(folder: Path) -> str:
    with Image.open(folder / "subject_001.png") as img:
        img.resize((40, 40)).save(folder / "subject_001.png")
    return f"{folder / 'subject_001.png'}: too small (40x40); the smallest bucket side is 48 px"


def _too_few(folder: Path) -> str:
    for stem in ("subject_003", "subject_004"):
        (folder / f"{stem}.png").unlink()
        (folder / f"{stem}.txt").unlink()
    return f"{folder}: 3 captioned images, flux.min_images (--min-images by hand) asks for at least 5"


@pytest.mark.parametrize("mistake", [_no_caption, _no_image, _empty_caption, _not_utf8, _unreadable, _too_small,
                                     _too_few])
def test_each_mistake_is_one_line_naming_the_file_and_leaves_no_output(folder, tmp_path, mistake):
    expected = mistake(folder)
    with pytest.raises(DataError) as err:
        ds.prepare(folder, tmp_path / "out", "sks disc", 64, [1.0, 0.75, 1.3333], 5)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_the_photos_folder_as_out_is_refused_and_kept(subject, tmp_path):
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(subject, photos)
    before = sorted(p.name for p in photos.iterdir())
    with pytest.raises(DataError, match=rf"^{photos}: a folder of other files \(without dataset.json"):
        ds.prepare(photos, photos, "sks disc", 64, [1.0], 5)
    assert sorted(p.name for p in photos.iterdir()) == before
    ds.prepare(photos, tmp_path / "out", "sks disc", 64, [1.0], 5)
    ds.prepare(photos, tmp_path / "out", "sks disc", 64, [1.0], 5)  # an earlier prepared dataset: replaced
    assert len(ds.load(tmp_path / "out")) == len(before) // 2


def test_the_cli_prints_the_line_and_exits_2(folder, tmp_path):
    expected = _empty_caption(folder)
    done = run_cli("--images", str(folder), "--trigger", "sks", "--out", str(tmp_path / "out"), "--resolution", "64")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {expected}"
    assert not (tmp_path / "out").exists()


def test_make_subject_default_size_fits_the_demo_resolution(tmp_path):
    make_subject(tmp_path / "s", n_images=5)
    items = ds.check_folder(tmp_path / "s", "x", 64, [1.0], 5)
    assert {i.bucket for i in items} == {(64, 64)}


@pytest.mark.parametrize("flags, message", [
    (["--bucket-ratio", "0"], "--bucket-ratio: 0.0 is less than the minimum of 0.25"),
    (["--resolution", "0"], "--resolution: 0 is less than the minimum of 16"),
    (["--resolution", "24"], "--resolution: 24 is not a multiple of 16"),
    (["--min-images", "0"], "--min-images: 0 is less than the minimum of 1"),
    (["--trigger", ""], "--trigger: '' should be non-empty"),
])
def test_the_cli_checks_its_flags_by_the_config_schema(folder, tmp_path, flags, message):
    trigger = [] if "--trigger" in flags else ["--trigger", "sks"]
    done = run_cli("--images", str(folder), "--out", str(tmp_path / "out"), *trigger, *flags)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_a_damaged_image_in_a_prepared_dataset_is_one_line_when_cached(prepared, demo_config, tmp_path):
    from diffscale.flux.cache import build_cache
    from diffscale.flux.settings import cache_config

    dataset = tmp_path / "dataset"
    shutil.copytree(prepared[0], dataset)
    image = sorted((dataset / "images").iterdir())[0]
    image.write_bytes(image.read_bytes()[:100])  # truncated past its header
    with pytest.raises(DataError, match=rf"^{image}: not a readable image"):
        build_cache(dataset, tmp_path / "cache", cache_config(demo_config))
    assert not (tmp_path / "cache").exists()
