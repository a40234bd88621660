"""The helpers every study section shares (diffscale.report.page): billing seconds, devices, runs,
lower bounds, the cheapest run, ties, hardware comparisons, superlinear flags."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from diffscale import vocab
from diffscale.report import fmt
from diffscale.report.cost import Prices
from diffscale.report.page import (Context, Section, _amount, across_hardware, cheapest, gpu_missing, is_lower_bound,
                                   on_cpus, pair, per_unit, runs_of, superlinear, superlinear_note, tied)
from diffscale.report.plots import Drawing
from report_data import HARDWARE


@pytest.fixture
def ctx(tmp_path) -> Context:
    (tmp_path / "results" / "bench").mkdir(parents=True)
    return Context(results=tmp_path / "results", prices=Prices(HARDWARE))


def benchmark(ctx: Context, job: str, seconds) -> None:
    path = ctx.results / "benchmarks" / f"{job}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t100\n")


def test_a_job_is_billed_its_benchmark_plus_its_earlier_tries(ctx):
    job = "train/unet/a100/bf16-g1"
    assert vocab.benchmark_path(job, str(ctx.results)) == str(ctx.results / "benchmarks" / f"{job}.tsv")
    assert ctx.held_seconds(job, {}, fallback=7.0) == 7.0  # no benchmark: the fallback
    assert ctx.held_seconds(job, {"earlier_tries_s": 3.0}, fallback=7.0) == 10.0
    assert ctx.held_seconds(job, {}, fallback=None) is None
    assert ctx.held_seconds(job, {"job_time_s": 9.0}, fallback=7.0) == 9.0  # its own record, without a benchmark
    benchmark(ctx, job, 20.5)
    assert ctx.benchmark_seconds(job) == 20.5
    assert ctx.held_seconds(job, {"job_time_s": 9.0, "earlier_tries_s": 3.0}, fallback=7.0) == 23.5
    lower = {"resumed": True, "job_time_whole": False, "job_time_s": 9.0}  # the benchmark holds its last try only
    assert ctx.held_seconds(job, lower, fallback=7.0) == 9.0


def test_an_unreadable_benchmark_is_no_benchmark(ctx):
    benchmark(ctx, "a", "x")
    (ctx.results / "benchmarks" / "b.tsv").write_text("")
    assert ctx.benchmark_seconds("a") is None and ctx.benchmark_seconds("b") is None
    assert ctx.benchmark_seconds("absent") is None


def test_devices_are_named_by_what_the_hardware_key_has(ctx):
    assert ctx.is_gpu("a100") is True and ctx.is_gpu("cpu") is False and ctx.is_gpu("tpu") is None
    cuda = Context(results=ctx.results, prices=Prices({"g": {"partition": "g", "device": "cuda", "cpus": 8}}))
    assert cuda.is_gpu("g") is True  # a cuda device without gpus_per_node is still a GPU
    assert [ctx.devices("a100", n) for n in (1, 2)] == ["1 GPU", "2 GPUs"]
    assert [ctx.devices("cpu", n) for n in (1, "2")] == ["1 process", "2 processes"]
    assert ctx.devices("tpu", math.nan) == "1 device" and ctx.devices("tpu", 3) == "3 devices"


def test_a_quick_build_draws_no_figure_but_keeps_a_ready_png(ctx):
    quick = Context(results=ctx.results, draw=False)
    drawing = Drawing(lambda: b"\x89PNG drawn", (), {})
    assert quick.figure("embed", "f", drawing, "caption") == "" and quick.figures == []
    drawn = Context(results=ctx.results)
    assert drawn.figure("embed", "f", drawing, "caption") and drawn.figures[0].png == b"\x89PNG drawn"
    markup = quick.figure("embed", "g", b"\x89PNG", "a <b>", note="n", single=True)
    assert markup.startswith('<figure class="single"><img alt="a &lt;b&gt;" src="data:image/png;base64,')
    assert markup.endswith('<figcaption>a &lt;b&gt; <span class="warn">n</span></figcaption></figure>')
    assert [f.name for f in quick.figures] == ["g"]
    assert quick.existing_figure("embed", "absent.png", "c") == ""


def test_a_table_sits_beside_its_figure_or_alone():
    assert pair("<table/>", "") == "<table/>"
    assert pair("<table/>", "<figure/>") == '<div class="pair"><div><table/></div><div><figure/></div></div>'


def test_runs_come_from_the_run_column_only_when_every_row_has_one():
    frame = pd.DataFrame({"run": ["r1", "r2"], "hw": ["a", "b"]})
    assert runs_of(frame, lambda row: "x") == ["r1", "r2"]
    assert runs_of(frame.assign(run=["r1", None]), lambda row: f"made/{row['hw']}") == ["made/a", "made/b"]
    assert runs_of(frame.drop(columns="run"), lambda row: row["hw"]) == ["a", "b"]


@pytest.mark.parametrize("row,bound", [({}, False), ({"resumed": "True"}, True), ({"resumed": "true"}, True),
                                       ({"resumed": 1}, True), ({"resumed": False}, False),
                                       ({"resumed": True, "job_time_whole": "TRUE"}, False),
                                       ({"resumed": True, "job_time_whole": False}, True)])
def test_a_resumed_run_not_recorded_whole_is_a_lower_bound(row, bound):
    assert is_lower_bound(row) is bound


def test_the_cheapest_run_is_one_billed_whole_when_there_is_one():
    frame = pd.DataFrame({"cost": [2.0, 1.0, 3.0, None], "resumed": [False, True, False, False]})
    row, prefix = cheapest(frame, "cost")
    assert row["cost"] == 2.0 and prefix == ""
    row, prefix = cheapest(frame.assign(resumed=True), "cost")
    assert row["cost"] == 1.0 and prefix == "at least "
    assert cheapest(frame.assign(cost=None), "cost") is None and cheapest(frame, "absent") is None


def test_a_study_without_a_gpu_run_says_so(ctx):
    def notices(frame):
        section = Section("s", "S")
        gpu_missing(ctx, section, frame, "the GPU side")
        return section.body

    assert notices(pd.DataFrame({"hw": ["a100", "cpu"]})) == []
    assert notices(pd.DataFrame({"hw": ["tpu"]})) == []  # a key the config does not know may be a GPU
    assert notices(pd.DataFrame({"hw": ["cpu"]}))[0].startswith(
        '<p class="notice">No GPU run in these results: the GPU side is not measured here')
    assert notices(pd.DataFrame({"x": [1]})) != []
    on_gpu = pd.DataFrame({"hw": ["a100", "a100"], "backend": ["serial", "gpu"]})
    assert notices(on_gpu) == [] and notices(on_gpu.assign(backend="dask")) != []  # a CPU backend on a GPU node


def test_a_cpu_run_names_its_cpus_where_it_recorded_them():
    assert on_cpus({"cpus": 4.0}) == " (4 CPUs)"
    assert on_cpus({"cpus": 0}) == on_cpus({"cpus": math.nan}) == on_cpus({}) == ""


def test_efficiency_is_per_cpu_per_process_or_per_gpu(ctx):
    assert per_unit(ctx, {"hw": "cpu", "cpus": 4}) == "per CPU"
    assert per_unit(ctx, {"hw": "cpu", "cpus": math.nan}) == "per process"
    assert per_unit(ctx, {"hw": "a100"}) == "per GPU" and per_unit(ctx, {"hw": "tpu"}) == "per GPU"


def test_a_value_within_five_percent_is_a_tie_and_a_missing_value_ties_nothing():
    frame = pd.DataFrame({"name": ["a", "b"], "cost": [1.0, 1.049]})
    label = lambda r: r["name"]  # noqa: E731
    assert tied(frame, "cost", frame.loc[0], label) == "; b within 5 % of it: a tie"
    assert tied(frame.assign(cost=[None, 1.0]), "cost", frame.assign(cost=[None, 1.0]).loc[0], label) == ""


RATES = pd.DataFrame({"hw": ["a100", "a40", "cpu", "a100", "a40"], "batch": [4, 4, 4, 8, 8],
                      "rate": [2.0, 1.0, 0.0, 1.0, 0.97], "cost": [0.44, 0.36, 1.0, 0.5, None],
                      "cpus": [None, None, 8, None, None], "run": ["r1", "r2", "r3", "r4", "r5"]})


def test_hardware_is_compared_where_two_keys_ran_the_same_settings():
    text, runs = across_hardware(RATES, "rate", ["batch"], lambda r: f"batch {r['batch']}", ("cost", "per step"))
    assert text == ("batch 4: a100 at 2.00 is 2.0× a40 at 1.00 ($0.44, $0.36 per step); "
                    "batch 8: a100 at 1.00 is level with a40 at 0.970 (within 5 %)")
    assert runs == ["r1", "r2", "r4", "r5"]  # the CPU's rate of 0 compares nothing


def test_a_cpu_key_is_named_with_its_cpus_and_one_key_alone_compares_nothing():
    frame = RATES.assign(rate=[2.0, 1.0, 0.5, 1.0, 0.5])
    text, _ = across_hardware(frame[frame["batch"] == 4], "rate", ["batch"], lambda r: "b4")
    assert text == "b4: a100 at 2.00 is 2.0× a40 at 1.00, 4.0× cpu on 8 CPUs at 0.500"
    assert across_hardware(frame[frame["hw"] == "a100"], "rate", ["batch"], lambda r: "") is None


@pytest.mark.parametrize("speedup,count,note", [(2.03, 2, ""), (2.06, 2, " (superlinear: see the flag under its table)"),
                                                (1.5, 1, ""), (None, 2, ""), (3.0, None, "")])
def test_a_speedup_above_its_device_count_points_to_its_flag(speedup, count, note):
    assert superlinear_note(speedup, count) == note


def test_only_a_speedup_more_than_two_percent_above_its_count_is_flagged_against_its_own_baseline():
    frame = pd.DataFrame({"hw": ["a100", "a100", "a40", "a40"], "gpus": [1, 2, 1, 2], "speedup": [1.0, 2.04, 1.0, 2.5]})
    per_device = pd.Series([8, 4, 16, 16])
    note = superlinear(frame, "gpus", ["hw"], per_device, "images")
    assert note == ('<p class="warn">Superlinear speedup flagged: a40, 2 devices, 2.5×: per-device work unchanged: '
                    "check the runs before trusting it.</p>")  # a100's 2.04× is within 2 % of 2
    assert superlinear(frame, "gpus", ["hw"], None, "images").count("per-device work unchanged") == 1


def test_the_same_work_split_allows_rounding_and_amounts_read_as_integers_when_whole():
    frame = pd.DataFrame({"hw": ["a", "a"], "gpus": [1, 7], "speedup": [1.0, 7.5]})
    note = superlinear(frame, "gpus", ["hw"], pd.Series([0.7, 0.1]), "GB")  # 0.1 × 7 = 0.7000000000000001
    assert "the same global work split over 7 devices (0.700 to 0.100 GB)" in note
    assert _amount(4.0) == "4" and _amount(2.5) == "2.50" and _amount(None) == fmt.MISSING
