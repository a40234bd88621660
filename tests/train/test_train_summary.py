"""The study table, the loss figure and the sample grid built from run directories."""

import json
import shutil

import pandas as pd
import pytest
from PIL import Image

from diffscale.errors import DataError
from diffscale.train.generate import Settings, generate
from diffscale.train.summary import COLUMNS, study_rows, write_sample_grid, write_study


def fake_run(root, hw, variant, samples_per_s, source):
    """A copy of a real run directory with its coordinates and rate rewritten."""
    run = root / hw / variant
    shutil.copytree(source, run)
    record = json.loads((run / "run.json").read_text())
    precision, gpus = variant.split("-g")
    record["results"].update(hw=hw, precision=precision, gpus=int(gpus), samples_per_s=samples_per_s)
    (run / "run.json").write_text(json.dumps(record))
    return run


def test_table_has_a_row_per_run_with_speedup_against_one_device(tmp_path, trained_run):
    runs = [fake_run(tmp_path, "local", "fp32-g1", 10.0, trained_run),
            fake_run(tmp_path, "local", "fp32-g2", 15.0, trained_run),
            fake_run(tmp_path, "local", "bf16-g2", 12.0, trained_run)]
    rows = study_rows(runs)
    assert [(r["hw"], r["precision"], r["gpus"]) for r in rows] == [("local", "fp32", 1), ("local", "fp32", 2),
                                                                      ("local", "bf16", 2)]
    assert rows[1]["speedup"] == pytest.approx(1.5) and rows[1]["efficiency"] == pytest.approx(0.75)
    assert rows[2]["speedup"] is None  # no 1-device bf16 run to compare with
    assert rows[0]["model"] == "random:tiny" and rows[0]["final_loss"] > 0 and rows[0]["gflops_per_sample"] > 0

    table, figure = tmp_path / "bench" / "train_unet.csv", tmp_path / "bench" / "train_unet_loss.png"
    write_study(runs, table, figure)
    frame = pd.read_csv(table)
    assert list(frame.columns) == COLUMNS and len(frame) == 3
    assert Image.open(figure).size[0] > 300


def test_unfinished_run_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(DataError, match=r"run/run.json: missing; the run did not finish"):
        study_rows([tmp_path / "run"])


def test_sample_grid(tmp_path, trained_run):
    settings = Settings(num_inference_steps=2, seed=1)
    a = tmp_path / "samples" / "local" / "fp32-g1"
    b = tmp_path / "samples" / "local" / "fp32-g2"
    generate(["a red bus", "two cats"], trained_run, a, settings)
    generate(["a red bus", "two cats"], trained_run, b, settings)
    out = write_sample_grid([a, b], tmp_path / "grid.png")
    assert Image.open(out).size[0] > 200
    generate(["a blue bus", "two cats"], trained_run, b, settings)
    with pytest.raises(DataError, match="other prompts than"):
        write_sample_grid([a, b], tmp_path / "grid.png")
