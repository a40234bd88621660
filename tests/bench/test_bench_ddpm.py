"""bench ddpm on the tiny model: ours and the peer per variant, the ratio, a skipped variant says why."""

from __future__ import annotations

import csv
import importlib.util

import pytest

from diffscale.bench.__main__ import main


@pytest.mark.skipif(importlib.util.find_spec("denoising_diffusion_pytorch") is None,
                    reason="denoising-diffusion-pytorch is not installed (the peer extra)")
def test_bench_ddpm_prints_the_ratio_to_the_peer(tmp_path):
    assert main(["--out-dir", str(tmp_path), "ddpm", "--device", "cpu", "--preset", "tiny", "--batch", "2",
                 "--variants", "fp32", "fp32+cl", "bf16+compile", "--steps", "1", "--warmup", "1", "--repeats", "1",
                 "--workers", "0", "--images", "8", "--backend", "aot_eager", "--compile-reserve-s", "1e6"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ddpm.csv")))
    assert [(r["variant"], r["impl"]) for r in rows] == [("fp32", "ours"), ("fp32", "peer"), ("fp32+cl", "ours"),
                                                         ("bf16+compile", "ours"), ("bf16+compile", "peer")]
    assert [r["status"] for r in rows[:3]] == ["ok"] * 3 and float(rows[0]["steps_per_s"]) > 0
    peer_rate = float(rows[1]["steps_per_s"])
    for row in (rows[0], rows[2]):  # fp32+cl is compared with the peer's fp32
        assert float(row["ratio_to_peer"]) == pytest.approx(float(row["steps_per_s"]) / peer_rate)
    # a compile variant needs --compile-reserve-s left in the budget: skipped, and says so
    assert all(r["status"].startswith("skipped: ") and r["ratio_to_peer"] == "" for r in rows[3:])
    assert "objective eps" in rows[0]["settings"] and rows[2]["channels_last"] == "True"


def test_the_ratio_summary_says_why_a_variant_has_no_ratio():
    from diffscale.bench.ddpm import peer_ratio_text

    ours = {"impl": "ours", "variant": "fp32", "status": "ok", "ratio_to_peer": None}
    peer = {"impl": "peer", "variant": "fp32", "status": "failed: denoising-diffusion-pytorch is not installed"}
    assert peer_ratio_text(ours, [ours, peer]) == "no ratio: peer failed: denoising-diffusion-pytorch is not installed"
    assert peer_ratio_text(ours, [ours]) == "no ratio: no peer run of this variant"
    assert peer_ratio_text({**ours, "status": "skipped: budget"}, [ours, peer]) == "skipped: budget"
    assert peer_ratio_text({**ours, "ratio_to_peer": 1.149}, [ours, peer]) == "1.15x"
