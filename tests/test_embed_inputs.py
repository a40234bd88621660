import pandas as pd
import pytest

from diffscale.embed.inputs import ImageItem, TextItem, load_inputs, read_skip_list
from diffscale.errors import DataError
from embed_data import make_manifest


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("manifest"), n_synthetic=8, n_real=0)


def test_images_sorted_and_skip_list_honoured(fixture):
    inputs = load_inputs(fixture.manifest, "images", fixture.skipped)
    ids = [item.image_id for item in inputs.items]
    assert ids == sorted(ids)
    assert fixture.skip_listed_id not in ids
    assert fixture.corrupt_id in ids  # unreadable files are found (and listed) by the workers
    assert len(ids) == 7 and inputs.images == 8
    assert isinstance(inputs.items[0], ImageItem)
    assert inputs.skipped == [{"image_id": fixture.skip_listed_id, "file_name": f"{fixture.skip_listed_id:012d}.jpg",
                               "reason": "grayscale", "source": "skip list"}]


def test_text_items_leave_out_empty_captions_and_skipped_images(fixture):
    inputs = load_inputs(fixture.manifest, "text", fixture.skipped)
    keys = [(i.image_id, i.caption_index) for i in inputs.items]
    assert keys == sorted(keys)
    assert all(isinstance(i, TextItem) and i.caption.strip() == i.caption and i.caption for i in inputs.items)
    assert fixture.skip_listed_id not in {i.image_id for i in inputs.items}
    assert (fixture.empty_caption_id, 0) not in keys and (fixture.empty_caption_id, 1) in keys
    empty = [s for s in inputs.skipped if s.get("caption_index") is not None]
    assert empty == [{"image_id": fixture.empty_caption_id, "caption_index": 0,
                      "file_name": f"{fixture.empty_caption_id:012d}.jpg", "reason": "empty caption", "source": "embed"}]
    # 8 images x 2 captions, + the long one, + the empty one; minus the skip-listed image's 2
    assert len(inputs.items) == 8 * 2 + 1 - 2


def test_without_skip_list_everything_is_kept(fixture):
    assert len(load_inputs(fixture.manifest, "images").items) == 8


def test_missing_column_names_it(tmp_path):
    path = tmp_path / "manifest.parquet"
    pd.DataFrame({"image_id": [1], "file_name": ["a.jpg"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"manifest.parquet: missing column 'path'"):
        load_inputs(path, "images")
    with pytest.raises(DataError, match=r"missing column 'captions'"):
        load_inputs(path, "text")


def test_duplicate_image_id_is_an_error(tmp_path):
    path = tmp_path / "manifest.parquet"
    pd.DataFrame({"image_id": [3, 3], "file_name": ["a", "b"], "path": ["a", "b"]}).to_parquet(path)
    with pytest.raises(DataError, match="image_id 3 appears more than once"):
        load_inputs(path, "images")


def test_missing_and_malformed_inputs(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        load_inputs(tmp_path / "nope.parquet", "images")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="not a readable parquet manifest"):
        load_inputs(bad, "images")
    skip = tmp_path / "skipped.csv"
    skip.write_text("image_id,reason\n1,x\n")
    with pytest.raises(DataError, match="skipped.csv: missing column 'file_name'"):
        read_skip_list(skip)
    skip.write_text("image_id,file_name,reason\nabc,x,y\n")
    with pytest.raises(DataError, match="line 2: image_id 'abc' is not an integer"):
        read_skip_list(skip)
    skip.write_text("image_id,file_name,reason\n")
    assert read_skip_list(skip) == {}


def test_max_images_takes_the_first_usable_images_and_only_their_captions(fixture):
    every = [i.image_id for i in load_inputs(fixture.manifest, "images", fixture.skipped).items]
    images = load_inputs(fixture.manifest, "images", fixture.skipped, max_images=3)
    assert [i.image_id for i in images.items] == every[:3] and images.max_images == 3
    assert fixture.skip_listed_id not in every  # skipped images do not count towards the N
    text = load_inputs(fixture.manifest, "text", fixture.skipped, max_images=3)
    assert {i.image_id for i in text.items} == set(every[:3])  # the same images in both modalities
    assert load_inputs(fixture.manifest, "images", fixture.skipped).max_images is None
