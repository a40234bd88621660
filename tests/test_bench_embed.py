import argparse
import math

import pandas as pd
import pytest

from diffscale.bench import embed as bench_embed


def _row(backend, policy, workers, size, steady, rss):
    return {"modality": "images", "dataset_images": size, "backend": backend, "policy": policy, "workers": workers,
            "steady_items_per_s": steady, "peak_rss_mb": rss}


def test_naive_vs_pinned_and_rss_growth_columns():
    rows = [_row("serial", "pinned", 1, 32, 10.0, 400), _row("dask", "pinned", 2, 32, 18.0, 420),
            _row("dask", "naive", 2, 32, 6.0, 430), _row("dask", "pinned", 2, 128, 19.0, 421)]
    bench_embed._compare(rows, argparse.Namespace())
    serial, pinned, naive, pinned_big = rows
    assert pinned["pinned_over_naive"] == pytest.approx(3.0) == naive["pinned_over_naive"]
    assert math.isnan(serial["pinned_over_naive"]) and math.isnan(pinned_big["pinned_over_naive"])
    assert pinned_big["rss_growth_mb"] == pytest.approx(1.0) and pinned["rss_growth_mb"] == 0


def test_configurations_include_the_one_cpu_baseline_and_cap_naive():
    args = argparse.Namespace(backends=["dask"], cpus=[2, 4], policies=["pinned", "naive"], gpus=[],
                              naive_max_cpus=2)
    assert bench_embed.configurations(args) == [("serial", "pinned", 1), ("dask", "pinned", 2), ("dask", "naive", 2),
                                                ("dask", "pinned", 4)]
    args = argparse.Namespace(backends=["serial", "multiprocessing"], cpus=[1, 2], policies=["pinned", "intraop"],
                              gpus=[], naive_max_cpus=4)
    assert bench_embed.configurations(args) == [("serial", "pinned", 1), ("serial", "intraop", 2),
                                                ("multiprocessing", "pinned", 1), ("multiprocessing", "pinned", 2)]
    gpu_only = argparse.Namespace(backends=["gpu"], cpus=None, policies=["pinned"], gpus=[1], naive_max_cpus=4)
    assert bench_embed.configurations(gpu_only) == [("gpu", "pinned", 1)]  # no hour-long CPU baseline


@pytest.mark.slow
def test_bench_cli_writes_rows_at_two_sizes(tmp_path):
    from diffscale.bench.__main__ import main

    assert main(["--out-dir", str(tmp_path), "embed", "--modalities", "text", "--backends", "serial", "--cpus", "1",
                 "--sizes", "4", "8", "--work-dir", str(tmp_path / "work")]) == 0
    table = pd.read_csv(tmp_path / "embed.csv")
    assert list(table["dataset_images"]) == [4, 8]
    assert list(table["items"]) == [20, 40]  # five captions per image
    assert (table["speedup"] == 1).all() and (table["peak_rss_mb"] > 50).all()
    assert table["rss_growth_mb"].iloc[0] == 0 and "pinned_over_naive" in table.columns
    assert {"cpus", "processes", "oversubscribed", "startup_s", "steady_items_per_s", "steady_speedup",
            "bytes_per_item", "projected_full_gb", "startup_frac"} <= set(table.columns)
    assert (table["bytes_per_item"] > 0).all() and (table["cpus"] == 1).all()
    assert (tmp_path / "embed.json").is_file()
