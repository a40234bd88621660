"""CIFAR-10 in three formats to one array; the cache; batches, flips and the worker check; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ddpm_files import write_archive, write_batches, write_pngs
from diffscale import cifar
from diffscale.ddpm import data as ddata
from diffscale.errors import DataError


def test_three_formats_load_to_the_same_array(images, tmp_path):
    archive = cifar.read_images(write_archive(tmp_path / "cifar-10-python.tar.gz", images))
    folder = cifar.read_images(write_batches(tmp_path / "batches" / cifar.BATCH_DIR, images).parent)
    flat = cifar.read_images(write_pngs(tmp_path / "flat", images, classes=False))
    classes = cifar.read_images(write_pngs(tmp_path / "classes", images, classes=True))
    assert archive.dtype == np.uint8 and archive.shape == (20, 32, 32, 3)
    for other in (folder, flat, classes):
        np.testing.assert_array_equal(archive, other)
    np.testing.assert_array_equal(archive, images)


def test_every_format_is_described_without_decoding(images, tmp_path):
    # the inputs summary reads data.cifar this way: the full study names the Kaggle train/ folder
    archive = cifar.describe(write_archive(tmp_path / "cifar-10-python.tar.gz", images))
    assert archive == {"format": "python archive", "images": 20, "classes": {"airplane": 20}}
    folder = cifar.describe(write_batches(tmp_path / "batches" / cifar.BATCH_DIR, images).parent)
    assert folder == {"format": "python batches", "images": 20, "classes": {"airplane": 20}}
    flat = cifar.describe(write_pngs(tmp_path / "flat", images, classes=False))
    assert flat == {"format": "image folder", "images": 20, "classes": {}}  # Kaggle's copy has no labels here
    classes = cifar.describe(write_pngs(tmp_path / "classes", images, classes=True))
    assert classes == {"format": "image folder", "images": 20, "classes": {"class0": 7, "class1": 7, "class2": 6}}
    (tmp_path / "batches" / cifar.BATCH_DIR / cifar.META).unlink()
    assert cifar.describe(tmp_path / "batches")["classes"] == {"0": 20}  # no class names: the label numbers


def test_prepare_caches_once_and_loads_memory_mapped(images, tmp_path):
    source = write_pngs(tmp_path / "src", images, classes=False)
    info = ddata.prepare(source, tmp_path / "c" / "cifar.npy")
    assert info["images"] == 20 and info["bytes"] == images.nbytes
    cached = ddata.load_cache(tmp_path / "c" / "cifar.npy")
    assert isinstance(cached, np.memmap)
    np.testing.assert_array_equal(cached, images)
    assert json.loads(ddata.info_path(tmp_path / "c" / "cifar.npy").read_text()) == info
    np.save(tmp_path / "empty.npy", np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"empty.npy: holds no images; re-run the ddpm_data rule on a non-empty "
                                        r"data.cifar$"):
        ddata.load_cache(tmp_path / "empty.npy")


def test_a_missing_foreign_or_truncated_cache_is_named_in_our_words(images, tmp_path):
    """NumPy answers a text file with advice to unpickle it; the message says what the file is instead."""
    cache = tmp_path / "cifar.npy"
    with pytest.raises(DataError, match=r"cifar.npy: cannot read the CIFAR cache \(No such file or directory\); "
                                        r"run the ddpm_data rule$"):
        ddata.load_cache(cache)
    cache.write_text("images go here\n")
    with pytest.raises(DataError, match=r"cifar.npy: not a NumPy .npy file, so not a CIFAR cache; re-run the "
                                        r"ddpm_data rule$"):
        ddata.load_cache(cache)
    np.save(cache, images)
    cache.write_bytes(cache.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"cifar.npy: a damaged or truncated CIFAR cache \(.+\); re-run the "
                                        r"ddpm_data rule$"):
        ddata.load_cache(cache)


def test_a_cache_whose_info_cannot_be_written_is_not_left_behind(images, tmp_path, monkeypatch):
    """Both files or neither: a .npy without its .json would look like a finished step."""
    source = write_pngs(tmp_path / "src", images, classes=False)

    def full_disk(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ddata.atomic, "write_json", full_disk)
    with pytest.raises(OSError, match="No space"):
        ddata.prepare(source, tmp_path / "c" / "cifar.npy")
    assert not list((tmp_path / "c").iterdir())


def test_demo_folder_of_class_jpegs_loads(tmp_path):
    from diffscale.data import synthetic

    synthetic.make_cifar(tmp_path / "demo", per_class=2)
    assert cifar.read_images(tmp_path / "demo").shape == (20, 32, 32, 3)


def test_batches_are_a_function_of_seed_and_step_and_flip_half(cache):
    a = ddata.step_items(20, 8, seed=0, step=3)
    assert a == ddata.step_items(20, 8, seed=0, step=3)
    assert a != ddata.step_items(20, 8, seed=0, step=4)
    one_epoch = [i for s in range(2) for i, _ in ddata.step_items(20, 8, 0, s)]
    assert len(set(one_epoch)) == 16  # no image twice within an epoch
    flips = [f for s in range(50) for _, f in ddata.step_items(20, 8, 0, s)]
    assert 0.35 < sum(flips) / len(flips) < 0.65
    dataset = ddata.CachedImages(cache)
    index = a[0][0]
    image, worker = dataset[(index, True)]
    assert image.shape == (3, 32, 32) and worker == -1
    np.testing.assert_array_equal(image[:, :, ::-1], dataset[(index, False)][0])


def test_ranks_split_the_global_batch(cache):
    whole = list(ddata.StepSampler(20, 8, 1, 0, 0, 0, 2))
    halves = [list(ddata.StepSampler(20, 4, 2, r, 0, 0, 2)) for r in (0, 1)]
    assert [h0 + h1 for h0, h1 in zip(*halves)] == whole


def test_loader_uses_the_workers_it_says(cache):
    dataset = ddata.CachedImages(cache)
    sampler = ddata.StepSampler(len(dataset), 4, 1, 0, 0, 0, 6)
    seen = set()
    for item in ddata.make_loader(dataset, sampler, workers=2, pin_memory=False):
        assert item["images"].dtype.is_floating_point is False and item["images"].shape == (4, 3, 32, 32)
        seen.update(item["workers"].tolist())
    assert seen == {0, 1}


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: CIFAR-10 not found \(data.cifar: the python archive"):
        cifar.read_images(tmp_path / "nowhere")


def test_image_that_is_not_32x32_rgb_is_named(images, tmp_path):
    root = write_pngs(tmp_path / "bad", images[:3], classes=False)
    Image.new("RGB", (64, 64)).save(root / "train" / "2.png")
    with pytest.raises(DataError, match=r"train/2.png: 64x64 RGB, expected a 32x32 RGB image"):
        cifar.read_images(root)
    Image.new("L", (32, 32)).save(root / "train" / "2.png")
    with pytest.raises(DataError, match=r"train/2.png: 32x32 L, expected a 32x32 RGB image"):
        cifar.read_images(root)
    (root / "train" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"train/2.png: not a readable image \(corrupt, or not an image file\)$"):
        cifar.read_images(root)
    good = (root / "train" / "1.png").read_bytes()
    (root / "train" / "2.png").write_bytes(good[: len(good) // 2])  # the header reads; the pixels do not
    with pytest.raises(DataError, match=r"train/2.png: not a readable image \(.*truncated.*\)$"):
        cifar.read_images(root)


def test_archive_that_is_not_cifars_is_named(tmp_path):
    import tarfile

    other = tmp_path / "other.tar.gz"
    (tmp_path / "readme.txt").write_text("hello")
    with tarfile.open(other, "w:gz") as tar:
        tar.add(tmp_path / "readme.txt", arcname="readme.txt")
    with pytest.raises(DataError, match=r"other.tar.gz: not the CIFAR-10 python archive \(no cifar-10-batches-py/data_batch_1\)"):
        cifar.read_images(other)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"junk.tar.gz: not a readable tar archive"):
        cifar.read_images(junk)


def test_empty_folder_and_decode_each_step_on_batches(tmp_path, images):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty/train: no images \(expected train/\*.png"):
        cifar.read_images(tmp_path / "empty")
    batches = write_batches(tmp_path / "b", images)
    with pytest.raises(DataError, match="decode_each_step needs an image folder"):
        ddata.FileImages(batches)


def test_an_image_folder_given_to_a_run_that_reads_the_cache_is_refused(tmp_path):
    with pytest.raises(DataError) as caught:
        ddata.dataset_for({"decode_each_step": False}, tmp_path / "c.npy", tmp_path / "nowhere")
    assert str(caught.value) == (f"{tmp_path / 'nowhere'}: this run reads the cache {tmp_path / 'c.npy'}, not an "
                                 "image folder (ddpm.decode_each_step is off); leave the folder out, or set "
                                 "decode_each_step")
    with pytest.raises(DataError, match="decode_each_step: the run needs the image folder"):
        ddata.dataset_for({"decode_each_step": True}, tmp_path / "c.npy", None)


def test_data_cli_exits_2_with_one_line(repo_root, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(repo_root / "scripts" / "ddpm_data.py"), "--source",
                           str(tmp_path / "none"), "--out", str(tmp_path / "c.npy")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'none'}: CIFAR-10 not found (data.cifar: the "
                                                "python archive, its folder, or an image folder)"]
    assert not (tmp_path / "c.npy").exists()


def test_unreadable_archive_is_one_line(repo_root, tmp_path):
    import subprocess
    import sys

    fake = tmp_path / "fake.tar.gz"
    fake.write_bytes(b"\x00" * 100)
    proc = subprocess.run([sys.executable, str(repo_root / "scripts" / "ddpm_data.py"), "--source", str(fake),
                           "--out", str(tmp_path / "c.npy")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {fake}: not a readable tar archive (file could not be opened successfully)"]
    assert not (tmp_path / "c.npy").exists()
