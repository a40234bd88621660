"""`python -m diffscale.bench flux` on the tiny FLUX (CPU): the rows it reports, not its speed."""

from __future__ import annotations

import argparse

from diffscale.bench import flux


def test_bench_flux_reports_loop_and_bare_rates_for_training_and_inference():
    parser = argparse.ArgumentParser()
    flux.add_arguments(parser)
    args = parser.parse_args(["--steps", "2", "--log-every", "1", "--repeats", "1", "--checkpointing", "on",
                              "--text-length", "8", "--rank", "4"])
    rows = flux.run(args)
    assert [(r["kind"], r["model"]) for r in rows] == [("train", "lora"), ("infer", "base"), ("infer", "lora")]
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert all(r["random_weights"] is True and r["device"] == "cpu" for r in rows)
    train = rows[0]
    assert train["grad_checkpointing"] is True and train["loop_steps_per_s"] > 0 and train["bare_steps_per_s"] > 0
    assert train["ratio"] == train["loop_steps_per_s"] / train["bare_steps_per_s"]
    assert all(r["loop_denoise_s"] > 0 and r["bare_denoise_s"] > 0 for r in rows[1:])
