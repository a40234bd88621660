"""`python -m diffscale.bench train`: the loop-vs-bare comparison produces its figures."""

import argparse

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
