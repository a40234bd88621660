"""bench gil: the launching thread's pace alone and beside busy loaders (no timing asserted)."""

import math

import pandas as pd

from diffscale.bench.__main__ import main


def test_gil_bench_measures_each_loader_kind(tmp_path):
    assert main(["--out-dir", str(tmp_path), "gil", "--modalities", "text", "--images", "4", "--batches", "600",
                 "--seconds", "0.3"]) == 0
    table = pd.read_csv(tmp_path / "gil.csv")
    assert list(table["loader"]) == ["thread", "process"] and list(table["loaders"]) == [1, 1]
    assert (table["batch"] == 256).all() and (table["cores"] >= 1).all()
    for _, row in table.iterrows():
        assert row["ops_per_s_alone"] > 0 and row["loader_batches_per_s"] > 0
        assert math.isclose(row["kept"], row["ops_per_s_beside"] / row["ops_per_s_alone"])


def test_too_few_batches_is_one_clear_error(tmp_path, capsys):
    from diffscale.cli import run_cli

    code = run_cli(lambda: main(["--out-dir", str(tmp_path), "gil", "--modalities", "text", "--kinds", "thread",
                                 "--images", "4", "--batches", "2", "--seconds", "5"]))
    assert code != 0 and not (tmp_path / "gil.csv").exists()
    assert "bench gil: the loaders ran out of batches after" in capsys.readouterr().err
