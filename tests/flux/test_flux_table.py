"""The contract tables from run folders when a folder is not what the loop left: a bad input is
one line naming the file (exit 2) and no table is written; a moved or copied run folder reads its
own samples, though run.json lists them by the path the loop wrote them under."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from diffscale.errors import DataError
from diffscale.flux.table import write_tables

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ["flux_train.csv", "flux_loss.csv", "flux_quality.csv", "flux_infer.csv", "flux_samples.png"]


def make_run(out_dir: str, color: str = "black") -> Path:
    """A run folder as diffscale/flux/loop.py leaves it under `out_dir` (relative to the working
    directory, as the rules pass it): run.json lists the samples by that path."""
    run, checkpoints = Path(out_dir), []
    for step in (0, 4):
        path = run / "samples" / f"step-{step:05d}" / "prompt_0.png"
        path.parent.mkdir(parents=True)
        Image.new("RGB", (16, 16), color).save(path)
        checkpoints.append({"step": step, "samples": [str(path)]})
    results = {"hw": "local", "gpus": 1, "steps": 4, "steps_per_s": 2.0, "device": "cpu", "random_weights": True,
               "checkpoints": checkpoints}
    (run / "run.json").write_text(json.dumps({"results": results}))
    (run / "metrics.csv").write_text("step,loss\n2,0.6\n4,0.5\n")
    (run / "quality.csv").write_text("checkpoint_step,psnr,ssim,n_images\n0,10,0.1,5\n4,12,0.2,5\n")
    return run


def flux_table(cwd: Path, *runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "flux_table.py"), "--runs", *map(str, runs),
                           "--out-dir", "bench", "--grid", "bench/flux_samples.png"], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def assert_nothing_written(root: Path) -> None:
    assert [name for name in OUTPUTS if (root / "bench" / name).exists()] == []


def test_a_metrics_file_without_loss_or_with_a_short_row_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok, bad = make_run("fl/ok"), make_run("fl/bad")
    (bad / "metrics.csv").write_text("step,lr\n1,0.5\n")
    proc = flux_table(tmp_path, ok, bad)
    assert proc.returncode == 2
    assert proc.stderr == "error: fl/bad/metrics.csv: missing column 'loss' (expected step, loss)\n"
    assert_nothing_written(tmp_path)
    (bad / "metrics.csv").write_text("step,loss\n2\n")  # a row cut short: one line, not a traceback
    proc = flux_table(tmp_path, ok, bad)
    assert (proc.returncode, proc.stderr) == (
        2, "error: fl/bad/metrics.csv: line 2: step '2' and loss None must be numbers\n")
    assert_nothing_written(tmp_path)


def test_a_run_given_twice_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok = make_run("fl/ok")
    proc = flux_table(tmp_path, ok, Path("fl") / ".." / "fl" / "ok")
    assert proc.returncode == 2
    assert proc.stderr == "error: fl/../fl/ok: run folder given twice; each run is one row of the table\n"
    assert_nothing_written(tmp_path)


def test_a_quality_file_without_ssim_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_run("fl/ok")
    (run / "quality.csv").write_text("checkpoint_step,psnr,n_images\n0,10,5\n")
    with pytest.raises(DataError) as info:
        write_tables([run], [], Path("bench"), Path("bench/flux_samples.png"))
    assert str(info.value) == ("fl/ok/quality.csv: missing column 'ssim' "
                               "(expected checkpoint_step, psnr, ssim, n_images)")
    assert_nothing_written(tmp_path)


def test_a_moved_run_folder_reads_its_own_samples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_run("fl/ok")
    Path("fl/ok").rename("fl/ok_moved")
    proc = flux_table(tmp_path, Path("fl/ok_moved"))
    assert proc.returncode == 0, proc.stderr
    assert all((tmp_path / "bench" / name).exists() for name in OUTPUTS)


def test_a_copied_run_folder_reads_the_copy_not_the_original(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_run("fl/ok", color="black")
    shutil.copytree("fl/ok", "fl/copy")
    for path in Path("fl/copy/samples").rglob("*.png"):
        Image.new("RGB", (16, 16), "red").save(path)
    write_tables([Path("fl/copy")], [], Path("bench"), Path("bench/flux_samples.png"))
    with Image.open("bench/flux_samples.png") as grid:
        assert grid.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_a_missing_sample_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_run("fl/ok")
    Path("fl/ok").rename("fl/ok_moved")
    Path("fl/ok_moved/samples/step-00004/prompt_0.png").unlink()
    proc = flux_table(tmp_path, Path("fl/ok_moved"))
    assert proc.returncode == 2
    assert proc.stderr == ("error: fl/ok_moved/samples/step-00004/prompt_0.png: sample image missing "
                           "(run.json lists fl/ok/samples/step-00004/prompt_0.png)\n")
    assert_nothing_written(tmp_path)


def test_a_corrupt_sample_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_run("fl/ok")
    (run / "samples" / "step-00004" / "prompt_0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot the rest")
    with pytest.raises(DataError) as info:
        write_tables([run], [], Path("bench"), Path("bench/flux_samples.png"))
    assert str(info.value) == ("fl/ok/samples/step-00004/prompt_0.png: not a readable image "
                               "(corrupt, or not an image file)")
    assert_nothing_written(tmp_path)


def _timed(run: Path, hw: str, gpus: int, steps: int, rate: float, threads: int | None = None) -> Path:
    """A run folder whose run.json carries what flux_train.csv is computed from."""
    make_run(str(run))
    record = json.loads((run / "run.json").read_text())
    record["results"].update(hw=hw, gpus=gpus, steps=steps, steps_per_s=rate, threads=threads)
    (run / "run.json").write_text(json.dumps(record))
    return run


def test_speedup_is_against_the_one_gpu_run_of_the_same_hardware_and_step_count(tmp_path, monkeypatch):
    """Listed first, a 1-GPU run of another step count or hardware must not become the baseline."""
    from diffscale.flux.table import train_rows

    monkeypatch.chdir(tmp_path)
    runs = [_timed(tmp_path / "a", "a100", 1, 8, 1.0), _timed(tmp_path / "b", "a40", 1, 4, 1.0),
            _timed(tmp_path / "c", "a100", 1, 4, 2.0), _timed(tmp_path / "d", "a100", 2, 4, 3.0)]
    rows = {Path(r["run"]).name: r for r in train_rows(runs)}
    assert rows["d"]["speedup"] == 1.5 and rows["d"]["efficiency"] == 0.75
    assert [rows[name]["speedup"] for name in "abc"] == [1.0, 1.0, 1.0]
    assert [r["run"] for r in train_rows(runs)] == [str(run) for run in runs]  # the path, for provenance


def test_cpu_efficiency_divides_by_the_cpus_each_run_used(tmp_path, monkeypatch):
    """1 process x 1 thread against 2 processes x 1 thread: 1.5x on twice the CPUs is 75 %."""
    from diffscale.flux.table import train_rows

    monkeypatch.chdir(tmp_path)
    runs = [_timed(tmp_path / "g1", "local", 1, 4, 2.0, threads=1),
            _timed(tmp_path / "g2", "local", 2, 4, 3.0, threads=1)]
    one, two = train_rows(runs)
    assert (one["cpus"], two["cpus"], two["speedup"], two["efficiency"]) == (1, 2, 1.5, 0.75)


def test_the_tables_keep_steps_whole_name_each_run_by_its_path_and_keep_an_empty_inference_header(
        tmp_path, monkeypatch):
    import csv

    monkeypatch.chdir(tmp_path)
    runs = [make_run("fl/a"), make_run("fl/b")]
    write_tables(runs, [], tmp_path / "bench", tmp_path / "bench" / "flux_samples.png")
    loss = list(csv.DictReader(open(tmp_path / "bench" / "flux_loss.csv")))
    assert [(r["run"], r["step"]) for r in loss] == [("fl/a", "2"), ("fl/a", "4"), ("fl/b", "2"), ("fl/b", "4")]
    quality = list(csv.DictReader(open(tmp_path / "bench" / "flux_quality.csv")))
    assert [r["run"] for r in quality] == ["fl/a", "fl/a", "fl/b", "fl/b"]
    assert (tmp_path / "bench" / "flux_infer.csv").read_text().splitlines() == ["hw,model,run"]


def test_the_inference_table_keeps_the_columns_of_infer_csv_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    header = "hw,model,batch_size,dtype,images_per_s,status"
    (tmp_path / "infer").mkdir()
    (tmp_path / "infer" / "infer.csv").write_text(f"{header}\nlocal,base,1,fp32,2.5,ok\n")
    write_tables([make_run("fl/a")], [tmp_path / "infer"], tmp_path / "bench", tmp_path / "bench" / "g.png")
    assert (tmp_path / "bench" / "flux_infer.csv").read_text().splitlines() == [
        f"{header},run", f"local,base,1,fp32,2.5,ok,{tmp_path / 'infer'}"]


def test_the_grid_shows_the_first_prompt_and_a_checkpoint_without_samples_is_a_gap(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_run("fl/ok")
    record = json.loads((run / "run.json").read_text())
    for checkpoint in record["results"]["checkpoints"]:
        second = Path(checkpoint["samples"][0]).with_name("prompt_1.png")
        Image.new("RGB", (16, 16), "red").save(second)
        checkpoint["samples"].append(str(second))
    record["results"]["checkpoints"][0]["samples"] = []
    (run / "run.json").write_text(json.dumps(record))
    write_tables([run], [], tmp_path / "bench", tmp_path / "bench" / "flux_samples.png")
    with Image.open(tmp_path / "bench" / "flux_samples.png") as shown:
        assert shown.convert("RGB").getpixel((16 + 8, 8)) == (0, 0, 0)  # step 4's first prompt (black), not red
