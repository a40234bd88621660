"""Scaling arithmetic and the benchmark entry point."""

from __future__ import annotations

import csv
import json
import math

import pytest

from diffscale import metrics
from diffscale.bench.__main__ import main


def test_speedup_efficiency_karp_flatt():
    assert metrics.speedup(10.0, 2.5) == 4.0
    assert metrics.efficiency(10.0, 2.5, 8) == 0.5
    # perfectly parallel: serial fraction 0; no speedup at all: serial fraction 1
    assert metrics.karp_flatt(10.0, 2.5, 4) == pytest.approx(0.0)
    assert metrics.karp_flatt(10.0, 10.0, 4) == pytest.approx(1.0)
    # the original study's 0.84x at 8 CPUs means more than all of the work behaved serially
    assert metrics.karp_flatt(1.0, 1 / 0.84, 8) > 1.0
    assert math.isnan(metrics.karp_flatt(1.0, 1.0, 1))
    assert metrics.mfu(1e12, 100.0, 1e15) == pytest.approx(0.1)


def test_bench_models_writes_csv_and_json(tmp_path, capsys):
    assert main(["--out-dir", str(tmp_path), "models", "--roles", "text_encoder", "ddpm_unet",
                 "--batch", "2", "--repeats", "1"]) == 0
    rows = list(csv.DictReader((tmp_path / "models.csv").open()))
    assert [r["role"] for r in rows] == ["text_encoder", "ddpm_unet"]
    assert all(float(r["items_per_s"]) > 0 and r["model"] == "random:tiny" for r in rows)
    record = json.loads((tmp_path / "models.json").read_text())
    assert record["stage"] == "models" and len(record["rows"]) == 2
    assert record["cpu_count"] >= 1 and "torch" in record["versions"]
