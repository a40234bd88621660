"""`python -m diffscale.bench train`: the loop-vs-bare comparison produces its figures."""

import argparse

import pytest

from diffscale.bench import STAGES
from diffscale.bench import train as bench_train


def test_bench_train_reports_loop_and_bare_rates():
    assert STAGES["train"] == "diffscale.bench.train"
    parser = argparse.ArgumentParser()
    bench_train.add_arguments(parser)
    args = parser.parse_args(["--batch", "4", "--latent-size", "8", "--steps", "6", "--log-every", "2", "--rounds", "1"])
    (row,) = bench_train.run(args)
    assert row["preset"] == "tiny" and row["batch"] == 4 and row["latent"] == "4x8x8"
    assert row["loop_samples_per_s"] > 0 and row["bare_samples_per_s"] > 0
    assert row["ratio"] == row["loop_samples_per_s"] / row["bare_samples_per_s"]
    assert row["mfu"] is None and row["gflops_per_sample"] > 0  # no GPU here
    assert row["loop_spread"] is None and row["note"].startswith("one round:")  # one round: no spread to show


def test_spread_is_how_far_a_sides_rounds_disagree():
    assert bench_train.spread([4.35, 2.54, 4.0]) == pytest.approx(4.35 / 2.54 - 1)
    assert bench_train.spread([3.0]) is None


def test_one_round_is_flagged_as_uncorrected():
    assert bench_train.noise_note([4.0], [4.2]) == (
        "one round: a burst of load on either side goes uncorrected and unseen; use --rounds 3 or more")


def test_rounds_that_disagree_flag_the_side_that_was_disturbed():
    assert bench_train.noise_note([4.35, 2.54], [3.60, 3.66]) == (
        "rounds disagree (loop by 71%, more than 10%): the machine was busy; rerun on an idle one before trusting "
        "the ratio")
    assert bench_train.noise_note([4.0, 4.2, 4.1], [3.6, 3.7, 3.65]) == ""  # 5 % and 3 %: within the noise
