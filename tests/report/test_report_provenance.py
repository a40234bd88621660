"""What the report says of where its runs came from (diffscale.report.page.Context): finding a
run's run.json, the provenance line under each study, and whether quality figures come from random
weights."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from diffscale.report.page import Context


def write_record(folder, **record) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(record))


@pytest.fixture
def ctx(tmp_path) -> Context:
    (tmp_path / "results" / "bench").mkdir(parents=True)
    return Context(results=tmp_path / "results")


def test_a_run_is_found_under_the_results_or_beside_them_and_the_results_win(ctx, tmp_path):
    write_record(tmp_path / "runs" / "a", config_hash="beside")
    assert ctx.record("runs/a") == {"config_hash": "beside"}
    write_record(tmp_path / "results" / "runs" / "b", config_hash="inside")
    write_record(tmp_path / "runs" / "b", config_hash="beside")
    assert ctx.record("runs/b") == {"config_hash": "inside"}
    write_record(tmp_path / "elsewhere" / "c", config_hash="absolute")
    assert ctx.record(str(tmp_path / "elsewhere" / "c")) == {"config_hash": "absolute"}


def test_a_damaged_or_absent_record_is_none_and_a_record_is_read_once(ctx, tmp_path):
    folder = tmp_path / "results" / "runs" / "a"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{not json")
    assert ctx.record("runs/a") is None and ctx.record("runs/none") is None
    write_record(tmp_path / "results" / "runs" / "b", config_hash="first")
    assert ctx.record("runs/b") == {"config_hash": "first"}
    write_record(tmp_path / "results" / "runs" / "b", config_hash="second")
    assert ctx.record("runs/b") == {"config_hash": "first"}


@pytest.mark.parametrize("cells,random", [(["False", "true"], True), (["False", "1"], True), (["no", "yes"], True),
                                          (["False", "0"], False), ([False, False], False), ([True, False], True)])
def test_a_table_that_says_random_weights_in_any_row_marks_its_quality_figures(ctx, cells, random):
    assert ctx.random_weights(pd.DataFrame({"random_weights": cells}), ["vae"]) is random


def test_without_that_column_the_config_models_of_the_roles_decide(ctx):
    models = ctx.bench / "models.csv"
    pd.DataFrame({"role": ["vae", "text"], "spec": ["random:sd-vae", "pretrained:/m"],
                  "kind": ["random", "pretrained"]}).to_csv(models, index=False)
    assert ctx.random_weights(None, ["vae"]) is True
    assert Context(results=ctx.results).random_weights(pd.DataFrame({"x": [1]}), ["text"]) is False
    pd.DataFrame({"role": ["vae"], "spec": ["random:sd-vae"]}).to_csv(models, index=False)
    assert Context(results=ctx.results).random_weights(None, ["vae"]) is False  # no `kind`: nothing says random
    models.unlink()
    assert Context(results=ctx.results).random_weights(None, ["vae"]) is False


def line(markup: str) -> str:
    found = re.fullmatch(r'<p class="trust">Provenance \(([^)]*)\): (.*)</p>', markup)
    assert found, markup
    return f"({found.group(1)}) {found.group(2)}"


def test_provenance_from_the_table_alone_names_its_devices_and_config_hashes(ctx):
    frame = pd.DataFrame({"device": ["NVIDIA A100", None, "NVIDIA A100", "NVIDIA A40"],
                          "config_hash": ["h1", "h2", "h3", None]})
    assert line(ctx.trust(["r1", "r2"], ["vae"], frame)) == (
        "(no run.json found) device NVIDIA A100, NVIDIA A40 · SLURM job unknown · config hash h1, h2, h3")
    many = pd.DataFrame({"config_hash": [f"h{i}" for i in range(6)]})
    assert line(ctx.trust([], [], many)) == "(no run.json found) SLURM job unknown · config hash h0, h1, h2, h3 …"


def test_provenance_from_run_records(ctx, tmp_path):
    write_record(tmp_path / "results" / "r1", devices={"gpus": ["NVIDIA A100", "NVIDIA A100"]},
                 slurm={"partition": "gpu", "job_id": "42"}, versions={"torch": "2.11.0", "numpy": "2.0"},
                 git_commit="0123456789abcdef", config_hash="aa")
    write_record(tmp_path / "results" / "r2", devices={"gpus": ["NVIDIA A100", "NVIDIA A40"]},
                 versions={"torch": "2.10.0"}, git_commit="0123456789abcdef", config_hash="bb")
    write_record(tmp_path / "results" / "r3", cpu_model="AMD EPYC", usable_cpus=8, config_hash="aa")
    frame = pd.DataFrame({"device": ["ignored"], "config_hash": ["ignored"]})  # the records come first
    assert line(ctx.trust(["r1", "r2", "r3", "r1", "missing"], ["vae"], frame)) == (
        "(3 run records) device 2× NVIDIA A100, NVIDIA A100, NVIDIA A40, cpu (AMD EPYC, 8 usable CPUs) · "
        "SLURM partition/job gpu/42 · torch 2.10.0/2.11.0 · commit 0123456789ab · config hash aa, bb")


def test_one_local_record_and_the_model_specs_of_the_roles(ctx, tmp_path):
    write_record(tmp_path / "results" / "r1", config_hash="aa")
    pd.DataFrame({"role": ["vae", "text", "unet"], "spec": ["random:sd-vae", "random:clip", "random:tiny"],
                  "kind": ["random"] * 3}).to_csv(ctx.bench / "models.csv", index=False)
    assert line(ctx.trust(["r1"], ["vae", "text"])) == (
        "(1 run record) device cpu (cpu, ? usable CPUs) · no SLURM job (local run) · config hash aa · "
        "models vae random:sd-vae, text random:clip")


def test_the_provenance_section_lists_every_readable_record(tmp_path):
    from diffscale.report.html import _provenance

    results = tmp_path / "results"
    results.mkdir()
    assert "<p class='notice'>No run.json found.</p>" in _provenance(results)
    write_record(results / "train" / "a", host="n1", slurm={"partition": "gpu", "job_id": "7"},
                 devices={"gpus": ["NVIDIA A100"]}, cpu_model="EPYC", usable_cpus=8, versions={"torch": "2.11.0"},
                 git_commit="0123456789abcdef", config_hash="aa")
    (results / "broken").mkdir()
    (results / "broken" / "run.json").write_text("{")
    one = _provenance(results)
    assert "<p>1 run left a <code>run.json</code>" in one and "torch: 2.11.0; commit: 0123456789ab." in one
    assert re.findall(r"<td>(.*?)</td>", one) == ["train/a", "n1", "gpu", "7", "NVIDIA A100", "EPYC ×8", "2.11.0",
                                                   "0123456789ab", "aa"]
    write_record(results / "embed" / "b", versions={"torch": "2.10.0"})
    two = _provenance(results)
    assert "<p>2 runs left a <code>run.json</code>" in two and "torch: 2.10.0, 2.11.0; commit: 0123456789ab." in two
    write_record(results / "train" / "a", config_hash="aa")
    assert "torch: 2.10.0; commit: unknown." in _provenance(results)  # a record without a commit adds no blank
