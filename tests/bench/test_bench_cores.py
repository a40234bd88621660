"""bench cores: compute and memory probes in N pinned processes at once (no timing asserted)."""

import os

import pandas as pd
import pytest

from diffscale.bench.__main__ import main
from diffscale.embed.threads import usable_cores

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")


def test_each_probe_runs_alone_and_together_pinned_one_cpu_per_process(tmp_path):
    usable = len(usable_cores())
    assert main(["--out-dir", str(tmp_path), "cores", "--cpus", "2", str(usable + 1), "--seconds", "0.05",
                 "--repeats", "2", "--memory-mb", "4"]) == 0
    table = pd.read_csv(tmp_path / "cores.csv")
    counts = [1, 2] if usable >= 2 else [1]  # 1 is always run; more CPUs than usable are skipped
    assert list(table["probe"]) == ["compute"] * len(counts) + ["memory"] * len(counts)
    assert list(table["cpus"]) == counts * 2 and list(table["unit"]) == ["GFLOP/s"] * len(counts) + ["GB/s"] * len(counts)
    assert (table["affinity_per_process"] == 1).all() and (table["rate"] > 0).all()
    alone = table[table["cpus"] == 1]
    assert (alone["kept"] == 1).all() and (alone["aggregate"] == alone["rate"]).all()
    for _, row in table.iterrows():
        assert row["min_rate"] <= row["rate"] <= row["aggregate"] and row["physical_cores"] <= row["cpus"]
        assert row["kept"] == pytest.approx(row["rate"] / alone[alone["probe"] == row["probe"]]["rate"].iloc[0])


def test_a_non_positive_setting_is_one_clear_error(tmp_path, capsys):
    from diffscale.cli import run_cli

    code = run_cli(lambda: main(["--out-dir", str(tmp_path), "cores", "--cpus", "0"]))
    assert code != 0 and not (tmp_path / "cores.csv").exists()
    assert capsys.readouterr().err == "error: bench cores: --cpus: expected a positive integer, not 0\n"
    assert run_cli(lambda: main(["--out-dir", str(tmp_path), "cores", "--seconds", "0"])) == 2
    assert capsys.readouterr().err == "error: bench cores: --seconds: expected a positive number, not 0.0\n"
