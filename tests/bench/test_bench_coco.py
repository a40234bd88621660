"""`python -m diffscale.bench coco` on a small synthetic COCO (the speed target lives in the
benchmark itself, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_coco_reports_rate_and_memory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "diffscale.bench", "--out-dir", str(tmp_path), "coco",
                           "--images", "300"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "coco.json").read_text())["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert row["images"] == 300 and row["captions"] == 1500 and row["cpus"] == 1
    assert 0 < row["kept"] < 300
    assert row["captions_per_s"] > 0 and row["label_captions_per_s"] > 0
    assert 10 < row["peak_rss_mb"] < 4096
    assert row["target_s"] == 60 and row["target_rss_mb"] == 2048
    assert (tmp_path / "coco.csv").read_text().startswith("stage,source,cpus,images,captions,kept,seconds")


def test_bench_coco_with_image_files(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "diffscale.bench", "--out-dir", str(tmp_path), "coco",
                           "--image-files", "40"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "coco.json").read_text())["rows"][0]
    assert row["images"] == 40 and row["source"].endswith("with image files")
    assert row["image_check_s"] > 0 and row["images_checked_per_s"] > 0
