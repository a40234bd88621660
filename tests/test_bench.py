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


def test_out_dir_may_also_follow_the_stage(tmp_path, capsys):
    assert main(["models", "--out-dir", str(tmp_path), "--roles", "text_encoder", "--batch", "1", "--repeats", "1"]) == 0
    assert (tmp_path / "models.csv").exists() and (tmp_path / "models.json").exists()


def _bench_error(tmp_path, capsys, *args) -> list[str]:
    """stderr lines of a bench run that must fail with exit 2, before writing anything."""
    from diffscale.cli import run_cli

    assert run_cli(lambda: main(["--out-dir", str(tmp_path / "out"), *args])) == 2
    assert not (tmp_path / "out").exists()
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.strip().splitlines()


@pytest.mark.parametrize("args, message", [
    (["models", "--batch", "0"], "error: bench models: --batch: expected a positive integer, not 0"),
    (["models", "--repeats", "0"], "error: bench models: --repeats: expected a positive integer, not 0"),
    (["models", "--resolution", "7"], "error: bench models: --resolution: expected a multiple of 16 px (latents are "
                                      "1/8 of the image, packed 2x2 for FLUX), not 7"),
    (["models", "--device", "tpu"], "error: bench models: --device: expected cpu, cuda or cuda:N, not 'tpu'"),
    (["coco", "--images", "-5"], "error: bench coco: --images: expected a positive integer, not -5"),
    (["coco", "--cpus", "0"], "error: bench coco: --cpus: expected a positive integer, not 0"),
    (["coco", "--image-files", "-3"], "error: bench coco: --image-files: expected a whole number, 0 or more, not -3"),
    (["embed", "--cpus", "1", "0"], "error: bench embed: --cpus: expected a positive integer, not 0"),
    (["embed", "--sizes", "-16"], "error: bench embed: --sizes: expected a positive integer, not -16"),
    (["flux", "--rank", "0"], "error: bench flux: --rank: expected a positive integer, not 0"),
    (["flux", "--sdpa", "warp"], "error: bench flux: --sdpa: expected a comma-separated list of flash, efficient, "
                                 "math, cudnn, not 'warp'"),
    (["flux", "--checkpointing", "maybe"], "error: bench flux: --checkpointing: expected a comma-separated list of "
                                           "off, on, not 'maybe'"),
    (["embed", "--source-size", "640by480"], "error: bench embed: --source-size: expected WIDTHxHEIGHT in pixels "
                                             "(COCO: 640x480), not '640by480'"),
    (["embed", "--image-size", "63"], "error: bench embed: --image-size: expected a multiple of 8 px (latents are "
                                      "1/8 of the image), not 63"),
    (["ddpm", "--workers", "-1"], "error: bench ddpm: --workers: expected a whole number, 0 or more, not -1"),
    (["coco", "--captions", "nope.json"],
     "error: bench coco: --captions: nope.json: no such file (expected a COCO captions json)"),
])
def test_bad_bench_arguments_are_one_line(tmp_path, capsys, args, message):
    assert _bench_error(tmp_path, capsys, *args) == [message]


def test_a_malformed_captions_file_is_the_filters_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"annotations": 3}')
    assert _bench_error(tmp_path, capsys, "coco", "--captions", str(bad)) == [
        f"error: bench coco: {bad}: missing the 'images' list of the COCO captions format"]


def test_bench_on_cuda_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", _no_cuda_device)
    assert _bench_error(tmp_path, capsys, "models", "--device", "cuda") == [
        f"error: bench models: --device: cuda requested but no usable GPU is visible (torch {torch.__version__}, "
        f"CUDA build: {torch.version.cuda or 'none'}; No CUDA GPUs are available)"]


def _no_cuda_device():
    raise RuntimeError("No CUDA GPUs are available")


def test_every_stage_documents_batch_resolution_and_repeats_with_their_defaults():
    import argparse
    import importlib

    from diffscale.bench import STAGES

    for name, module_name in STAGES.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        for action in parser._actions:
            if action.dest in ("batch", "resolution", "repeats"):
                assert f"default {action.default}" in (action.help or ""), (name, action.dest, action.help)


def test_a_checked_list_flag_reaches_the_stage_without_its_spaces():
    import argparse

    from diffscale.bench.flux import check_arguments

    args = argparse.Namespace(sdpa="flash, math", checkpointing=" on,off")
    check_arguments(args)
    assert (args.sdpa, args.checkpointing) == ("flash,math", "on,off")


def test_mfu_divides_by_every_devices_peak():
    tflops, mfu = metrics.achieved(1e12, 100.0, 1e15, devices=2)
    assert tflops == pytest.approx(100.0) and mfu == pytest.approx(0.05)
    assert metrics.achieved(None, 100.0, 1e15, 2) == (None, None)


def test_phases_accumulate_and_measure_takes_the_median_after_warm_up(monkeypatch):
    from diffscale import timing

    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    timer = timing.PhaseTimer()
    for seconds in (1.0, 2.0):
        with timer.phase("compute"):
            now[0] += seconds
    assert timer.seconds == {"compute": 3.0}  # every batch's, not the last one's
    calls, durations = [], iter([5.0, 1.0, 1.0, 10.0])  # the first call (warm-up) is slow

    def fn():
        calls.append(1)
        now[0] += next(durations)

    got = timing.measure(fn, repeats=3, warmup=1)
    assert len(calls) == 4 and got["median_s"] == pytest.approx(1.0) and got["max_s"] == pytest.approx(10.0)
