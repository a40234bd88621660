import argparse
import json
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


def test_synthetic_captions_have_cocos_token_lengths(tmp_path):
    """What a ragged text shard stores per caption (and so the bytes the GPU path writes) is COCO's."""
    from diffscale.models import parse_spec
    from diffscale.tokenize import tokenizer_for

    tokenizer = tokenizer_for(parse_spec("text_encoder", {"random": "clip-vit-large-patch14"}))
    manifest = pd.read_parquet(bench_embed.synthetic_manifest(tmp_path, 200, (64, 48)))
    captions = [c for row in manifest["captions"] for c in row]
    lengths = [len(tokenizer.encode(c)) for c in captions]
    assert len(captions) == 1000 and len(set(captions)) > 100
    long = [i for i, n in enumerate(lengths) if n > 75]
    assert long == [bench_embed.LONG_EVERY - 1, 2 * bench_embed.LONG_EVERY - 1]  # the truncation path runs
    normal = [n for i, n in enumerate(lengths) if i not in long]
    assert sorted(set(normal)) == sorted(set(bench_embed.COCO_CAPTION_TOKENS))
    assert sum(normal) / len(normal) == pytest.approx(11.4, abs=0.05)  # val2017: 11.5 (13.5 with start/end)


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
    record = json.loads((tmp_path / "embed.json").read_text())
    assert record["complete"] is True and "versions" in record and len(record["rows"]) == 2


def test_without_a_work_dir_the_bench_leaves_no_folder_behind(tmp_path, monkeypatch):
    import tempfile

    from diffscale.bench.__main__ import main

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["--out-dir", str(tmp_path / "out"), "embed", "--modalities", "text", "--backends", "serial",
                 "--cpus", "1", "--sizes", "4"]) == 0
    assert (tmp_path / "out" / "embed.csv").is_file() and list(scratch.iterdir()) == []


@pytest.mark.slow
def test_a_bench_stopped_midway_leaves_the_runs_it_finished(tmp_path, monkeypatch):
    """A time limit (here: an interrupt as the second run starts) keeps the first run's row, marked incomplete."""
    from diffscale.bench.__main__ import main

    real, started = bench_embed.isolated, []

    def stopped_at_the_second_run(fn, *args):
        started.append(fn.__name__)
        if len(started) == 2:
            raise KeyboardInterrupt
        return real(fn, *args)

    monkeypatch.setattr(bench_embed, "isolated", stopped_at_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        main(["--out-dir", str(tmp_path), "embed", "--modalities", "text", "--backends", "serial", "multiprocessing",
              "--policies", "pinned", "--cpus", "1", "--sizes", "4", "--work-dir", str(tmp_path / "work")])
    table = pd.read_csv(tmp_path / "embed.csv")
    assert list(zip(table["backend"], table["policy"], table["cpus"])) == [("serial", "pinned", 1)]
    assert table["speedup"].iloc[0] == 1 and table["items"].iloc[0] == 20
    record = json.loads((tmp_path / "embed.json").read_text())
    assert record["complete"] is False and len(record["rows"]) == 1 and record["stage"] == "embed"


@pytest.mark.parametrize("modality", ["images", "text"])
def test_compute_alone_runs_the_pipelines_compute_step_on_prepared_batches(tmp_path, modality, monkeypatch):
    from diffscale.embed import encoders

    manifest = bench_embed.synthetic_manifest(tmp_path, 6, (64, 48))
    args = argparse.Namespace(vae="tiny", text_encoder="tiny", batch=2, text_batch=4, dtype="fp32", cpu_dtype="fp32",
                              shard_size=8, image_size=32, gpus=[], text_storage="ragged")
    settings = bench_embed._settings(args, modality, "serial")
    calls = []
    real = encoders.ImageEmbedder.compute if modality == "images" else encoders.TextEmbedder.compute
    monkeypatch.setattr(type(encoders.embedder(modality, settings["model"], "cpu", "fp32", "fp32", 0)), "compute",
                        lambda self, inputs: calls.append(len(inputs)) or real(self, inputs))
    rate = bench_embed.compute_alone_rate(modality, str(manifest), settings, batches=2)
    per_batch = 2 if modality == "images" else 4
    assert calls == [per_batch] * 2 * 4  # two batches, once to warm up and three timed repeats
    assert math.isfinite(rate) and rate > 0


def test_gpu_rows_split_the_gap_to_the_bare_model(monkeypatch):
    """vs_bare = steady / bare; the compute step alone and the device's pace in the pipeline beside it."""
    monkeypatch.setattr(bench_embed, "isolated", lambda fn, *a: 1000.0)  # the bare model: 1,000 items/s
    row = {"modality": "text", "dataset_images": 64, "backend": "gpu", "policy": "pinned", "workers": 1,
           "steady_items_per_s": 700.0, "items_per_s": 350.0, "peak_rss_mb": 900, "items": 1800, "compute_s": 2.0,
           "compute_alone_items_per_s": 950.0, "device_items_per_s": 900.0}
    bench_embed._compare([row], argparse.Namespace(vae="tiny", text_encoder="tiny", batch=4, text_batch=16,
                                                   image_size=64, dtype="bf16"))
    assert row["vs_bare"] == pytest.approx(0.70) and row["vs_bare_end_to_end"] == pytest.approx(0.35)
    assert row["compute_alone_vs_bare"] == pytest.approx(0.95) and row["device_vs_bare"] == pytest.approx(0.90)


def test_a_cpu_count_no_configuration_runs_at_is_named():
    """serial pinned is the 1-CPU baseline only: `--cpus 1 4` with it alone runs nothing at 4."""
    args = argparse.Namespace(backends=["serial"], cpus=[1, 4], policies=["pinned"], gpus=[], naive_max_cpus=4)
    assert bench_embed.unrun_counts(args, bench_embed.configurations(args)) == [4]
    args.policies = ["pinned", "intraop"]
    assert bench_embed.unrun_counts(args, bench_embed.configurations(args)) == []
    gpu = argparse.Namespace(backends=["gpu"], cpus=[1, 4], policies=["pinned"], gpus=[1], naive_max_cpus=4)
    assert bench_embed.unrun_counts(gpu, bench_embed.configurations(gpu)) == []  # --cpus means nothing to a gpu run
