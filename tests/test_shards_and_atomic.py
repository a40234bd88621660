"""The embedding shard format and atomic writes."""

from __future__ import annotations

import json

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


def test_a_shard_is_byte_for_byte_what_safetensors_writes_and_its_checksum_is_the_files(tmp_path):
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(0)
    tensors = {  # every dtype a shard holds, in an order safetensors does not keep, plus edge shapes
        "pooled": torch.randn(3, 5, generator=g).to(torch.bfloat16),
        "tokens": torch.randn(7, 5, generator=g).to(torch.float16)[:, ::1].t().contiguous().t(),  # non-contiguous
        "image_id": torch.tensor([4, 2, 9]), "lengths": torch.tensor([2, 3, 2], dtype=torch.int32),
        "mask": torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.int8), "truncated": torch.tensor([True, False, True]),
        "latent_mean": torch.randn(3, 2, 2, generator=g), "caption_index": torch.tensor([0, 1, 2]),
        "empty": torch.zeros(3, 0, dtype=torch.float32), "bytes": torch.tensor([1, 2, 3], dtype=torch.uint8),
    }
    entry = shards.write_shard(tmp_path / "ours.safetensors", tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "theirs.safetensors"))
    ours = (tmp_path / "ours.safetensors").read_bytes()
    assert ours == (tmp_path / "theirs.safetensors").read_bytes()
    assert entry == {"file": "ours.safetensors", "items": 3, "sha256": shards.sha256_of(tmp_path / "ours.safetensors")}
    back = load_file(tmp_path / "ours.safetensors")
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    assert not list(tmp_path.glob(".*tmp"))


def test_a_dtype_safetensors_cannot_hold_is_named():
    with pytest.raises(ValueError, match="tensor 'z': dtype complex64 cannot be stored in safetensors"):
        shards.safetensors_layout({"z": torch.zeros(2, dtype=torch.complex64)})
