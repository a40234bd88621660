"""Each stage of the study on the tiny model, CPU: its run directory, its table's documented columns
and sane values; the profiler's real operator names; precision, workers and compile checks."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

from diffscale import experiments
from diffscale.ddpm import sweeps

COMMON = ["hw", "gpus", "batch", "global_batch", "precision", "workers", "compile", "steps_per_s", "images_per_s",
          "time_to_first_step_s", "peak_mem_mb", "loss_end", "device", "random_weights", "run"]
REQUIRED = {
    "batch": COMMON + ["speedup", "efficiency"],
    "amp": COMMON,
    "workers": COMMON + ["data_wait_s_per_step", "data_wait_frac"],
    "compile": COMMON + ["compile_s", "saving_per_step_s", "break_even_steps", "run_steps"],
    "peer": COMMON + ["impl", "ratio_to_peer", "settings", "status"],
    "profile": ["hw", "sort_by", "rank", "op", "calls", "self_ms", "total_ms", "pct", "device", "random_weights", "run"],
}
POINTS = {
    "batch": [{"batch": 4, "gpus": 1}, {"batch": 4, "gpus": 2}],
    "amp": [{"precision": "fp32"}, {"precision": "bf16"}],
    "workers": [{"workers": 0}, {"workers": 2}],
    "compile": [{"compile": "off"}, {"compile": "default"}],
    "peer": [{"precision": "fp32", "compile": "off"}],
    "profile": [{}],
}


@pytest.fixture(scope="module")
def tables(ddpm_config, cache, tmp_path_factory):
    """One run per point of every stage, then every table."""
    root = tmp_path_factory.mktemp("ddpm-runs")
    out = {}
    for stage, points in POINTS.items():
        dirs = []
        for i, point in enumerate(points):
            rc = sweeps.run_config(ddpm_config, stage, "local", **point)
            sweeps.execute(rc, cache, root / stage / str(i))
            dirs.append(root / stage / str(i))
        path = sweeps.write_table(stage, dirs, root / f"ddpm_{stage}.csv", ddpm_config["ddpm"]["train_steps"])
        with open(path) as fh:
            out[stage] = (list(csv.DictReader(fh)), dirs)
    return out


@pytest.mark.parametrize("stage", list(POINTS))
def test_table_has_the_documented_columns_and_sane_values(tables, stage):
    rows, dirs = tables[stage]
    assert rows and set(REQUIRED[stage]) <= set(rows[0])
    for row in rows:
        assert row["device"] == "cpu" and row["random_weights"] == "True" and row["run"]
        if stage == "profile":
            continue
        if row.get("status", "ok") != "ok":
            continue
        assert float(row["steps_per_s"]) > 0 and float(row["images_per_s"]) > 0
        assert float(row["images_per_s"]) == pytest.approx(float(row["steps_per_s"]) * int(row["global_batch"]))
        assert float(row["time_to_first_step_s"]) > 0 and float(row["peak_mem_mb"]) > 0
        assert math.isfinite(float(row["loss_end"])) and 0 < float(row["loss_end"]) < 5
    for run_dir in dirs:
        record = json.loads((run_dir / "run.json").read_text())
        assert record["config"]["stage"] == stage and record["rows"]


def test_batch_rows_scale_the_global_batch(tables):
    rows, _ = tables["batch"]
    by_gpus = {int(r["gpus"]): r for r in rows}
    assert int(by_gpus[2]["global_batch"]) == 8 and float(by_gpus[1]["speedup"]) == 1.0
    # on CPUs, efficiency is per CPU: 2 processes on the CPUs one process had are 1x its compute
    usable = len(os.sched_getaffinity(0))
    assert int(by_gpus[1]["cpus"]) == usable and int(by_gpus[2]["cpus"]) == 2 * max(1, usable // 2)
    ratio = int(by_gpus[2]["cpus"]) / int(by_gpus[1]["cpus"])
    assert float(by_gpus[2]["efficiency"]) == pytest.approx(float(by_gpus[2]["speedup"]) / ratio)


def test_two_processes_train_on_the_same_draws_as_one(tables, ddpm_config, cache, tmp_path):
    rc = sweeps.run_config(ddpm_config, "batch", "local", batch=8, gpus=1)
    sweeps.execute(rc, cache, tmp_path / "g1-b8")
    _, dirs = tables["batch"]  # dirs[1]: 2 processes x batch 4 = the same global batch 8
    first_one = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "g1-b8" / "loss.csv"))]
    first_two = [float(r["loss"]) for r in csv.DictReader(open(dirs[1] / "loss.csv"))]
    assert first_one[0] == pytest.approx(first_two[0], rel=1e-4)  # step 1: same weights, same batch


def test_a_run_with_dropout_repeats_its_losses_exactly(ddpm_config, cache, tmp_path):
    """Dropout masks come from the run's seed, not from whatever the process drew before."""
    import copy

    import torch

    cfg = copy.deepcopy(ddpm_config)
    cfg["models"]["ddpm_unet"] = {"random": "tiny", "overrides": {"dropout": 0.5}}
    curves = []
    for n in range(2):
        torch.manual_seed(1000 + n)  # another state of the global generator before each run
        rc = sweeps.run_config(cfg, "amp", "local", precision="fp32")
        sweeps.execute(rc, cache, tmp_path / str(n))
        curves.append([float(r["loss"]) for r in csv.DictReader(open(tmp_path / str(n) / "loss.csv"))])
    assert len(curves[0]) == 4 and curves[0] == curves[1]


def test_profile_lists_real_operator_names_and_a_trace(tables):
    rows, dirs = tables["profile"]
    ops = [r["op"] for r in rows]
    assert {"aten::convolution_backward", "aten::mkldnn_convolution", "aten::convolution", "aten::mm",
            "aten::addmm"} & set(ops)
    assert [int(r["rank"]) for r in rows if r["sort_by"] == "cpu"] == list(range(1, 11))
    assert all(float(r["self_ms"]) > 0 and 0 < float(r["pct"]) <= 100 for r in rows)
    assert (dirs[0] / "trace.json.gz").stat().st_size > 1000 and (dirs[0] / "ops.csv").is_file()


def test_fp32_and_bf16_losses_are_close(tables):
    rows, dirs = tables["amp"]
    losses = {r["precision"]: float(r["loss_end"]) for r in rows}
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    curves = [[float(r["loss"]) for r in csv.DictReader(open(d / "loss.csv"))] for d in dirs]
    assert len(curves[0]) == len(curves[1]) == 4
    assert curves[0] != curves[1]  # bf16 really ran in bf16


def test_worker_sweep_used_the_workers_it_says(tables):
    rows, _ = tables["workers"]
    for row in rows:
        assert int(row["workers_seen"]) == int(row["workers"])  # worker ids reported from inside the workers
        assert float(row["data_wait_s_per_step"]) >= 0 and 0 <= float(row["data_wait_frac"]) < 1


def test_compile_records_compile_time_and_break_even(tables):
    rows, _ = tables["compile"]
    by_mode = {r["compile"]: r for r in rows}
    assert set(by_mode) == {"off", "default"} and by_mode["default"]["compile_backend"] == "aot_eager"
    compiled = by_mode["default"]
    assert float(compiled["compile_s"]) > 0
    assert int(compiled["run_steps"]) == 700000
    if float(compiled["saving_per_step_s"]) > 0:
        assert int(compiled["break_even_steps"]) == math.ceil(float(compiled["compile_s"])
                                                              / float(compiled["saving_per_step_s"]))
    else:
        assert compiled["break_even_steps"] == "" and compiled["pays_off"].startswith("never")


def test_peer_row_beside_ours_with_settings(tables):
    rows, _ = tables["peer"]
    by_impl = {r["impl"]: r for r in rows}
    assert set(by_impl) == {"ours", "peer"}
    assert "objective eps" in by_impl["ours"]["settings"] and "linear betas" in by_impl["ours"]["settings"]
    if by_impl["peer"]["status"] == "ok":
        assert float(by_impl["ours"]["ratio_to_peer"]) == pytest.approx(
            float(by_impl["ours"]["steps_per_s"]) / float(by_impl["peer"]["steps_per_s"]))
    else:
        assert by_impl["peer"]["status"].startswith("not run: ")


def test_compile_sweep_always_measures_off(ddpm_config):
    runs = [r for r in experiments.ddpm_runs(ddpm_config) if r.stage == "compile"]
    assert [r.compile for r in runs] == ["off", "default"]


def test_schema_enums_follow_the_vocabularies():
    from diffscale.config import schema

    ddpm = schema()["properties"]["ddpm"]["properties"]
    assert tuple(ddpm["precisions"]["items"]["enum"]) == experiments.DDPM_PRECISIONS
    assert tuple(ddpm["compile"]["items"]["enum"]) == experiments.DDPM_COMPILE_MODES


def test_table_reader_names_a_missing_or_foreign_run_record(tmp_path):
    from diffscale.ddpm.sweeps import read_rows
    from diffscale.errors import DataError

    with pytest.raises(DataError, match=r"a/run.json: missing; the run did not finish$"):
        read_rows([tmp_path / "a"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "run.json").write_text('{"stage": "batch"}')
    with pytest.raises(DataError, match=r"b/run.json: not a DDPM run record \(no rows\)$"):
        read_rows([tmp_path / "b"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.json").write_text('{"rows": [{"op": "aten::addmm"}], "config": {"stage": "profile"}}')
    assert read_rows([tmp_path / "c"]) == [{"op": "aten::addmm"}]
    assert read_rows([tmp_path / "c"], "profile") == [{"op": "aten::addmm"}]
    with pytest.raises(DataError, match=r"c/run.json: a profile run; the batch table takes sweep runs \(batch, amp, "
                                        r"workers, compile\)$"):
        read_rows([tmp_path / "c"], "batch")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.json").write_text('{"rows": [{"hw": "local"}], "config": {"stage": "batch"}}')
    assert read_rows([tmp_path / "d"], "compile") == [{"hw": "local"}]  # a shared point: any sweep's run
    with pytest.raises(DataError, match=r"d/run.json: a batch run; the profile table takes profile runs$"):
        read_rows([tmp_path / "d"], "profile")
    with pytest.raises(DataError, match=r"d: run folder given twice; each run is one row of the table$"):
        read_rows([tmp_path / "d", tmp_path / "c" / ".." / "d"], "batch")


def test_amp_is_compared_with_tf32_where_it_ran_else_fp32():
    rows = [dict(hw=hw, precision=p, images_per_s=ips, loss_end=loss)
            for hw, p, ips, loss in (("a100", "fp32", 100.0, 0.5), ("a100", "tf32", 160.0, 0.4), ("a100", "bf16", 240.0, 0.45),
                                     ("a40", "fp32", 50.0, 0.5), ("a40", "bf16", 120.0, 0.6), ("v100", "bf16", 30.0, 0.5))]
    rows, columns = sweeps.stage_table("amp", rows)
    assert {"baseline_precision", "vs_baseline", "loss_vs_baseline"} <= set(columns)
    got = {(r["hw"], r["precision"]): (r["baseline_precision"], r["vs_baseline"], r["loss_vs_baseline"]) for r in rows}
    assert got[("a100", "bf16")] == ("tf32", pytest.approx(1.5), pytest.approx(0.05))
    assert got[("a100", "fp32")] == ("tf32", pytest.approx(0.625), pytest.approx(0.1))
    assert got[("a40", "bf16")] == ("fp32", pytest.approx(2.4), pytest.approx(0.1))
    assert got[("v100", "bf16")] == (None, None, None)  # no reference ran there


def test_mfu_of_an_fp32_run_uses_the_peak_without_tf32():
    from diffscale.ddpm.loop import peak_for

    assert peak_for("NVIDIA A100-SXM4-80GB", "fp32") == pytest.approx(19.5e12)
    assert peak_for("NVIDIA A100-SXM4-80GB", "tf32") == pytest.approx(156e12)
    assert peak_for("NVIDIA A100-SXM4-80GB", "bf16") == pytest.approx(312e12)
    assert peak_for("NVIDIA H200", "fp32") == pytest.approx(66.9e12)


def test_a_compiled_window_compiles_with_an_empty_cache_of_its_own(ddpm_config, cache, monkeypatch):
    import os

    from diffscale.ddpm import loop

    seen = []

    def fake_launch(fn, world, device, rc, *args):
        folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        seen.append((rc["variant"]["compile"], folder, sorted(os.listdir(folder)) if os.path.isdir(folder) else None,
                     os.environ.get("TRITON_CACHE_DIR")))
        return {}

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/warm/cache")
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setattr(loop.launch, "run", fake_launch)
    for mode in ("default", "off"):
        loop.run(sweeps.run_config(ddpm_config, "compile", "local", compile=mode), cache)
    (compiled, folder, listing, triton), off = seen
    assert compiled == "default" and folder != "/warm/cache" and listing == [] and triton.startswith(folder)
    assert not os.path.exists(folder)  # removed after the window
    assert off[:2] == ("off", "/warm/cache")  # eager windows leave the caches alone
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/warm/cache" and "TRITON_CACHE_DIR" not in os.environ


def test_rows_carry_the_spread_of_their_timed_blocks(tables):
    rows, _ = tables["amp"]
    for row in rows:
        blocks = json.loads((Path(row["run"]) / "run.json").read_text())["results"]["block_s"]
        assert len(blocks) == 2 and float(row["block_spread"]) == pytest.approx(max(blocks) / min(blocks))


def test_a_window_reads_only_the_settings_of_its_stage(ddpm_config):
    batch = sweeps.run_config(ddpm_config, "batch", "local")
    assert "train_steps" not in batch["ddpm"] and "profile_steps" not in batch["ddpm"]
    edited = {**ddpm_config, "ddpm": {**ddpm_config["ddpm"], "train_steps": 5, "profile_steps": 3}}
    assert sweeps.run_config(edited, "batch", "local") == batch  # editing them re-runs no window
    assert sweeps.run_config(edited, "profile", "local")["ddpm"]["profile_steps"] == 3


def test_the_objective_is_epsilon_prediction_on_ho_et_als_linear_schedule():
    import torch
    from diffusers import DDPMScheduler

    from diffscale.ddpm import loop
    from diffscale.train.core.precision import Precision

    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    schedule = loop.Schedule("cpu")
    reference = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    torch.testing.assert_close(schedule.add_noise(x0, noise, t), reference.add_noise(x0, noise, t))
    seen = {}

    def oracle(x, steps):  # knows the noise: a perfect epsilon model
        seen["x"], seen["t"] = x, steps
        return noise

    assert loop.denoising_loss(oracle, schedule, x0, noise, t, Precision("fp32", "cpu")).item() == 0.0
    assert torch.equal(seen["t"], t) and torch.equal(seen["x"], schedule.add_noise(x0, noise, t))


def test_the_ema_moves_after_every_ema_every_th_step_by_one_minus_the_decay():
    import torch

    from diffscale.ddpm.loop import update_ema

    d = {"ema_every": 3, "ema_decay": 0.9}
    ema, params = [torch.zeros(2)], [torch.ones(2)]
    assert [update_ema(ema, params, step, d) for step in range(6)] == [False, False, True, False, False, True]
    torch.testing.assert_close(ema[0], torch.full((2,), 0.19))  # 0 -> 0.1 -> 0.1 + 0.1 * 0.9
    assert torch.equal(params[0], torch.ones(2))


def test_a_windows_figures_are_its_blocks_median_net_of_warm_up():
    from diffscale.ddpm.loop import Window

    window = Window({"warmup_steps": 2, "steps": 6, "repeats": 3})  # blocks of 2 steps: 4, 6, 8
    assert (window.block, window.total) == (2, 8)
    rows = [{"step": 1, "elapsed_s": 3.0}, {"step": 2, "elapsed_s": 3.5},
            *({"step": s, "samples_per_s": rate, "data_wait_frac": 0.25, "mfu": None}
              for s, rate in ((4, 40.0), (6, 40.0), (8, 10.0)))]  # a disturbed last block
    losses = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.2]
    got = window.summary(rows, losses, global_batch=4)
    assert got["step_s"] == pytest.approx(0.1)  # the median block, not the mean (0.2)
    assert got["overhead_s"] == pytest.approx(3.5 - 2 * 0.1)  # warm-up less two ordinary steps
    assert got["block_s"] == pytest.approx([0.2, 0.2, 0.8]) and got["block_spread"] == pytest.approx(4.0)
    assert got["data_wait_s_per_step"] == pytest.approx(0.25 * 1.2 / 6)  # over the 6 timed steps
    assert got["loss_end"] == pytest.approx(0.3)  # the last block's mean
    assert got["time_to_first_step_s"] == 3.0 and got["run_steps"] == 6


def test_compile_is_billed_net_of_eagers_warm_up_and_pays_off_within_the_run_or_not():
    rows = [{"hw": "a100", "compile": "off", "overhead_s": 2.0, "steps_per_s": 10.0},
            {"hw": "a100", "compile": "default", "overhead_s": 32.0, "steps_per_s": 12.5},  # 0.02 s a step saved
            {"hw": "a100", "compile": "max-autotune", "overhead_s": 302.0, "steps_per_s": 12.5},
            {"hw": "a100", "compile": "reduce-overhead", "overhead_s": 5.0, "steps_per_s": 9.0}]
    table = {r["compile"]: r for r in sweeps.stage_table("compile", rows, train_steps=10000)[0]}
    assert table["default"]["compile_s"] == pytest.approx(30.0)  # beyond eager's own warm-up
    assert table["default"]["break_even_steps"] == 1500 and table["default"]["pays_off"] == "yes"
    assert table["max-autotune"]["break_even_steps"] == 15000 and table["max-autotune"]["pays_off"] == "no"
    assert table["reduce-overhead"]["pays_off"] == "never (no per-step saving)"
    assert table["off"]["pays_off"] == "baseline" and table["off"]["compile_s"] == 0.0
