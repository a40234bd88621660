"""What every run.json records (diffscale.provenance), with SLURM's job environment faked."""

from __future__ import annotations

import json

import pytest
import torch

from diffscale import provenance

# As SLURM 22.05 sets them inside a job step on a GPU node (seen on the CI cluster).
SLURM_ENV = {
    "SLURM_JOB_ID": "4711",
    "SLURM_CLUSTER_NAME": "hpc",
    "SLURM_JOB_PARTITION": "a100",
    "SLURMD_NODENAME": "gpu-node-07",
    "SLURM_JOB_NODELIST": "gpu-node-07",
    "SLURM_CPUS_ON_NODE": "16",
    "SLURM_CPUS_PER_TASK": "16",
    "SLURM_GPUS_ON_NODE": "2",
    "SLURM_STEP_GPUS": "0,1",
    "CUDA_VISIBLE_DEVICES": "0,1",
}


@pytest.fixture
def in_slurm_job(monkeypatch):
    for var in [*provenance.SLURM_VARS.values(), "CUDA_VISIBLE_DEVICES"]:
        monkeypatch.delenv(var, raising=False)
    for var, value in SLURM_ENV.items():
        monkeypatch.setenv(var, value)


def test_slurm_job_partition_node_and_gpus_are_recorded(in_slurm_job):
    assert provenance.slurm() == {
        "job_id": "4711", "cluster": "hpc", "partition": "a100", "node": "gpu-node-07",
        "nodelist": "gpu-node-07", "cpus_on_node": "16", "cpus_per_task": "16", "gpus_on_node": "2",
        "step_gpus": "0,1",
    }


def test_outside_slurm_there_is_no_slurm_record(monkeypatch):
    for var in provenance.SLURM_VARS.values():
        monkeypatch.delenv(var, raising=False)
    assert provenance.slurm() is None


def test_gpu_names_capabilities_and_visible_devices(in_slurm_job, monkeypatch):
    class Props:
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA A100-SXM4-80GB #{i}")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    info = provenance.devices()
    assert info["gpus"] == ["NVIDIA A100-SXM4-80GB #0", "NVIDIA A100-SXM4-80GB #1"]
    assert info["gpu_capabilities"] == ["8.0", "8.0"]
    assert info["gpu_memory_gb"] == [80.0, 80.0]
    assert info["cuda_visible_devices"] == "0,1"
    assert info["cudnn_version"] == 90100


def test_a_run_json_holds_everything_a_result_must_be_traced_to(in_slurm_job, tmp_path):
    config_slice = {"hardware": {"a100": {"partition": "a100"}}, "steps": 20}
    record = provenance.write_run_json(tmp_path / "run" / "run.json", config_slice=config_slice,
                                       timings={"total_s": 1.5})
    on_disk = json.loads((tmp_path / "run" / "run.json").read_text())
    assert on_disk == json.loads(json.dumps(record))
    assert on_disk["slurm"]["job_id"] == "4711" and on_disk["slurm"]["partition"] == "a100"
    assert on_disk["slurm"]["node"] == "gpu-node-07"
    assert on_disk["cpu_model"] and on_disk["cpu_count"] >= 1 and on_disk["usable_cpus"] >= 1
    assert on_disk["versions"]["torch"] == torch.__version__
    assert {"diffusers", "transformers", "numpy", "snakemake"} <= set(on_disk["versions"])
    assert on_disk["git_commit"] and len(on_disk["git_commit"].split("-")[0]) == 40
    assert on_disk["config"] == config_slice
    assert on_disk["timings"] == {"total_s": 1.5}
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_the_config_hash_is_stable_and_tracks_the_config():
    a = provenance.collect(config_slice={"x": 1, "y": [1, 2]})["config_hash"]
    assert a == provenance.collect(config_slice={"y": [1, 2], "x": 1})["config_hash"]
    assert a != provenance.collect(config_slice={"x": 2, "y": [1, 2]})["config_hash"]


def test_a_runs_results_are_read_back_or_the_file_is_named(tmp_path):
    from diffscale.errors import DataError

    with pytest.raises(DataError, match=r"run.json: missing; the run did not finish$"):
        provenance.read_results(tmp_path, "training run")
    (tmp_path / "run.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(DataError, match=r"run.json: no results section; not a training run's record$"):
        provenance.read_results(tmp_path, "training run")
    (tmp_path / "run.json").write_text(json.dumps({"results": {"hw": "a40", "gpus": 2}}))
    assert provenance.read_results(tmp_path, "training run", ["hw", "gpus"]) == {"hw": "a40", "gpus": 2}
    with pytest.raises(DataError, match=r"run.json: results has no 'steps' \(expected hw, steps\)$"):
        provenance.read_results(tmp_path, "FLUX training run", ["hw", "steps"])


def test_usable_cpus_are_the_affinity_not_the_machine(monkeypatch):
    """A 2-CPU SLURM job on a large node: training threads follow the job's CPUs, not the node's."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert provenance.usable_cpus() == 2


def test_an_empty_slurm_variable_is_not_a_slurm_record(monkeypatch):
    """Some site prologues export SLURM_JOB_ID= on login nodes: that is no job."""
    for var in provenance.SLURM_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "")
    assert provenance.slurm() is None
    monkeypatch.setenv("SLURM_JOB_PARTITION", "a40")
    assert provenance.slurm() == {"partition": "a40"}


def test_the_commit_says_dirty_when_tracked_files_changed(monkeypatch):
    import subprocess

    def fake_git(porcelain: str, head_rc: int = 0):
        def run(args, **kwargs):
            out = "0123abcd\n" if "rev-parse" in args else porcelain
            return subprocess.CompletedProcess(args, head_rc if "rev-parse" in args else 0, out, "")
        return run

    monkeypatch.setattr(subprocess, "run", fake_git(" M diffscale/io.py\n"))
    assert provenance.git_commit.__wrapped__() == "0123abcd-dirty"
    monkeypatch.setattr(subprocess, "run", fake_git(""))
    assert provenance.git_commit.__wrapped__() == "0123abcd"
    monkeypatch.setattr(subprocess, "run", fake_git("", head_rc=128))  # not a git checkout (an sdist)
    assert provenance.git_commit.__wrapped__() is None


def test_the_cpu_model_is_read_from_its_cpuinfo_line(monkeypatch):
    cpuinfo = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
               "model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n")

    class FakePath:
        def __init__(self, path):
            assert path == "/proc/cpuinfo"

        def read_text(self):
            return cpuinfo

    monkeypatch.setattr(provenance, "Path", FakePath)
    assert provenance.cpu_model.__wrapped__() == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    cpuinfo = "processor\t: 0\nBogoMIPS\t: 50.00\n"  # aarch64 has no model name line
    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    monkeypatch.setattr(provenance.platform, "machine", lambda: "aarch64")
    assert provenance.cpu_model.__wrapped__() == "aarch64"


def test_created_is_a_local_iso_time_with_its_offset_and_models_default_to_none_listed():
    import re

    record = provenance.collect()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", record["created"]), record["created"]
    assert record["models"] == [] and record["config"] is None and record["config_hash"] is None
