"""The embedding shard format and atomic writes."""

from __future__ import annotations

import json
import re

import pytest
import torch

from diffscale import atomic
from diffscale import shards
from diffscale.errors import DataError


def make_run(run_dir, sizes=(3, 2)):
    entries, start = [], 0
    for k, n in enumerate(sizes):
        tensors = {"image_id": torch.arange(start, start + n, dtype=torch.int64),
                   "latent_mean": torch.randn(n, 4, 2, 2).to(torch.float16)}
        entries.append(shards.write_shard(run_dir / shards.shard_name(k), tensors) | {"worker": k})
        start += n
    shards.write_index(run_dir, "images", entries, shards.tensor_specs(tensors), scaling_factor=0.18215)
    return entries


def test_reader_gives_items_across_shards(tmp_path):
    make_run(tmp_path)
    reader = shards.ShardReader(tmp_path)
    assert len(reader) == 5
    assert reader.item(3)["image_id"].item() == 3  # first item of the second shard
    assert reader.item(4)["latent_mean"].shape == (4, 2, 2)
    assert reader.item(4)["latent_mean"].dtype == torch.float16
    assert reader.column("image_id").tolist() == [0, 1, 2, 3, 4]
    assert reader.index["scaling_factor"] == 0.18215
    assert reader.index["tensors"]["latent_mean"] == {"dtype": "float16", "item_shape": [4, 2, 2]}
    with pytest.raises(IndexError):
        reader.item(5)


def test_verify_detects_missing_and_corrupt_shards(tmp_path):
    make_run(tmp_path)
    assert shards.verify(tmp_path)["items"] == 5
    path = tmp_path / shards.shard_name(1)
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(DataError, match="shard-00001.safetensors: checksum differs"):
        shards.verify(tmp_path)
    path.unlink()
    with pytest.raises(DataError, match="shard-00001.safetensors: shard listed in index.json is missing"):
        shards.verify(tmp_path)


@pytest.mark.parametrize("damage, problem", [
    (lambda path: path.write_bytes(path.read_bytes()[:-10]), "incomplete metadata"),  # cut short
    (lambda path: path.write_bytes(bytes(range(256)) * 4), "header too large"),  # not safetensors at all
    (lambda path: path.unlink(), None),
], ids=["truncated", "foreign-bytes", "deleted"])
def test_a_damaged_shard_is_named_when_opened(tmp_path, damage, problem):
    make_run(tmp_path)
    path = tmp_path / shards.shard_name(1)
    damage(path)
    reader = shards.ShardReader(tmp_path)  # shards open lazily: the intact one still reads
    assert reader.item(0)["image_id"].item() == 0
    what = rf"not a readable safetensors shard \(.*{problem}.*\)" if problem else "shard listed in index.json is missing"
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: {what}; run the embedding stage again$") as error:
        reader.item(3)
    assert "\n" not in str(error.value)


def test_an_index_without_shards_is_named(tmp_path):
    path = tmp_path / shards.INDEX
    path.write_text(json.dumps({"format": shards.FORMAT_VERSION}))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: expected a 'shards' list, found none; run the"):
        shards.ShardReader(tmp_path)


def test_a_run_without_index_is_incomplete(tmp_path):
    with pytest.raises(DataError, match="no index; the embedding run is missing or incomplete"):
        shards.ShardReader(tmp_path)


def test_shard_tensors_must_agree_on_items(tmp_path):
    with pytest.raises(ValueError, match="disagree on the item count"):
        shards.write_shard(tmp_path / "x.safetensors", {"a": torch.zeros(2), "b": torch.zeros(3)})
    assert not list(tmp_path.iterdir())


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1}  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp left behind


def test_atomic_outputs_get_the_umask_permissions(tmp_path):
    # safetensors and tempfile create files readable by their owner only; a lab sharing a study
    # must be able to read its shards, caches and weights.
    one = tmp_path / "one.bin"
    with atomic.atomic_path(one) as tmp:
        tmp.write_bytes(b"x")
        tmp.chmod(0o600)
    assert one.stat().st_mode & 0o777 == 0o600 | atomic.FILE_MODE
    folder = tmp_path / "run"
    with atomic.atomic_dir(folder, "script.sh") as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "w.safetensors").write_bytes(b"x")
        (tmp / "sub" / "w.safetensors").chmod(0o600)
        (tmp / "script.sh").write_bytes(b"x")
        (tmp / "script.sh").chmod(0o700)
    assert folder.stat().st_mode & 0o777 == atomic.DIR_MODE | 0o700
    assert (folder / "sub").stat().st_mode & 0o777 == atomic.DIR_MODE | 0o700
    assert (folder / "sub" / "w.safetensors").stat().st_mode & 0o777 == 0o600 | atomic.FILE_MODE
    assert (folder / "script.sh").stat().st_mode & 0o777 == 0o700 | atomic.FILE_MODE  # never narrowed


def test_a_folder_output_replaces_only_an_earlier_output_of_its_kind(tmp_path):
    out = tmp_path / "out"
    for round_ in (1, 2):  # absent, then an earlier output (it holds the marker): written, then replaced
        with atomic.atomic_dir(out, "samples.json") as tmp:
            (tmp / "samples.json").write_text(str(round_))
        assert (out / "samples.json").read_text() == str(round_)
    mine = tmp_path / "mine"
    (mine / "other_run").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match=rf"^{mine}: a folder of other files \(without samples.json, so not an "
                                        r"earlier output of this kind\), which the output would replace; give a new "
                                        r"or empty folder$"):
        with atomic.atomic_dir(mine, "samples.json"):
            raise AssertionError("refused before the block runs")
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "other_run").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"file: a file is there; the output is a folder$"):
        atomic.check_replaceable(tmp_path / "file", "samples.json")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'file'}: a file is there, where the output folder "
                                        rf"{tmp_path / 'file' / 'run'} needs a folder$"):
        atomic.check_folder_path(tmp_path / "file" / "run")
    (tmp_path / "empty").mkdir()
    assert atomic.check_replaceable(tmp_path / "empty", "samples.json") == tmp_path / "empty"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "mine", "out"]  # no temp left


def test_shards_are_readable_as_the_umask_allows(tmp_path):
    make_run(tmp_path)  # safetensors alone would write them 0o600
    for shard in tmp_path.glob("*.safetensors"):
        assert shard.stat().st_mode & atomic.FILE_MODE == atomic.FILE_MODE
