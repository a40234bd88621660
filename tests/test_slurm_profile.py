"""The SLURM profiles, and what they make of the full study: partitions and GPU requests per job
in a dry run, the plugin's translation into sbatch flags, one-line errors at DAG build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake_executor_plugin_slurm import Executor
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from diffscale import resources as hwres
from diffscale import slurm_audit
from diffscale.config import load_config
from diffscale.hardware import demand

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
PROFILES = {name: yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())
            for name in ("slurm", "slurm-noacct")}


def test_the_two_profiles_differ_only_in_the_status_command():
    with_acct, without = PROFILES["slurm"], PROFILES["slurm-noacct"]
    assert with_acct["slurm-status-command"] == "sacct"
    assert without["slurm-status-command"] == "squeue"
    assert {k: v for k, v in with_acct.items() if k != "slurm-status-command"} == \
           {k: v for k, v in without.items() if k != "slurm-status-command"}


def test_profile_runs_the_full_study_on_slurm_in_conda_envs():
    profile = PROFILES["slurm"]
    assert profile["executor"] == "slurm"
    assert profile["software-deployment-method"] == "conda"
    assert (ROOT / profile["configfile"]) == ROOT / "config" / "full.yaml"
    assert profile["retries"] >= 1 and profile["latency-wait"] >= 30 and profile["jobs"] >= 10
    # default-resources only fill gaps: every key a rule may miss has a value
    assert set(profile["default-resources"]) == {"slurm_partition", "runtime", "mem_mb", "cpus_per_task"}


def test_every_profile_key_is_a_snakemake_option():
    help_text = subprocess.run([*SNAKEMAKE, "--help"], capture_output=True, text=True, timeout=120).stdout
    for key in PROFILES["slurm"]:
        assert f"--{key}" in help_text, f"profiles/slurm: {key} is not a snakemake (or slurm plugin) option"


class FakeResources(dict):
    __getattr__ = dict.__getitem__


def sbatch_flags(res: dict) -> str:
    """What snakemake-executor-plugin-slurm submits for a job with these resources."""
    job = SimpleNamespace(resources=FakeResources(res), threads=1, name="x", wildcards=[])
    partition = Executor.get_partition_arg(SimpleNamespace(_partitions=None), job)
    params = dict(run_uuid="uuid", slurm_logfile="log", comment_str="c", account="", partition=partition, workdir="")
    return get_submit_command(job, params) + set_gres_string(job)


def test_the_plugin_turns_each_hardware_entry_into_the_right_sbatch_request(repo_root):
    full = load_config(repo_root / "config" / "full.yaml")
    assert full["hardware"]["a40"]["gpu_request"] == "gres"
    flags = sbatch_flags(hwres.job_resources(full, "a40", 2))
    assert " -p a40 " in flags and "--gres=gpu:a40:2" in flags and "--gpus" not in flags
    assert "--cpus-per-task=16" in flags and "--mem 112000" in flags and "-t 480" in flags

    full["hardware"]["a100"]["gpu_request"] = "gpus"
    flags = sbatch_flags(hwres.job_resources(full, "a100", 4))
    assert " -p a100 " in flags and "--gpus=a100:4" in flags and "--gres" not in flags

    flags = sbatch_flags(hwres.job_resources(full, "cpu", 0, workers=8))
    assert " -p cpu " in flags and "--cpus-per-task=8" in flags and "gpu" not in flags.replace("--cpus-per", "")


def fake_data_overlay(cfg: dict, tmp: Path, **extra) -> Path:
    """An overlay config pointing every data path of `cfg` at an empty stand-in under `tmp`
    (files for *.json, folders otherwise), so a dry run finds its inputs."""

    def fake(node, where):
        if isinstance(node, dict):
            return {k: fake(v, f"{where}/{k}") for k, v in node.items()}
        if isinstance(node, str) and node.startswith("/"):
            path = tmp / "data" / where.strip("/")
            if node.endswith(".json"):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}")
            else:
                path.mkdir(parents=True, exist_ok=True)
            return str(path)
        return node

    overlay = {"data": fake(cfg["data"], ""), **extra}
    path = tmp / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_dry_run_of_the_full_study_sends_every_job_where_the_hardware_table_says(tmp_path):
    full = load_config(ROOT / "config" / "full.yaml")
    # both GPU request styles in one plan: a100 switched to --gpus
    # and the a100 jobs' own sbatch options
    a100_options = {"constraint": "a100_80gb", "qos": "gpu", "slurm_extra": "--hint=nomultithread"}
    # and U-Net jobs with 8 DataLoader workers per GPU
    overlay = fake_data_overlay(full, tmp_path, hardware={"a100": {"gpu_request": "gpus", **a100_options}},
                                train={"loader_workers": 8})
    done = snakemake("-n", "--forceall", "--nolock", "--profile", "profiles/slurm", "--printshellcmds",
                     "--configfile", "config/full.yaml", str(overlay), "--sdm", "env-modules")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cfg = slurm_audit.merged_config([ROOT / "config" / "full.yaml", overlay])
    # jobs with a command: what the SLURM executor submits (target-only rules like `all` run locally)
    jobs = [job for job in slurm_audit.parse_run_log(done.stdout + done.stderr) if job.command]
    assert jobs, done.stdout[-2000:]
    problems = [p for job in jobs for p in slurm_audit.request_problems(cfg, job)]
    assert not problems, "\n".join(problems)
    own = {"a100": a100_options, "cpu": {"slurm_extra": full["hardware"]["cpu"]["slurm_extra"]}}  # SMT off
    for job in jobs:
        options = own.get(job.resources["slurm_partition"], {})
        assert {key: job.resources[key] for key in a100_options if key in job.resources} == options, job.label
    # sampling a trained model uses one device: it asks for one GPU of the run's hardware
    sampled = {job.wildcards["run_gpus"]: slurm_audit.requested_gpus(job.resources)
               for job in jobs if job.rule == "generate_unet_samples" and job.wildcards["hw"] == "a100"}
    assert sampled == {"1": ("a100", 1), "2": ("a100", 1), "4": ("a100", 1)}
    # a DataLoader sweep point asks for a CPU per loader besides the training process
    loaders = {job.wildcards["workers"]: job.resources["cpus_per_task"]
               for job in jobs if job.rule == "ddpm_workers" and job.wildcards["hw"] == "a100"}
    assert loaders == {"0": "8", "2": "8", "8": "9"}  # cpus_per_gpu 8; the baseline (4) is a batch run
    training = {job.wildcards["gpus"]: job.resources["cpus_per_task"]
                for job in jobs if job.rule == "train_unet" and job.wildcards["hw"] == "a100"}
    assert training == {"1": "9", "2": "18", "4": "36"}  # each GPU's process and its 8 loaders
    # every hardware key of the study gets jobs in its partition with its GPU request
    for hw, count in demand(cfg).items():
        entry = cfg["hardware"][hw]
        on_hw = [job for job in jobs if job.wildcards.get("hw") == hw]
        assert on_hw, f"no job of the plan runs on hardware.{hw}"
        assert {job.resources["slurm_partition"] for job in on_hw} == {entry["partition"]}
        biggest = max(on_hw, key=lambda job: slurm_audit.requested_gpus(job.resources)[1])
        if entry["device"] == "cuda":
            assert slurm_audit.requested_gpus(biggest.resources) == (entry["gpu_model"], count)
            style = "gpu_model" if entry["gpu_request"] == "gpus" else "gres"
            assert biggest.resources[style], f"hardware.{hw} asks by {entry['gpu_request']}: {biggest.resources}"
        else:
            assert slurm_audit.requested_gpus(biggest.resources) == ("", 0)


@pytest.mark.slow
def test_a_job_on_a_hardware_key_missing_from_the_table_stops_the_dag_naming_it():
    done = snakemake("-n", "--nolock", "results/hardware/check/h100/g1/run.json")
    assert done.returncode != 0
    assert "hardware key 'h100' is not in the config's hardware table (local)" in done.stdout + done.stderr


@pytest.mark.slow
def test_an_experiment_naming_an_unknown_hardware_key_stops_before_any_job(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(yaml.safe_dump({"train": {"matrix": [{"hw": ["h100"], "precision": ["fp32"], "gpus": [1]}]}}))
    done = snakemake("-n", "--nolock", "--configfile", str(overlay))  # an overlay on config.yaml
    assert done.returncode != 0
    assert "train.matrix[0].hw: hardware key 'h100' is not in the hardware table (local)" in done.stdout + done.stderr


@pytest.mark.slow
def test_cluster_jobs_see_the_same_config_as_the_submitting_process(tmp_path):
    # Jobs are started with --configfiles but without --replace-workflow-config: the demo's
    # config.yaml must not be merged under the full study there (its synthetic-data rules
    # would appear in every full-study job).
    full = load_config(ROOT / "config" / "full.yaml")
    overlay = fake_data_overlay(full, tmp_path)
    as_a_job = snakemake("--list-rules", "--configfile", "config/full.yaml", str(overlay))
    assert as_a_job.returncode == 0, as_a_job.stderr[-2000:]
    assert "synthetic_coco" not in as_a_job.stdout and "data_summary" in as_a_job.stdout
    assert "synthetic_coco" in snakemake("--list-rules").stdout
    # a partial config is still an overlay on the demo
    assert "synthetic_coco" in snakemake("--list-rules", "--configfile", "config/slurm-test.yaml").stdout
