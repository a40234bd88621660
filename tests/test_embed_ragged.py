"""Ragged text storage: only real tokens on disk, read back exactly as the full-77 layout at the
real positions, with the same mask; bytes per caption and the projected full-study size."""

import pytest
import torch

from diffscale.embed import sizes
from diffscale.shards import ShardReader, pad_ragged, verify
from diffscale.embed.stage import run_embedding
from embed_data import demo_settings, make_manifest


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    fixture = make_manifest(tmp_path_factory.mktemp("manifest"), n_synthetic=8, n_real=2)
    root = tmp_path_factory.mktemp("text")
    out = {}
    for storage in ("full", "ragged"):
        run_dir = root / storage
        timing = run_embedding("text", fixture.manifest, run_dir, "serial", "pinned", 1,
                               demo_settings("text", text_storage=storage), skip_list=fixture.skipped)
        out[storage] = (run_dir, timing)
    return out


def test_ragged_round_trips_to_the_full_layout_at_the_real_positions(runs):
    (full_dir, _), (ragged_dir, _) = runs["full"], runs["ragged"]
    full, ragged = ShardReader(full_dir), ShardReader(ragged_dir)
    assert verify(ragged_dir)["text_storage"] == "ragged" and ShardReader(full_dir).index["text_storage"] == "full"
    assert ragged.index["tensors"]["hidden"] == full.index["tensors"]["hidden"]  # readers see [77, D]
    assert set(ragged.index["stored"]) == {"image_id", "caption_index", "tokens", "lengths", "offsets", "pooled",
                                           "truncated"}
    assert len(full) == len(ragged) > 10
    for i in range(len(full)):
        a, b = full.item(i), ragged.item(i)
        n = int(a["mask"].sum())
        assert torch.equal(a["mask"], b["mask"]) and b["mask"].dtype == torch.int8
        assert torch.equal(a["hidden"][:n], b["hidden"][:n])  # exact at the real positions
        assert not b["hidden"][n:].any() and (n == 77 or a["hidden"][n:].abs().sum() > 0)  # zeros, not CLIP's states
        assert all(torch.equal(a[k], b[k]) for k in ("image_id", "caption_index", "pooled", "truncated"))
    whole_full, whole_ragged = full.shard(0), ragged.shard(0)
    assert torch.equal(whole_full["mask"], whole_ragged["mask"])
    assert torch.equal(whole_full["hidden"] * whole_full["mask"][..., None], whole_ragged["hidden"])


def test_ragged_is_smaller_and_the_projection_follows_from_the_shards_bytes(runs):
    (_, full_t), (ragged_dir, ragged_t) = runs["full"], runs["ragged"]
    assert ragged_t["bytes_per_item"] < full_t["bytes_per_item"] / 2
    shard_bytes = sum((ragged_dir / s["file"]).stat().st_size for s in ShardReader(ragged_dir).index["shards"])
    reader = ShardReader(ragged_dir)
    tokens, captions = int(reader.column("mask").sum()), len(reader)
    images = len(set(reader.column("image_id").tolist()))
    hidden = reader.index["tensors"]["hidden"]
    per_token = hidden["item_shape"][-1] * getattr(torch, hidden["dtype"]).itemsize
    assert ragged_t["bytes_per_token"] == per_token  # one stored hidden state per real token, nothing else
    assert ragged_t["tokens_per_caption"] == pytest.approx(tokens / captions)
    fixed = ragged_t["fixed_bytes_per_caption"]
    assert fixed == pytest.approx((shard_bytes - tokens * per_token) / captions) and 0 < fixed < 2 * per_token
    # the projection is built from bytes per token: at this run's tokens per caption, it is the shards' bytes
    assert ragged_t["projected_full_gb"] == pytest.approx(
        sizes.projected_text_gb(fixed, per_token, tokens / captions, captions / images))
    assert ragged_t["projected_full_gb"] == pytest.approx(shard_bytes / images * sizes.FULL_STUDY_IMAGES / 1e9)
    longer = sizes.projected_text_gb(fixed, per_token, tokens / captions + 10, captions / images)
    assert longer - ragged_t["projected_full_gb"] == pytest.approx(
        10 * per_token * captions / images * sizes.FULL_STUDY_IMAGES / 1e9)
    assert reader.index["meta"]["storage"]["projected_full_gb"] == ragged_t["projected_full_gb"]
    assert "bytes_per_token" not in full_t  # full-77 storage: a caption's size does not depend on its tokens
    assert ragged_t["projected_images"] == sizes.FULL_STUDY_IMAGES == 48_000  # the people-centric subset
    assert (ragged_t["bytes_per_item"], ragged_t["bytes_per_image"]) == pytest.approx(
        (shard_bytes / captions, shard_bytes / images))
    full_dir = runs["full"][0]
    full_bytes = sum((full_dir / s["file"]).stat().st_size for s in ShardReader(full_dir).index["shards"])
    assert captions > images and full_t["projected_full_gb"] == pytest.approx(
        full_bytes / images * sizes.FULL_STUDY_IMAGES / 1e9)  # per image: five captions each in the study


def test_pad_ragged():
    tokens = torch.arange(10.0).reshape(5, 2)
    hidden, mask = pad_ragged(tokens, torch.tensor([2, 0, 3]), context=4)
    assert mask.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert hidden[0, :2].tolist() == [[0, 1], [2, 3]] and hidden[2, :3].flatten().tolist() == [4, 5, 6, 7, 8, 9]
    assert not hidden[1].any() and not hidden[0, 2:].any()


def test_storage_counts_every_shard_and_every_image_once(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "shard-00000.safetensors").write_bytes(b"x" * 300)
    (tmp_path / "shard-00001.safetensors").write_bytes(b"x" * 100)
    shards = [{"file": "shard-00000.safetensors", "items": 6, "tensor_bytes": {"tokens": 120}},
              {"file": "shard-00001.safetensors", "items": 2, "tensor_bytes": {"tokens": 40}}]
    inputs = SimpleNamespace(items=[SimpleNamespace(image_id=i // 2) for i in range(8)])  # 2 captions an image
    out = sizes.storage(tmp_path, shards, inputs, tokens=80)
    assert out["shard_bytes"] == 400 and out["bytes_per_item"] == 50 and out["bytes_per_image"] == 100
    assert out["bytes_per_token"] == 2 and out["fixed_bytes_per_caption"] == 30 and out["tokens_per_caption"] == 10
    assert out["projected_full_gb"] == pytest.approx(sizes.FULL_STUDY_IMAGES * 2 * (30 + 2 * 10) / 1e9)
    images = sizes.storage(tmp_path, [{**s, "tensor_bytes": {}} for s in shards], inputs)
    assert "bytes_per_token" not in images and images["projected_full_gb"] == pytest.approx(
        100 * sizes.FULL_STUDY_IMAGES / 1e9)
