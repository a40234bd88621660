"""Demographic tables and figures (diffscale.data.demographics)."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from diffscale.data import demographics


@pytest.fixture
def kept() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": [1, 2, 3, 4],
        "gender": ["male", "male", "female", "mixed"],
        "age": ["adult", "adult", "child", "adult"],
        "group": ["single", "pair", "single", "group"],
        "activity": ["surfing", "tennis", "surfing", "other"],
        "people": [True] * 4,
        "n_captions": [5] * 4,
    })


def test_demographics_table(kept):
    table = demographics.demographics_table(kept)
    gender = table[table["label"] == "gender"].set_index("category")["count"].to_dict()
    assert gender == {"male": 2, "female": 1, "mixed": 1, "neutral": 0}  # every category, fixed order
    age = table[table["label"] == "age"]["category"].tolist()
    assert age == ["child", "teen", "adult", "elderly", "unspecified"]
    activities = table[table["label"] == "activity"]
    assert activities["category"].tolist() == ["surfing", "other", "tennis"]  # by count, then name
    assert activities["fraction"].tolist() == [0.5, 0.25, 0.25]


def test_filter_table_is_tidy(kept):
    profile = demographics.demographics_table(kept)
    labels = pd.concat([kept.assign(kept=True),
                        pd.DataFrame({"image_id": [5, 6], "people": [False, True], "n_captions": [5, 0]})])
    steps = [("no captions", 1), ("no person in captions", 1), ("kept", 4)]
    table = demographics.filter_table(steps, 6, labels, profile, person_boxes={1, 2, 5})
    assert table.columns.tolist() == ["section", "category", "count", "fraction"]
    filt = table[table["section"] == "filter"].set_index("category")["count"]
    assert filt.to_dict() == {"input images": 6, "no captions": 1, "no person in captions": 1, "kept": 4}
    people = table[table["section"] == "people (all captioned images)"].set_index("category")["count"]
    assert people.to_dict() == {"yes": 4, "no": 1}  # the image without captions is not labelled
    agree = table[table["section"] == "agreement with person boxes"].set_index("category")
    assert agree.loc["people label and person box", "count"] == 2
    assert agree.loc["person box, no people label", "count"] == 1
    assert agree.loc["precision", "fraction"] == pytest.approx(0.5)


def test_figures(kept, tmp_path):
    paths = demographics.plot_figures(demographics.demographics_table(kept), tmp_path)
    assert [p.name for p in paths] == ["coco_filter_gender.png", "coco_filter_age.png", "coco_filter_group.png",
                                       "coco_filter_activities.png"]
    assert paths == list(demographics.figure_paths(tmp_path))
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_figures_with_nothing_kept(tmp_path):
    empty = demographics.demographics_table(pd.DataFrame(columns=["gender", "age", "group", "activity"]))
    assert empty[empty["label"] == "gender"]["count"].sum() == 0
    assert len(demographics.plot_figures(empty, tmp_path)) == 4
