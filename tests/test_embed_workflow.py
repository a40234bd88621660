"""The embedding rules through Snakemake, on a manifest fixture standing in for rule coco_manifest."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from diffscale.shards import verify
from diffscale.provenance import usable_cpus
from embed_data import make_manifest

pytestmark = pytest.mark.slow

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


@pytest.fixture(scope="module")
def workdir(repo_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "config.yaml", "pyproject.toml"):
        shutil.copy(repo_root / name, work / name)
    for folder in ("rules", "scripts", "diffscale", "envs", "config"):
        shutil.copytree(repo_root / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    coco = work / "results" / "data" / "coco"
    fixture = make_manifest(work / "inputs", n_synthetic=10, n_real=2)
    coco.mkdir(parents=True)
    shutil.copy(fixture.manifest, coco / "manifest.parquet")
    shutil.copy(fixture.skipped, coco / "skipped.csv")
    return work


def _snakemake(workdir, *args):
    return subprocess.run([str(SNAKEMAKE), "--cores", "2", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=600)


def test_demo_matrix_dry_run(workdir):
    out = _snakemake(workdir, "-n", "results/bench/embed_scaling.csv")
    assert out.returncode == 0, out.stderr[-2000:]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(embed_\w+)\s+(\d+)$", out.stdout, re.M)}
    assert counts == {"embed_images": 13, "embed_text": 13, "embed_scaling": 1}
    assert "threads: 2" in out.stdout and "cpus_per_task=2" in out.stdout


def test_rules_run_and_build_the_scaling_table(workdir):
    # serial and joblib with one worker run in the job's own process: the rules' wiring, quickly
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["embed"].update(backends=["serial", "joblib"], workers=[1], policies=["naive"])
    (workdir / "small.yaml").write_text(yaml.safe_dump(config))
    out = _snakemake(workdir, "results/bench/embed_scaling.csv", "--configfile", "small.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    for modality in ("images", "text"):
        for run in ("serial-pinned-w1", "joblib-naive-w1"):
            run_dir = workdir / "results" / "embed" / modality / run
            verify(run_dir)
            assert (run_dir / "run.json").is_file() and (run_dir / "timing.json").is_file()
            assert (workdir / "results" / "logs" / "embed" / modality / f"{run}.log").is_file()
    table = pd.read_csv(workdir / "results" / "bench" / "embed_scaling.csv")
    cores = min(2, usable_cpus())
    assert len(table) == 4 and list(table["cores"]) == [cores] * 4  # --cpus from the job's cpus_per_task
    # pinned: all the job's cores; naive: Snakemake's OMP_NUM_THREADS (the job's threads, 2)
    assert list(table["backend"]) == ["serial", "joblib"] * 2
    assert list(table["threads_per_worker"]) == [cores, 2] * 2
    assert (table.loc[table.backend == "serial", "speedup"] == 1).all()
    assert (workdir / "results" / "bench" / "embed_scaling.png").stat().st_size > 1000
