"""The train rules under Snakemake, in a copy of the workflow: a killed training job re-run by
Snakemake resumes from its checkpoint, and editing a training parameter re-runs exactly the
training jobs (a sampling parameter none of them)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from diffscale.train.synthetic import write_embedding_runs

ROOT = Path(__file__).resolve().parents[2]
TARGET = "results/bench/train_unet.csv"
# The embedding rules are not what is tested here: the fixture embeddings stand in for them.
ONLY_TRAIN = ["--allowed-rules", "train_unet", "train_unet_table"]


def snakemake(workdir, *args):
    """Run Snakemake on the train target (--allowed-rules takes several values: it goes last)."""
    return subprocess.run([sys.executable, "-m", "snakemake", TARGET, "--cores", "2", *args, *ONLY_TRAIN],
                          cwd=workdir, capture_output=True, text=True)


def planned_jobs(workdir) -> dict[str, int]:
    result = snakemake(workdir, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", result.stdout, re.M)
            if m.group(1) != "total"}


def edit_config(workdir, **train):
    path = workdir / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["train"].update(train)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture
def workflow(tmp_path):
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("rules", "scripts", "diffscale", "envs", "config"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    write_embedding_runs(tmp_path / "results" / "embed", images=16, captions_per_image=2)
    edit_config(tmp_path, steps=40, checkpoint_every=5, log_every=5)
    return tmp_path


@pytest.mark.slow
def test_killed_training_job_resumes_and_edits_rerun_only_what_they_touch(workflow):
    job = subprocess.Popen([sys.executable, "-m", "snakemake", TARGET, "--cores", "2", *ONLY_TRAIN], cwd=workflow,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    found = []
    while not found and time.time() < deadline and job.poll() is None:
        found = list((workflow / "results" / "train" / "unet").glob("*/*/resume/last.pt"))
        time.sleep(0.05)
    assert found, "no training checkpoint appeared"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    run_dir = found[0].parents[1]
    assert not (run_dir / "checkpoint.pt").exists()

    assert snakemake(workflow, "--unlock").returncode == 0
    result = snakemake(workflow, "--rerun-incomplete")
    assert result.returncode == 0, result.stderr[-3000:]
    log = workflow / "results" / "logs" / "train" / "unet" / run_dir.parent.name / f"{run_dir.name}.log"
    assert re.search(r"resuming from .*resume/last.pt at step \d+", log.read_text()), log.read_text()
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "resume").exists()
    assert planned_jobs(workflow) == {}

    edit_config(workflow, lr=3.0e-4)
    assert planned_jobs(workflow) == {"train_unet": 3, "train_unet_table": 1}
    edit_config(workflow, lr=1.0e-4, prompts=["a red bus"], guidance_scale=5.0, inference_steps=3)
    assert planned_jobs(workflow) == {}
