"""The study table, the loss figure and the sample grid built from run directories."""

import json
import shutil

import pandas as pd
import pytest
from PIL import Image

from diffscale.errors import DataError
from diffscale.train.generate import Settings, generate
from diffscale.train.summary import COLUMNS, study_rows, write_sample_grid, write_study


def fake_run(root, hw, variant, samples_per_s, source, cpus=None):
    """A copy of a real run directory with its coordinates and rate rewritten (`cpus`: a CPU run's
    processes x threads; None as a GPU run records)."""
    run = root / hw / variant
    shutil.copytree(source, run)
    record = json.loads((run / "run.json").read_text())
    precision, gpus = variant.split("-g")
    record["results"].update(hw=hw, precision=precision, gpus=int(gpus), samples_per_s=samples_per_s, cpus=cpus)
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
    assert [r["tf32"] for r in rows] == [json.loads((runs[0] / "run.json").read_text())["config"]["train"]["tf32"]] * 3

    table, figure = tmp_path / "bench" / "train_unet.csv", tmp_path / "bench" / "train_unet_loss.png"
    write_study(runs, table, figure)
    frame = pd.read_csv(table)
    assert list(frame.columns) == COLUMNS and len(frame) == 3
    assert Image.open(figure).size[0] > 300


def test_on_cpus_efficiency_is_per_cpu_not_per_process(tmp_path, trained_run):
    """2 processes x 1 thread on the 2 CPUs that 1 process x 2 threads had: 1x the compute."""
    runs = [fake_run(tmp_path, "local", "fp32-g1", 10.0, trained_run, cpus=2),
            fake_run(tmp_path, "local", "fp32-g2", 15.0, trained_run, cpus=2),
            fake_run(tmp_path, "big", "fp32-g1", 10.0, trained_run, cpus=1),
            fake_run(tmp_path, "big", "fp32-g2", 15.0, trained_run, cpus=4)]
    rows = study_rows(runs)
    assert [r["efficiency"] for r in rows] == pytest.approx([1.0, 1.5, 1.0, 0.375])
    assert [r["cpus"] for r in rows] == [2, 2, 1, 4]


def test_unfinished_run_is_named(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(DataError, match=r"run/run.json: missing; the run did not finish"):
        study_rows([tmp_path / "run"])


def test_a_run_given_twice_is_refused_not_a_second_row(trained_run):
    again = trained_run / ".." / trained_run.name
    with pytest.raises(DataError, match=rf"^{again}: run folder given twice; each run is one row of the table$"):
        study_rows([trained_run, again])


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
    # a damaged samples.json is one line naming it (was KeyError, TypeError, or matplotlib's ValueError)
    manifest = json.loads((b / "samples.json").read_text())
    for damaged, expected in (({**manifest, "images": []}, "expected 'images', a non-empty list"),
                              ([], "expected 'images', a non-empty list"),
                              ({**manifest, "images": [{"file": "000.png"}]}, "expected 'images', a non-empty list"),
                              ({**manifest, "settings": {}},
                               "expected 'settings' with scheduler, num_inference_steps")):
        (b / "samples.json").write_text(json.dumps(damaged))
        with pytest.raises(DataError, match=rf"^{b / 'samples.json'}: {expected}"):
            write_sample_grid([a, b], tmp_path / "grid2.png")
    assert not (tmp_path / "grid2.png").exists()


# --- bad input: one line naming the file, exit 2, no output (not even the table) -----------------


def _cli(repo_root, script, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(repo_root / "scripts" / script), *map(str, args)], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)


def _bare_run(root, metrics: str):
    """A run directory with just what the table and the loss figure read."""
    run = root / "local" / "fp32-g1"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"results": {"hw": "local", "precision": "fp32", "gpus": 1,
                                                          "samples_per_s": 10.0}}))
    (run / "metrics.csv").write_text(metrics)
    return run


@pytest.mark.parametrize("metrics, message", [
    ("step,lr\n1,0.5\n", "missing column 'loss' (expected step, loss)"),
    ("", "not a readable CSV file (No columns to parse from file)"),
])
def test_a_metrics_file_without_loss_is_one_line_and_writes_nothing(repo_root, tmp_path, metrics, message):
    run = _bare_run(tmp_path, metrics)
    table, figure = tmp_path / "out" / "t.csv", tmp_path / "out" / "l.png"
    proc = _cli(repo_root, "train_unet_table.py", "--runs", run, "--table", table, "--loss-figure", figure)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {run / 'metrics.csv'}: {message}\n"
    assert not table.exists() and not figure.exists()


def test_a_failing_figure_takes_the_table_with_it(tmp_path, monkeypatch):
    from diffscale import figures

    def broken(fig, path, dpi=None):
        raise OSError("disk full")

    monkeypatch.setattr(figures, "save", broken)
    run = _bare_run(tmp_path, "step,loss\n1,0.5\n")
    table, figure = tmp_path / "out" / "t.csv", tmp_path / "out" / "l.png"
    with pytest.raises(OSError, match="disk full"):
        write_study([run], table, figure)
    assert not table.exists() and not figure.exists()


def _samples(folder, image: bytes):
    """A generate.py output directory of one prompt whose image file holds `image`."""
    folder.mkdir(parents=True)
    (folder / "p0.png").write_bytes(image)
    (folder / "samples.json").write_text(json.dumps({
        "images": [{"file": "p0.png", "prompt": "a red bus"}],
        "settings": {"scheduler": "ddim", "num_inference_steps": 2, "guidance_scale": 1.0, "seed": 0,
                     "weights": "random"}}))
    return folder


def test_sample_grid_of_a_corrupt_png_is_one_line_and_writes_nothing(repo_root, tmp_path):
    folder = _samples(tmp_path / "samples" / "local" / "fp32-g1", b"\x89PNG\r\n\x1a\nnot the rest of a png")
    out = tmp_path / "grid.png"
    proc = _cli(repo_root, "sample_grid.py", "--samples", folder, "--out", out)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {folder / 'p0.png'}: not a readable image (corrupt, or not an image file)\n"
    assert not out.exists()


def test_sample_grid_of_a_truncated_png_names_it(tmp_path):
    import io

    png = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(png, format="PNG")
    folder = _samples(tmp_path / "samples" / "local" / "fp32-g1", png.getvalue()[: len(png.getvalue()) // 2])
    with pytest.raises(DataError) as info:
        write_sample_grid([folder], tmp_path / "grid.png")
    assert str(info.value) == f"{folder / 'p0.png'}: not a readable image (image file is truncated)"
    assert not (tmp_path / "grid.png").exists()
