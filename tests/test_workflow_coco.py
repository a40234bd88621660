"""The `coco_manifest` rule end to end through Snakemake (slow): the demo's synthetic COCO, and a
labels-only config (data.coco.images: null)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(".git", ".snakemake", "results", "__pycache__", ".pytest_cache", "*.egg-info")

pytestmark = pytest.mark.slow


def _checkout(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    shutil.copytree(ROOT, work, ignore=IGNORED)
    return work


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=work,
                          capture_output=True, text=True, timeout=600)


def test_demo_manifest(tmp_path):
    work = _checkout(tmp_path)
    proc = _snakemake(work, "results/bench/coco_filter.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = pd.read_parquet(work / "results/data/coco/manifest.parquet")
    labels = pd.read_parquet(work / "results/data/coco/labels_all.parquet")
    assert len(labels) == 24 and manifest["people"].all()
    assert manifest["image_id"].is_monotonic_increasing
    assert manifest["path"].str.startswith("results/data/synthetic/coco/images/").all()
    # the synthetic set: 60% people images, every sixth of them ambiguous (2 of 5 captions)
    assert (labels["reason"] == "person in 2 of 5 captions (needs 3)").sum() == 2
    assert len(manifest) == 12
    table = pd.read_csv(work / "results/bench/coco_filter.csv")
    assert table.loc[(table["section"] == "filter") & (table["category"] == "kept"), "count"].item() == 12
    for name in ("gender", "age", "group", "activities"):
        assert (work / f"results/bench/coco_filter_{name}.png").is_file()
    # nothing to redo on a second run
    again = _snakemake(work, "-n", "results/bench/coco_filter.csv")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_labels_only_config(tmp_path):
    work = _checkout(tmp_path)
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({
        "images": [{"id": 3, "file_name": "c.jpg", "width": 40, "height": 30},
                   {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": k, "image_id": 1, "caption": c} for k, c in enumerate(
            ["A man riding a horse.", "A man on a horse.", "A rider on a brown horse."], 1)]
        + [{"id": 9, "image_id": 3, "caption": "A bowl of fruit."}]}))
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["data"] = {"coco": {"captions": str(captions), "images": None}, "cifar": "unused", "subject":
                   {"dir": "unused", "trigger": "sks"}, "people": {"min_person_captions": 2, "per_captions": 3}}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))  # replaced, not merged: no synthetic data
    proc = _snakemake(work, "results/data/coco/manifest.parquet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = pd.read_parquet(work / "results/data/coco/manifest.parquet")
    assert manifest[["image_id", "path", "width", "gender", "activity"]].values.tolist() == [
        [1, "", 64, "male", "horse riding"]]
