"""Caption/latent pairing over the shards, and the step-indexed batch order."""

import json

import numpy as np
import pytest
import torch

from diffscale.shards import ShardReader, shard_name, tensor_specs, write_index, write_shard
from diffscale.errors import DataError
from diffscale.train.data import LatentTextDataset, StepBatches, make_loader
from diffscale.train.synthetic import write_embedding_runs


def test_each_caption_is_paired_with_its_image_by_id(embeddings):
    images_dir, text_dir = embeddings
    data = LatentTextDataset(images_dir, text_dir)
    assert len(data) == 32 and data.unmatched_captions == 0
    assert data.latent_shape == (4, 8, 8) and data.hidden_shape == (77, 32)
    assert data.scaling_factor == pytest.approx(0.18215)
    images, text = ShardReader(images_dir), ShardReader(text_dir)
    image_ids = images.column("image_id").tolist()
    for i in (0, 5, 31):
        sample = data[i]
        caption = text.item(int(data.text_rows[i]))
        image = images.item(image_ids.index(int(caption["image_id"])))
        assert torch.equal(sample["latent_mean"], image["latent_mean"])
        assert torch.equal(sample["latent_std"], image["latent_std"])
        assert torch.equal(sample["hidden"], caption["hidden"])
    batch = data.__getitems__([3, 1, 2])
    assert batch["latent_mean"].shape == (3, 4, 8, 8) and batch["hidden"].shape == (3, 77, 32)


def test_captions_without_a_latent_are_dropped_and_counted(tmp_path, embeddings):
    images_dir, _ = embeddings
    text_dir = tmp_path / "text"
    tensors = {"image_id": torch.tensor([100, 999, 107]), "hidden": torch.zeros(3, 77, 32)}
    write_index(text_dir, "text", [write_shard(text_dir / shard_name(0), tensors)], tensor_specs(tensors))
    data = LatentTextDataset(images_dir, text_dir)
    assert len(data) == 2 and data.unmatched_captions == 1
    tensors["image_id"] = torch.tensor([1, 2, 3])
    text_dir = tmp_path / "other-text"  # a new path: open shards are cached by path
    write_index(text_dir, "text", [write_shard(text_dir / shard_name(0), tensors)], tensor_specs(tensors))
    with pytest.raises(DataError, match="no caption's image_id is in"):
        LatentTextDataset(images_dir, text_dir)


def test_missing_tensor_and_scaling_factor_are_named(tmp_path, embeddings):
    images_dir, text_dir = embeddings
    broken = tmp_path / "images"
    tensors = {"image_id": torch.tensor([100]), "latent_mean": torch.zeros(1, 4, 8, 8)}
    write_index(broken, "images", [write_shard(broken / shard_name(0), tensors)], tensor_specs(tensors),
                scaling_factor=0.18215)
    with pytest.raises(DataError, match=r"index.json: image run has no tensor 'latent_std'"):
        LatentTextDataset(broken, text_dir)
    tensors["latent_std"] = torch.ones(1, 4, 8, 8)
    broken = tmp_path / "images-unscaled"
    write_index(broken, "images", [write_shard(broken / shard_name(0), tensors)], tensor_specs(tensors))
    with pytest.raises(DataError, match="no scaling_factor recorded"):
        LatentTextDataset(broken, text_dir)
    with pytest.raises(DataError, match="no index"):
        LatentTextDataset(tmp_path / "absent", text_dir)


def test_scaling_factor_may_sit_under_meta(tmp_path):
    images_dir, text_dir = write_embedding_runs(tmp_path, images=2, captions_per_image=1)
    index = json.loads((images_dir / "index.json").read_text())
    index["meta"] = {"scaling_factor": index.pop("scaling_factor") * 2}
    (images_dir / "index.json").write_text(json.dumps(index))
    assert LatentTextDataset(images_dir, text_dir).scaling_factor == pytest.approx(0.3643)


def test_processes_together_read_the_single_process_batch():
    one = StepBatches(num_samples=10, global_batch=8, grad_accum=1, world_size=1, rank=0, seed=3, start_step=0, steps=5)
    batches = list(one)
    for accum, world in ((1, 2), (2, 2), (4, 1), (2, 1)):
        parts = [list(StepBatches(10, 8, accum, world, r, 3, 0, 5)) for r in range(world)]
        for step in range(5):
            together = []
            for m in range(accum):
                for r in range(world):
                    together += parts[r][step * accum + m]
            assert together == batches[step], (accum, world, step)


def test_order_is_a_function_of_the_step():
    full = list(StepBatches(10, 4, 1, 1, 0, 0, 0, 8))
    resumed = list(StepBatches(10, 4, 1, 1, 0, 0, 5, 8))
    assert resumed == full[5:]
    # every epoch visits every sample once; epochs differ in order
    flat = [i for batch in full for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]
    assert list(StepBatches(10, 4, 1, 1, 0, 1, 0, 8)) != full  # another seed, another order


def test_loader_workers_deliver_the_same_batches(embeddings):
    data = LatentTextDataset(*embeddings)
    in_process = [b["hidden"] for b in make_loader(data, StepBatches(len(data), 8, 1, 1, 0, 0, 0, 3), 0, False)]
    workers = [b["hidden"] for b in make_loader(data, StepBatches(len(data), 8, 1, 1, 0, 0, 0, 3), 2, False)]
    assert len(in_process) == 3 and all(torch.equal(a, b) for a, b in zip(in_process, workers))
    assert np.isfinite(torch.cat(in_process).numpy()).all()
