"""The SLURM audit (diffscale.slurm_audit) on recorded Snakemake output and SLURM records."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from diffscale import slurm_audit as audit
from diffscale.config import load_config

# Shaped like Snakemake 9's output of a run through the SLURM executor (abridged).
RUN_LOG = """\
Building DAG of jobs...
SLURM run ID: 2682b761-e7f2-4f7a-af5b-2866c0281528
[Sun Nov 22 21:04:28 2026]
rule data_summary:
    input: a, b
    output: results/data/summary.json
    jobid: 3
    reason: Missing output files: results/data/summary.json
    resources: tmpdir=<TBD>, mem_mb=4000, mem=4 GB, slurm_partition=cpu, runtime=30, cpus_per_task=2, gres=, gpu=0, gpu_model=
Shell command: python scripts/make_demo_data.py summary --out results/data/summary.json > log 2>&1

[Sun Nov 22 21:04:28 2026]
rule hardware_check:
    output: results/hardware/check/a40/g1/run.json
    jobid: 8
    reason: Missing output files: results/hardware/check/a40/g1/run.json
    wildcards: hw=a40, gpus=1
    resources: tmpdir=<TBD>, mem_mb=1500, mem=1.5 GB, slurm_partition=a40, runtime=15, cpus_per_task=1, gres=gpu:a40:1, gpu=0, gpu_model=
Shell command: python scripts/hardware_check.py --hw a40 --gpus 1 > log 2>&1

[Sun Nov 22 21:04:28 2026]
rule hardware_check:
    output: results/hardware/check/a100/g2/run.json
    jobid: 7
    reason: Missing output files: results/hardware/check/a100/g2/run.json
    wildcards: hw=a100, gpus=2
    resources: tmpdir=<TBD>, mem_mb=3000, mem=3 GB, slurm_partition=a100, runtime=15, cpus_per_task=2, gres=, gpu=2, gpu_model=a100
Shell command: python scripts/hardware_check.py --hw a100 --gpus 2 > log 2>&1
Job 3 has been submitted with SLURM jobid 21 (log: .snakemake/slurm_logs/rule_data_summary/21.log).
Job 8 has been submitted with SLURM jobid 19 (log: .snakemake/slurm_logs/rule_hardware_check/a40_1/19.log).
Job 7 has been submitted with SLURM jobid 20 (log: .snakemake/slurm_logs/rule_hardware_check/a100_2/20.log).
[Sun Nov 22 21:05:39 2026]
localrule all:
    input: results/report.html
    jobid: 0
    reason: Input files updated by another job: results/report.html
    resources: tmpdir=/tmp
[Sun Nov 22 21:05:39 2026]
Finished jobid: 0 (Rule: all)
"""

SACCT = """\
19|a40|node-a40|COMPLETED|billing=1,cpu=1,gres/gpu:a40=1,gres/gpu=1,mem=1500M,node=1
20|a100|node-a100|COMPLETED|billing=2,cpu=2,gres/gpu:a100=2,gres/gpu=2,mem=3000M,node=1
21|cpu|node-cpu|COMPLETED|billing=2,cpu=2,mem=4000M,node=1
"""

SCONTROL = (
    "JobId=19 JobName=x JobState=COMPLETED Partition=a40 NodeList=node-a40 "
    "TRES=cpu=1,mem=1500M,node=1,billing=1 JOB_GRES=gpu:a40:1   Nodes=node-a40 CPU_IDs=0 Mem=1500 GRES= "
    "Comment=rule_hardware_check_wildcards_a40_1 TresPerNode=gres:gpu:a40:1\n"
    "JobId=20 JobName=x JobState=COMPLETED Partition=a100 NodeList=node-a100 "
    "TRES=cpu=2,mem=3000M,node=1,billing=2 JOB_GRES=gpu:a100:2(IDX:0-1) TresPerJob=gres:gpu:a100:2\n"
    "JobId=21 JobName=x JobState=COMPLETED Partition=cpu NodeList=node-cpu TRES=cpu=2,mem=4000M JOB_GRES=(null)\n"
)

NODES = {"cpu": {"node-cpu"}, "a40": {"node-a40"}, "a100": {"node-a100"}, "k80": {"node-k80"}}


@pytest.fixture
def cfg(repo_root):
    return audit.merged_config([repo_root / "config.yaml", repo_root / "config" / "slurm-test.yaml"])


@pytest.fixture
def two_gpu_cfg(cfg):
    # the log above is a slice of the CI demo: local asks 2 CPUs, and only a40/a100 are in use
    cfg = copy.deepcopy(cfg)
    cfg["hardware"]["local"]["cpus"] = 2
    cfg["train"]["matrix"] = [{"hw": ["a40"], "precision": ["fp32"], "gpus": [1]},
                              {"hw": ["a100"], "precision": ["fp32"], "gpus": [2]}]
    cfg["flux"]["matrix"] = [{"hw": ["a40"], "gpus": [1]}]
    return cfg


def test_parse_run_log_reads_requests_and_slurm_ids():
    jobs = {job.jobid: job for job in audit.parse_run_log(RUN_LOG)}
    assert set(jobs) == {"3", "8", "7", "0"}
    assert jobs["8"].rule == "hardware_check" and jobs["8"].wildcards == {"hw": "a40", "gpus": "1"}
    assert jobs["8"].resources["gres"] == "gpu:a40:1" and jobs["8"].slurm_ids == ["19"]
    assert jobs["7"].resources["gpu_model"] == "a100" and jobs["7"].slurm_ids == ["20"]
    assert jobs["3"].wildcards == {} and jobs["3"].command.startswith("python scripts/make_demo_data.py")
    assert jobs["0"].local and not jobs["0"].slurm_ids


@pytest.mark.parametrize("parse, text", [(audit.parse_sacct, SACCT), (audit.parse_scontrol, SCONTROL)])
def test_both_record_sources_give_partition_node_and_gpus_by_model(parse, text):
    records = parse(text)
    assert records["19"] == audit.SlurmRecord("19", "a40", "node-a40", "COMPLETED", {"a40": 1})
    assert records["20"].gpus == {"a100": 2} and records["20"].partition == "a100"
    assert records["21"].gpus == {} and records["21"].node == "node-cpu"


def test_both_record_sources_give_cpus_and_elapsed_seconds_where_they_say():
    sacct = audit.parse_sacct("41|cpu|node-cpu|CANCELLED by 0|billing=3,cpu=3,mem=2G,node=1|3|75\n")
    scontrol = audit.parse_scontrol("JobId=41 JobState=CANCELLED Partition=cpu NodeList=node-cpu NumCPUs=3 "
                                    "RunTime=1-00:01:15 TRES=cpu=3,mem=2G\n")
    assert (sacct["41"].cpus, sacct["41"].elapsed_s, sacct["41"].state) == (3, 75.0, "CANCELLED")
    assert (scontrol["41"].cpus, scontrol["41"].elapsed_s) == (3, 86475.0)
    assert audit.SACCT_FORMAT.endswith(",AllocCPUS,ElapsedRaw")  # the columns parse_sacct reads 6th and 7th
    assert (audit.parse_sacct(SACCT)["19"].cpus, audit.parse_scontrol(SCONTROL)["19"].elapsed_s) == (None, None)


def test_a_run_that_went_where_the_table_says_passes(two_gpu_cfg):
    result = audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(SACCT), NODES)
    assert result.problems == []
    assert ("hardware_check[hw=a100,gpus=2]", "20", "a100", "node-a100", "a100:2") in result.rows
    assert len(result.rows) == 3


def test_a_job_slurm_ran_in_another_partition_is_caught(two_gpu_cfg):
    wrong = SACCT.replace("19|a40|node-a40", "19|a100|node-a100")
    problems = audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(wrong), NODES).problems
    assert "hardware_check[hw=a40,gpus=1] (SLURM job 19): ran in partition 'a100', asked for 'a40'" in problems
    assert any("not a node of partition 'a40'" in p for p in problems)


def test_wrong_or_missing_gpu_allocations_are_caught(two_gpu_cfg):
    fewer = SACCT.replace("gres/gpu:a100=2,gres/gpu=2", "gres/gpu:a100=1,gres/gpu=1")
    problems = audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(fewer), NODES).problems
    assert problems == ["hardware_check[hw=a100,gpus=2] (SLURM job 20): SLURM allocated GPUs {'a100': 1}, asked for a100:2"]
    none = SACCT.replace("gres/gpu:a40=1,gres/gpu=1,", "")
    problems = audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(none), NODES).problems
    assert problems == ["hardware_check[hw=a40,gpus=1] (SLURM job 19): SLURM allocated GPUs none, asked for a40:1"]


def test_a_cluster_that_accounts_only_untyped_gpus_is_checked_by_count(two_gpu_cfg):
    untyped = SACCT.replace("gres/gpu:a40=1,", "").replace("gres/gpu:a100=2,", "")
    assert audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(untyped), NODES).problems == []
    fewer = untyped.replace("gres/gpu=2", "gres/gpu=1")
    assert audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(fewer), NODES).problems == [
        "hardware_check[hw=a100,gpus=2] (SLURM job 20): SLURM allocated GPUs {'': 1}, asked for a100:2"]


def test_a_request_that_disagrees_with_the_hardware_table_is_caught(two_gpu_cfg):
    two_gpu_cfg["hardware"]["a40"]["partition"] = "gpu-a40"
    problems = audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(SACCT), NODES).problems
    assert "hardware_check[hw=a40,gpus=1]: slurm_partition is 'a40', hardware.a40 says 'gpu-a40'" in problems


def test_only_a_scaling_runs_cpus_are_exact(cfg):
    """A DDPM DataLoader job asks for a CPU per loader besides its training process; an embedding
    scaling run w{N} asks for exactly N."""
    def job(wildcards: dict, cpus: int) -> audit.PlannedJob:
        resources = {"slurm_partition": "cpu", "mem_mb": str(cfg["hardware"]["local"]["mem_mb"]),
                     "runtime": str(cfg["hardware"]["local"]["runtime_min"]), "cpus_per_task": str(cpus)}
        return audit.PlannedJob("1", "r", False, wildcards, resources)

    loaders = {"hw": "local", "workers": "2"}
    assert audit.request_problems(cfg, job(loaders, 3)) == []
    scaling = {"modality": "images", "backend": "joblib", "policy": "pinned", "workers": "2"}
    assert audit.request_problems(cfg, job(scaling, 2)) == []
    assert audit.request_problems(cfg, job(scaling, 3)) == ["r[modality=images,backend=joblib,policy=pinned,"
                                                           "workers=2]: cpus_per_task is '3', hardware.local says 2"]


def test_a_job_without_hw_must_ask_for_a_hardware_entrys_partition(two_gpu_cfg):
    log = RUN_LOG.replace("slurm_partition=cpu", "slurm_partition=bigmem")
    problems = audit.audit_run(log, two_gpu_cfg, audit.parse_sacct(SACCT), NODES).problems
    assert "data_summary: partition 'bigmem' is not the partition of any hardware entry" in problems


def test_failed_unrecorded_and_unsubmitted_jobs_are_caught(two_gpu_cfg):
    failed = SACCT.replace("21|cpu|node-cpu|COMPLETED", "21|cpu|node-cpu|FAILED")
    assert "data_summary (SLURM job 21): ended FAILED" in audit.audit_run(
        RUN_LOG, two_gpu_cfg, audit.parse_sacct(failed), NODES).problems
    unrecorded = "".join(line + "\n" for line in SACCT.splitlines() if not line.startswith("20|"))
    assert "hardware_check[hw=a100,gpus=2]: SLURM has no record of job 20" in audit.audit_run(
        RUN_LOG, two_gpu_cfg, audit.parse_sacct(unrecorded), NODES).problems
    unsubmitted = RUN_LOG.replace("Job 3 has been submitted with SLURM jobid 21", "")
    assert "data_summary: never submitted to SLURM" in audit.audit_run(
        unsubmitted, two_gpu_cfg, audit.parse_sacct(SACCT), NODES).problems


def test_every_partition_in_use_must_have_run_a_job(cfg):
    # the CI overlay also trains on k80: the log above has no job there
    problems = audit.audit_run(RUN_LOG, cfg, audit.parse_sacct(SACCT), NODES).problems
    assert "hardware.k80: no job ran in its partition 'k80'" in problems


def test_provenance_must_agree_with_slurm(two_gpu_cfg, tmp_path):
    run = tmp_path / "results" / "hardware" / "check" / "a40" / "g1"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"slurm": {"job_id": "19", "partition": "a40", "node": "node-a40"}}))
    assert audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(SACCT), NODES, tmp_path / "results").problems == []
    (run / "run.json").write_text(json.dumps({"slurm": {"job_id": "19", "partition": "cpu", "node": "node-a40"}}))
    problems = audit.audit_run(RUN_LOG, two_gpu_cfg, audit.parse_sacct(SACCT), NODES, tmp_path / "results").problems
    assert problems == [f"{run / 'run.json'}: slurm.partition is 'cpu', SLURM says 'a40'"]


def test_a_second_run_must_submit_nothing():
    idle = "Building DAG of jobs...\nNothing to be done (all requested files are present and up to date).\n"
    records = audit.parse_sacct(SACCT)
    assert audit.idle_rerun_problems(idle, set(records), records) == []
    busy = RUN_LOG
    problems = audit.idle_rerun_problems(busy, {"19", "20"}, records)
    assert problems == ["the second run submitted 3 jobs: ['21', '19', '20']",
                        "the second run did not report 'Nothing to be done'",
                        "SLURM has jobs that did not exist before the second run: ['21']"]


def test_a_retry_counts_every_attempt_and_allows_the_longer_time_limit(two_gpu_cfg):
    retried = RUN_LOG.replace(
        "Job 3 has been submitted with SLURM jobid 21",
        "Job 3 has been submitted with SLURM jobid 18 (log: x).\n"
        "[Sun Nov 22 21:04:50 2026]\nrule data_summary:\n    output: results/data/summary.json\n    jobid: 3\n"
        "    resources: tmpdir=<TBD>, mem_mb=4000, slurm_partition=cpu, runtime=60, cpus_per_task=2, gres=, gpu=0, gpu_model=\n"
        "Shell command: python x\nJob 3 has been submitted with SLURM jobid 21")
    records = audit.parse_sacct(SACCT + "18|cpu|node-cpu|TIMEOUT|cpu=2,mem=4000M\n")
    problems = audit.audit_run(retried, two_gpu_cfg, records, NODES).problems
    assert problems == ["data_summary (SLURM job 18): ended TIMEOUT"]


def test_a_retry_capped_at_the_partitions_max_time_passes_and_a_longer_one_is_caught(two_gpu_cfg):
    two_gpu_cfg["hardware"]["local"]["max_runtime_min"] = 45  # runtime_min 30: tries ask 30, 45, 45
    def asked(minutes: int) -> list[str]:
        log = RUN_LOG.replace("slurm_partition=cpu, runtime=30", f"slurm_partition=cpu, runtime={minutes}")
        return audit.audit_run(log, two_gpu_cfg, audit.parse_sacct(SACCT), NODES).problems

    assert asked(30) == [] and asked(45) == []
    assert asked(60) == ["data_summary: runtime is '60', hardware.local says 30"]
    assert asked(40) == ["data_summary: runtime is '40', hardware.local says 30"]


def test_merged_config_merges_mappings_and_replaces_lists(repo_root):
    cfg = audit.merged_config([repo_root / "config.yaml", repo_root / "config" / "slurm-test.yaml"])
    demo = load_config(repo_root / "config.yaml")
    assert set(cfg["hardware"]) == {"local", "a40", "a100", "k80"}
    assert cfg["hardware"]["local"]["partition"] == demo["hardware"]["local"]["partition"]
    assert cfg["hardware"]["local"]["cpus"] == 1
    assert {hw for entry in cfg["train"]["matrix"] for hw in entry["hw"]} == {"a40", "a100", "k80"}
    assert cfg["train"]["steps"] == demo["train"]["steps"]
    assert all(cfg["hardware"][hw]["device"] == "cpu" for hw in ("a40", "a100", "k80"))


# --- the dask backend's worker jobs (diffscale.embed.dask_slurm) ------------------------------

def _dask_run(root, name, shards, threads, workers=None, job_ids=("31", "32"), held=None):
    run = root / name
    run.mkdir()
    jobs = [{"job_id": "31", "cpus": 1, "held_s": 18.5}, {"job_id": "32", "cpus": 1, "held_s": 19.0}]
    timing = {"workers": 2, "threads_per_worker": threads,
              "backend_info": {"cluster": "slurm", "job_ids": list(job_ids), "workers": workers or [
                  {"worker": 0, "job_id": "31", "node": "node-cpu"},
                  {"worker": 1, "job_id": "32", "node": "node-cpu"}],
                  "jobs": jobs if held is None else held, "job_cpus": 2, "job_cpu_s": 37.5}}
    (run / "timing.json").write_text(json.dumps(timing))
    (run / "index.json").write_text(json.dumps({"shards": [{"file": f, "sha256": h} for f, h in shards.items()]}))
    return run


def _record(job, partition="cpu", node="node-cpu", state="CANCELLED", cpus=1, elapsed=20.0):
    return audit.SlurmRecord(job, partition, node, state, {}, cpus, elapsed)


def test_dask_worker_jobs_that_ran_in_the_partition_and_ended_pass(tmp_path):
    run = _dask_run(tmp_path, "dask", {"shard-00000.safetensors": "aa"}, [1, 1])
    result = audit.dask_worker_problems(run, {"31": _record("31"), "32": _record("32", state="COMPLETED")}, "cpu")
    assert result.problems == []
    assert result.rows == [("worker 0", "31", "cpu", "node-cpu", "CANCELLED", "1 CPU", "18.5 of 20 s"),
                           ("worker 1", "32", "cpu", "node-cpu", "COMPLETED", "1 CPU", "19.0 of 20 s")]
    # two processes per job (embed.dask.slurm.processes: 2): one job, both workers
    shared = _dask_run(tmp_path, "shared", {}, [1, 1], job_ids=("31",), workers=[
        {"worker": 0, "job_id": "31", "node": "node-cpu"}, {"worker": 1, "job_id": "31", "node": "node-cpu"}],
        held=[{"job_id": "31", "cpus": 2, "held_s": 20.4}])
    result = audit.dask_worker_problems(shared, {"31": _record("31", cpus=2)}, "cpu")
    assert result.problems == [] and result.rows == [
        ("workers 0,1", "31", "cpu", "node-cpu", "CANCELLED", "2 CPUs", "20.4 of 20 s")]


def test_a_dask_audit_of_a_folder_that_is_no_run_is_one_line(tmp_path):
    from diffscale.errors import DataError

    with pytest.raises(DataError, match=rf"^{tmp_path / 'nope' / 'timing.json'}: missing \(expected an embedding "
                                        r"run's folder, which holds timing.json\)$"):
        audit.audit_dask_run(tmp_path / "nope", "cpu", "sacct")
    (tmp_path / "timing.json").write_text("{")
    with pytest.raises(DataError, match=r"timing.json: not valid JSON"):
        audit.audit_dask_run(tmp_path, "cpu", "sacct")


def test_what_a_run_says_its_worker_jobs_held_must_agree_with_slurm(tmp_path):
    """The CPUs SLURM allocated, and seconds at most 2 s more than SLURM's elapsed and 30 s less."""
    run = _dask_run(tmp_path, "dask", {}, [1, 1], held=[{"job_id": "31", "cpus": 2, "held_s": 22.5}])
    records = {"31": _record("31"), "32": _record("32", elapsed=60.0)}
    assert audit.dask_worker_problems(run, records, "cpu").problems == [
        f"{run}: worker job 31 held 2 CPUs by the run's record, 1 by SLURM's",
        f"{run}: worker job 31 held it 22.5 s by the run's record, 20 s by SLURM's (at most 30 s less, 2 s more)",
        f"{run}: worker job 32: the run recorded nothing of what it held (backend_info.jobs)"]
    far = _dask_run(tmp_path, "far", {}, [1, 1])  # 18.5 and 19 s held, SLURM says 60 s
    assert [p.split(": ", 1)[1] for p in audit.dask_worker_problems(far, {j: _record(j, elapsed=60.0) for j in (
        "31", "32")}, "cpu").problems] == [
        f"worker job {j} held it {s} s by the run's record, 60 s by SLURM's (at most 30 s less, 2 s more)"
        for j, s in (("31", 18.5), ("32", 19.0))]
    # a source that does not say (an older sacct format): nothing to compare, nothing wrong
    assert audit.dask_worker_problems(far, {j: _record(j, cpus=None, elapsed=None) for j in ("31", "32")},
                                      "cpu").problems == []
    unknown = _dask_run(tmp_path, "unknown", {}, [1, 1])
    timing = json.loads((unknown / "timing.json").read_text())
    timing["backend_info"]["job_cpu_s"] = None
    (unknown / "timing.json").write_text(json.dumps(timing))
    assert audit.dask_worker_problems(unknown, {j: _record(j) for j in ("31", "32")}, "cpu").problems == [
        f"{unknown}: the run could not total what its worker jobs held (backend_info.job_cpu_s is null), so the "
        "report cannot bill them"]
    # a run from before diffscale recorded it is audited as before
    older = _dask_run(tmp_path, "older", {}, [1, 1])
    timing = json.loads((older / "timing.json").read_text())
    for key in ("jobs", "job_cpus", "job_cpu_s"):
        del timing["backend_info"][key]
    (older / "timing.json").write_text(json.dumps(timing))
    assert audit.dask_worker_problems(older, {j: _record(j, elapsed=99.0) for j in ("31", "32")}, "cpu").problems == []


def test_dask_worker_jobs_elsewhere_running_or_unreported_are_caught(tmp_path):
    run = _dask_run(tmp_path, "dask", {}, [1, 1], job_ids=("31", "32", "33"))
    records = {"31": _record("31", partition="a40"), "32": _record("32", state="RUNNING", node="node-x"),
               "33": _record("33")}
    problems = audit.dask_worker_problems(run, records, "cpu").problems
    assert problems == [
        f"{run}: worker job 31 ran in partition 'a40', not 'cpu'",
        f"{run}: worker job 32 is RUNNING, not ended (COMPLETED, CANCELLED)",
        f"{run}: worker job 32 ran on 'node-x' by SLURM's record, its worker 1 said 'node-cpu'",
        f"{run}: worker job 33 was submitted but no worker reported from it"]
    assert audit.dask_worker_problems(run, {}, "cpu").problems[0] == f"{run}: SLURM has no record of worker job 31"
    local = _dask_run(tmp_path, "local", {}, [1, 1])
    info = json.loads((local / "timing.json").read_text())
    info["backend_info"] = {"cluster": "local"}
    (local / "timing.json").write_text(json.dumps(info))
    assert audit.dask_worker_problems(local, {}, "cpu").problems == [
        f"{local}: backend_info.cluster is 'local', not 'slurm'"]


def _embedded(run, cuts, latents):
    """Write `latents` into `run` as real shards cut at `cuts` (items per shard), as embed.stage would."""
    from diffscale import shards

    entries, start = [], 0
    for number, size in enumerate(cuts):
        part = {"latents": latents[start : start + size], "ids": torch.arange(start, start + size)}
        entries.append(shards.write_shard(run / shards.shard_name(number), part))
        start += size
    shards.write_index(run, "images", entries, shards.tensor_specs(part))
    return run


def test_embeddings_must_equal_the_reference_item_by_item_at_the_same_thread_count(tmp_path):
    latents = torch.randn(6, 4, 2, 2)
    reference = _embedded(_dask_run(tmp_path, "serial", {}, [1]), [4, 2], latents)
    # 2 workers cut their shards differently (2+1 and 2+1 items): the same embeddings all the same
    assert audit.same_embeddings_problems(_embedded(_dask_run(tmp_path, "same", {}, [1, 1]), [2, 1, 2, 1], latents),
                                          reference) == []
    changed = latents.clone()
    changed[4, 0, 0, 0] += 1e-6
    other = _embedded(_dask_run(tmp_path, "other", {}, [2, 2]), [3, 3], changed)
    assert audit.same_embeddings_problems(other, reference) == [
        f"{other}: threads per worker [2], the reference ran with [1]: not comparable bitwise",
        f"{other}: 1 of 6 items differ from {reference}'s (the first is item 4 in manifest order)"]
    fewer = _embedded(_dask_run(tmp_path, "fewer", {}, [1, 1]), [3, 2], latents[:5])
    assert audit.same_embeddings_problems(fewer, reference) == [
        f"{fewer}: 5 items of ids, latents, the reference has 6 of ids, latents"]
    (other / "shard-00001.safetensors").write_bytes(b"cut short")
    assert audit.same_embeddings_problems(other, reference)[1] == (
        f"{other / 'shard-00001.safetensors'}: checksum differs from index.json, the shard is corrupt; "
        "run the embedding stage again")


def _audit_cli(repo_root, *args, env=None):
    return subprocess.run([sys.executable, str(repo_root / "scripts" / "slurm_audit.py"), *args], cwd=repo_root,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_run_with_a_missing_log_is_one_line(repo_root, tmp_path):
    proc = _audit_cli(repo_root, "run", "--log", str(tmp_path / "nope.log"), "--configfile", "config.yaml",
                      "--save-ids", str(tmp_path / "ids.txt"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --log: {tmp_path / 'nope.log'}: no such file (expected Snakemake's output of the run)"]
    assert proc.stdout == "" and not (tmp_path / "ids.txt").exists()


def test_rerun_with_missing_known_ids_is_one_line(repo_root, tmp_path):
    (tmp_path / "run2.log").write_text("Nothing to be done\n")
    proc = _audit_cli(repo_root, "rerun", "--log", str(tmp_path / "run2.log"), "--known-ids", str(tmp_path / "nope.txt"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --known-ids: {tmp_path / 'nope.txt'}: no such file (expected the SLURM job ids saved by "
        "`run --save-ids`)"]
    assert proc.stdout == ""


def test_a_folder_or_non_utf8_file_given_as_an_audit_input_is_one_line(repo_root, tmp_path):
    (tmp_path / "ids.txt").write_text("4711\n")
    proc = _audit_cli(repo_root, "rerun", "--log", str(tmp_path), "--known-ids", str(tmp_path / "ids.txt"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --log: {tmp_path}: expected the Snakemake log file, found a folder"]
    (tmp_path / "ids.txt").write_bytes(b"4711\n\xff\xfe\n")
    (tmp_path / "run2.log").write_text("Nothing to be done\n")
    proc = _audit_cli(repo_root, "rerun", "--log", str(tmp_path / "run2.log"), "--known-ids", str(tmp_path / "ids.txt"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --known-ids: {tmp_path / 'ids.txt'}: not UTF-8 text (expected the job id list file)"]


def test_records_from_a_slurm_command_that_is_not_installed_is_one_line(repo_root, tmp_path):
    (tmp_path / "run2.log").write_text("Nothing to be done\n")
    (tmp_path / "ids.txt").write_text("19\n")
    (tmp_path / "bin").mkdir()  # a PATH without SLURM's commands
    proc = _audit_cli(repo_root, "rerun", "--log", str(tmp_path / "run2.log"), "--known-ids", str(tmp_path / "ids.txt"),
                      "--records", "scontrol", env={"PATH": str(tmp_path / "bin")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --records scontrol: scontrol is not installed here (not on PATH); run the audit where SLURM's "
        "commands are"]
    assert proc.stdout == ""


def test_a_slurm_command_that_cannot_reach_the_cluster_is_one_line(repo_root, tmp_path):
    (tmp_path / "run.log").write_text(RUN_LOG)
    bin_dir = tmp_path / "bin"  # a sacct installed on a host with no controller to ask
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Problem talking to the database: Connection "
                                   "refused' >&2\nexit 1\n")
    (bin_dir / "sacct").chmod(0o755)
    proc = _audit_cli(repo_root, "run", "--log", str(tmp_path / "run.log"), "--configfile",
                      str(repo_root / "config.yaml"), env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: --records sacct: sacct failed (sacct: error: Problem talking to the database: Connection refused); "
        "run the audit on a host of the cluster that ran the jobs"]


def test_a_log_without_slurm_jobs_is_one_line_before_asking_slurm(repo_root, tmp_path):
    local = "\n".join(line for line in RUN_LOG.splitlines() if "submitted with SLURM jobid" not in line)
    (tmp_path / "local.log").write_text(local)
    proc = _audit_cli(repo_root, "run", "--log", str(tmp_path / "local.log"), "--configfile",
                      str(repo_root / "config.yaml"), env={"PATH": str(tmp_path)})  # no SLURM command is run
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --log: {tmp_path / 'local.log'}: no job of this run was submitted to SLURM (expected Snakemake's "
        "output of a run through the SLURM executor, not a dry run or a local run)"]
