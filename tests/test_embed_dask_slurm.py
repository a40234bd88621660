"""The dask backend on SLURM (diffscale.embed.dask_slurm), without a cluster: the keyword arguments
SLURMCluster gets for a config (and, where dask-jobqueue is installed, the job script they make),
the one-line errors when workers do not come up, and that every way out cancels the worker jobs.

A fake SLURMCluster stands in for the real one: a LocalCluster with in-process workers (or none,
for the time-out), and scancel/squeue are recorded or answered by the test. The real thing runs in
CI on the SLURM testbed (.ci/slurm/run-dask.sh).
"""

from __future__ import annotations

import copy
import getpass
import os
import signal
import socket
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest
from distributed import LocalCluster

from diffscale.config import load_config, validate_config
from diffscale.embed import backends, dask_slurm
from diffscale.embed.dask_slurm import SlurmDaskBackend, cluster_kwargs, threads_per_process, with_defaults
from diffscale.embed.worker import WorkerFailed, WorkerTask
from diffscale.errors import ConfigError

CONFIG = {"partition": "cpu", "account": "lab", "cores": 4, "processes": 2, "memory": "8GB",
          "walltime": "00:20:00", "python": "/envs/embed/bin/python", "prologue": ["module load gcc"],
          "directives": ["--qos=short"], "options": {"death_timeout": 30}}


def test_cluster_kwargs_for_a_config():
    slurm = with_defaults(CONFIG)
    kwargs = cluster_kwargs(slurm, "diffscale-run-abc")
    assert {k: kwargs[k] for k in ("queue", "account", "job_cpu", "cores", "processes", "memory", "walltime",
                                   "python", "job_name", "job_extra_directives", "death_timeout")} == {
        "queue": "cpu", "account": "lab", "job_cpu": 4, "cores": 2, "processes": 2, "memory": "8GB",
        "walltime": "00:20:00", "python": "/envs/embed/bin/python", "job_name": "diffscale-run-abc",
        "job_extra_directives": ["--qos=short"], "death_timeout": 30}
    prologue = kwargs["job_script_prologue"]
    assert prologue[0] == f"export {dask_slurm.STARTED_ENV}=$(date +%s.%N)"  # first: the queue wait ends
    assert prologue[1].startswith(f"export PYTHONPATH={dask_slurm.REPO_ROOT}") and prologue[2:] == ["module load gcc"]
    assert kwargs["scheduler_options"] == {"dashboard_address": ":0"}
    assert kwargs["log_directory"] == "results/logs/embed/dask-slurm"  # the schema's default
    # pinned: each of the job's 2 processes computes with 4 / 2 threads; naive: the default
    assert threads_per_process(slurm, 1) == 2 and threads_per_process(slurm, None) is None


def test_defaults_are_the_schemas_and_python_is_this_interpreter(monkeypatch):
    import sys

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # submitted from outside a SLURM job
    kwargs = cluster_kwargs(with_defaults({}), "n")
    assert (kwargs["queue"], kwargs["job_cpu"], kwargs["cores"], kwargs["processes"]) == (None, 1, 1, 1)
    assert (kwargs["memory"], kwargs["walltime"], kwargs["python"]) == ("2GB", "01:00:00", sys.executable)


@pytest.mark.parametrize("squeue_says, walltime", [
    ("1-02:03:04\n", "1-02:03:04"), ("42:10", "42:10"), ("UNLIMITED", "01:00:00"), ("", "01:00:00"),
    ("0:00", "01:00:00")])  # sbatch -t 0 would mean no limit
def test_unset_walltime_is_what_the_submitting_job_has_left(monkeypatch, squeue_says, walltime):
    asked = []

    def squeue(cmd, timeout=30):
        asked.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, squeue_says, "")

    monkeypatch.setenv("SLURM_JOB_ID", "812")
    monkeypatch.setattr(dask_slurm, "_run", squeue)
    assert cluster_kwargs(with_defaults({}), "n")["walltime"] == walltime
    assert asked == [["squeue", "-h", "-j", "812", "-o", "%L"]]
    assert cluster_kwargs(with_defaults({"walltime": "00:30:00"}), "n")["walltime"] == "00:30:00"  # set: as set


def test_the_job_script_dask_jobqueue_writes(tmp_path):
    jobqueue = pytest.importorskip("dask_jobqueue.slurm")
    kwargs = cluster_kwargs(with_defaults({**CONFIG, "log_directory": str(tmp_path)}), "diffscale-run-abc")
    kwargs.pop("scheduler_options")  # the cluster's, not the job's
    script = jobqueue.SLURMJob(scheduler="tcp://10.0.0.1:8786", name="w", **kwargs).job_script()
    for line in ("#SBATCH -J diffscale-run-abc", "#SBATCH -p cpu", "#SBATCH -A lab", "#SBATCH --cpus-per-task=4",
                 "#SBATCH -t 00:20:00", "#SBATCH --qos=short", "module load gcc"):
        assert line in script.splitlines(), line
    command = script.strip().splitlines()[-1]
    assert command.startswith("/envs/embed/bin/python -m distributed.cli.dask_worker tcp://10.0.0.1:8786")
    assert "--nthreads 1" in command and "--nworkers 2" in command and "--death-timeout 30" in command


def test_config_keys_are_checked(repo_root):
    cfg = load_config(repo_root / "config.yaml")
    bad = copy.deepcopy(cfg)
    bad["embed"]["dask"] = {"cluster": "slurm", "slurm": {"queue": "cpu"}}
    with pytest.raises(ConfigError, match=r"embed.dask.slurm.queue: unknown key 'queue' \(allowed: account, cores"):
        validate_config(bad)
    with pytest.raises(ConfigError, match=r"embed.dask.slurm.queue: unknown key 'queue' .*other SLURMCluster "
                                          r"arguments go under options\)$"):
        with_defaults({"queue": "cpu"})  # a --settings slice that skipped validation
    ok = copy.deepcopy(cfg)
    ok["embed"]["dask"] = {"cluster": "slurm", "slurm": CONFIG}
    assert validate_config(ok)["embed"]["dask"]["slurm"]["log_directory"] == "results/logs/embed/dask-slurm"


def test_error_lines():
    states = {"101": ("PENDING", "Resources", "cpu"), "102": ("RUNNING", "None", "cpu")}
    assert dask_slurm.timeout_message("dask-pinned-w2", 1, 2, 30, "cpu", ["101", "102"], states) == (
        "dask-pinned-w2: dask on SLURM: 1 of 2 workers joined within 30 s (embed.dask.timeout_s); "
        "partition cpu: job 101 PENDING (Resources), job 102 RUNNING")
    assert dask_slurm.describe_jobs(["7"], {}) == "job 7 not in the queue"
    assert dask_slurm.describe_jobs(["7", "8"], None) == "jobs 7, 8 (squeue did not answer)"
    assert dask_slurm.describe_jobs([], {}) == "no job was submitted"
    assert dask_slurm.ended_message("r", "9", "FAILED", None, "logs/x") == (
        "r: dask on SLURM: worker job 9 in the default partition ended (FAILED) before its worker joined; "
        "its log is in logs/x")


# --- the backend's life cycle, with a fake SLURMCluster ------------------------------------------

class FakeSLURMCluster(LocalCluster):
    """Records its keyword arguments and close(); its workers are threads of this process, started
    on scale() only when `join` (otherwise no worker ever joins, as with a job stuck in the queue)."""

    made: list = []
    log: list = []  # shared with the scancel record, so the order of events shows

    def __init__(self, join: bool, **kwargs):
        self.kwargs, self.join, self.closed = kwargs, join, False
        FakeSLURMCluster.made.append(self)
        super().__init__(n_workers=0, processes=False, threads_per_worker=1, dashboard_address=":0")

    def scale(self, n=0, **kwargs):
        if self.join:
            super().scale(n, **kwargs)

    def job_script(self):
        return "#!/usr/bin/env bash\n#SBATCH -p fake\n"

    def close(self, *args, **kwargs):
        if not self.closed:
            self.closed = True
            FakeSLURMCluster.log.append(["close"])
        return super().close(*args, **kwargs)


# what `sbatch --test-only` answers: (exit code, stderr); a test may change it
SBATCH_TEST = {"answer": (0, "sbatch: Job 100 to start at 2026-12-04T17:00:00 using 1 processors on nodes node-cpu")}


@pytest.fixture
def slurm_calls(monkeypatch):
    """scancel calls, recorded; squeue answers from the second value returned, sbatch --test-only
    from SBATCH_TEST."""
    calls = []
    calls_queue: dict = {}

    def fake_run(cmd, timeout=30):
        if cmd[:2] == ["sbatch", "--test-only"]:
            assert "#SBATCH -p fake" in Path(cmd[2]).read_text()  # the cluster's job script
            code, stderr = SBATCH_TEST["answer"]
            return subprocess.CompletedProcess(cmd, code, "", stderr)
        calls.append(cmd)
        return None

    monkeypatch.setattr(dask_slurm, "_run", fake_run)
    monkeypatch.setattr(dask_slurm, "queue_states", lambda ids: {i: calls_queue[i] for i in ids if i in calls_queue})
    monkeypatch.setattr(SlurmDaskBackend, "current_job_ids", lambda self: ["101", "102"])
    FakeSLURMCluster.made.clear()
    FakeSLURMCluster.log = calls
    return calls, calls_queue


def _backend(join: bool, workers: int = 2, timeout_s: float = 60, **slurm) -> SlurmDaskBackend:
    settings = {"cluster": "slurm", "timeout_s": timeout_s, "slurm": {"partition": "cpu", **slurm}}
    return SlurmDaskBackend(workers, settings, threads=1, label="dask-pinned-w2",
                            cluster_cls=partial(FakeSLURMCluster, join))


def _cancelled(calls, job_name) -> bool:
    return ["scancel", "101", "102"] in calls and ["scancel", "--name", job_name, "--user", getpass.getuser()] in calls


def test_time_out_names_partition_jobs_and_reasons_and_cancels(slurm_calls):
    calls, queue = slurm_calls
    queue.update({"101": ("PENDING", "Resources", "cpu"), "102": ("PENDING", "Priority", "cpu")})
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(WorkerFailed) as caught:
        _backend(join=False, timeout_s=1)
    assert str(caught.value) == ("dask-pinned-w2: dask on SLURM: 0 of 2 workers joined within 1 s "
                                 "(embed.dask.timeout_s); partition cpu: job 101 PENDING (Resources), "
                                 "job 102 PENDING (Priority)")
    cluster = FakeSLURMCluster.made[0]
    assert cluster.closed and cluster.kwargs["queue"] == "cpu"
    job_name = cluster.kwargs["job_name"]
    assert job_name.startswith("diffscale-dask-pinned-w2-") and _cancelled(calls, job_name)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_job_that_ends_before_its_worker_joins_fails_at_once(slurm_calls):
    calls, queue = slurm_calls
    queue.update({"101": ("RUNNING", "None", "cpu"), "102": ("FAILED", "NonZeroExitCode", "cpu")})
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"^dask-pinned-w2: dask on SLURM: worker job 102 in partition cpu "
                                           r"ended \(FAILED\) before its worker joined; its log is in results/logs"):
        _backend(join=False, timeout_s=60)
    assert time.monotonic() - started < 30  # not the 60 s time-out
    assert FakeSLURMCluster.made[0].closed and _cancelled(calls, FakeSLURMCluster.made[0].kwargs["job_name"])


def _fake_worker(task: WorkerTask) -> dict:
    import torch

    from diffscale.embed import threads

    threads.apply(task.threads)  # as run_worker does: set inside the worker, then recorded
    if task.worker == 1 and task.fault:
        raise RuntimeError("injected")
    return {"worker": task.worker, "host": socket.gethostname(), "pid": os.getpid(),
            "threads": torch.get_num_threads()}


def _tasks(tmp_path, fault=None):
    return [WorkerTask(run="dask-pinned-w2", backend="dask", worker=k, shards=(), out_dir=str(tmp_path),
                       settings={}, device="cpu", threads=1, fault=fault) for k in range(2)]


def test_workers_record_their_slurm_job_and_threads_and_jobs_end_with_the_run(slurm_calls, monkeypatch, tmp_path):
    calls, _ = slurm_calls
    monkeypatch.setattr(backends, "run_worker", _fake_worker)
    # what SLURM puts in a job's environment (the in-process workers read this one)
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    monkeypatch.setenv("SLURMD_NODENAME", "node-cpu")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "cpu")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    started = time.time()
    monkeypatch.setenv(dask_slurm.STARTED_ENV, f"{started:.6f}")
    with _backend(join=True, cores=3) as backend:  # pinned: 3 CPUs per job, 1 process -> 3 threads
        results = backend.run(_tasks(tmp_path))
        info = backend.info
        assert not [call for call in calls if call[0] == "scancel"]  # nothing cancelled while running
        assert "jobs" not in info  # what the jobs held is known when they end
    held = info["jobs"]  # after close: the in-process workers both said job 101
    assert [(j["job_id"], j["partition"], j["node"], j["cpus"]) for j in held] == [("101", "cpu", "node-cpu", 3)]
    assert 0 <= held[0]["held_s"] <= time.time() - started
    assert info["job_cpus"] is None and info["job_cpu_s"] is None  # 1 of the 2 jobs said: no total
    assert [r["threads"] for r in results] == [3, 3]
    assert info["cluster"] == "slurm" and info["threads_per_process"] == 3 and info["cpus_per_job"] == 3
    assert [(w["worker"], w["job_id"], w["node"], w["threads"]) for w in info["workers"]] == [
        (0, "101", "node-cpu", 3), (1, "101", "node-cpu", 3)]
    assert 0 <= info["queue_wait_s"] < info["cluster_start_s"] and info["worker_start_s"] >= 0
    assert FakeSLURMCluster.made[0].closed and _cancelled(calls, info["job_name"])


def test_what_the_worker_jobs_held_counts_each_job_once():
    """Two processes per job share it; each job's CPUs for the seconds from its start to the end."""
    def worker(k, job, cpus, started):
        return {"worker": k, "job_id": job, "partition": "cpu", "node": f"n{job}", "cpus_per_task": cpus,
                "job_started_at": started}

    workers = [worker(0, "7", "2", 100.0), worker(1, "7", "2", 100.0), worker(2, "8", "2", 130.0),
               worker(3, "8", "2", 130.0)]
    held = dask_slurm.held_by_jobs(workers, jobs=2, ended_at=200.0)
    assert held == {"jobs": [{"job_id": "7", "partition": "cpu", "node": "n7", "cpus": 2, "held_s": 100.0},
                             {"job_id": "8", "partition": "cpu", "node": "n8", "cpus": 2, "held_s": 70.0}],
                    "job_cpus": 4, "job_cpu_s": 2 * 100.0 + 2 * 70.0}
    # a total over some of the jobs would understate the run: none when a job is missing or silent
    assert dask_slurm.held_by_jobs(workers[:2], jobs=2, ended_at=200.0)["job_cpu_s"] is None
    assert dask_slurm.held_by_jobs(workers[:2] + [worker(2, "8", None, 130.0)], jobs=2,
                                   ended_at=200.0)["job_cpus"] is None
    assert dask_slurm.held_by_jobs(workers[:2] + [worker(2, "8", "2", None)], jobs=2,
                                   ended_at=200.0)["job_cpu_s"] is None
    # a node that allocates whole cores gives 2 CPUs where 1 was asked: what SLURM allocated is billed
    smt = [{**w, "cpus_per_task": "1", "cpus_on_node": "2"} for w in workers]
    assert dask_slurm.held_by_jobs(smt, jobs=2, ended_at=200.0)["job_cpus"] == 4


def test_a_failing_task_cancels_the_jobs(slurm_calls, monkeypatch, tmp_path):
    calls, _ = slurm_calls
    monkeypatch.setattr(backends, "run_worker", _fake_worker)
    with pytest.raises(RuntimeError, match="injected"):
        with _backend(join=True) as backend:
            backend.run(_tasks(tmp_path, fault=("raise", 0)))
    assert FakeSLURMCluster.made[0].closed and _cancelled(calls, backend.job_name)


def test_sigterm_cancels_the_jobs_then_exits_143(slurm_calls, monkeypatch, tmp_path):
    calls, _ = slurm_calls
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as caught:
        with _backend(join=True) as backend:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
    assert caught.value.code == 143
    # cancelled by the handler at once, before the cluster closed, and again on the way out
    first = calls.index(["scancel", "--name", backend.job_name, "--user", getpass.getuser()])
    assert first < calls.index(["close"]) and calls.count(["scancel", "101", "102"]) == 2
    assert FakeSLURMCluster.made[0].closed and signal.getsignal(signal.SIGTERM) is before


def test_a_job_slurm_refuses_fails_before_any_is_submitted(slurm_calls, monkeypatch):
    calls, _ = slurm_calls
    monkeypatch.setitem(SBATCH_TEST, "answer", (1, "sbatch: error: CPU count per node can not be satisfied\n"
                                                   "sbatch: error: Batch job submission failed: Requested node "
                                                   "configuration is not available\n"))
    with pytest.raises(ConfigError) as caught:
        _backend(join=True, cores=64)
    assert str(caught.value) == ("embed.dask.slurm: SLURM refuses the worker job (partition cpu): sbatch: error: "
                                 "Batch job submission failed: Requested node configuration is not available")
    assert FakeSLURMCluster.made[0].closed and _cancelled(calls, FakeSLURMCluster.made[0].kwargs["job_name"])
    monkeypatch.setattr(dask_slurm, "_run", lambda cmd, timeout=30: None)  # no sbatch on this machine
    with pytest.raises(ConfigError, match=r"^embed.dask.cluster: slurm needs sbatch, which is not on this "):
        _backend(join=True)


def test_processes_must_divide_workers():
    with pytest.raises(ConfigError, match=r"embed.dask.slurm.processes: 2 processes per job do not divide 3 workers"):
        SlurmDaskBackend(3, {"cluster": "slurm", "slurm": {"processes": 2}}, threads=1, label="t",
                         cluster_cls=lambda **kw: pytest.fail("no cluster should start"))


def test_the_stage_shows_the_queue_wait_but_does_not_charge_it(tmp_path, monkeypatch):
    from diffscale.embed import stage
    from embed_data import demo_settings, make_manifest

    fixture = make_manifest(tmp_path / "manifest", n_synthetic=6, n_real=0)

    class Queued(backends.SerialBackend):
        """Starts after 2 s in the queue, as SlurmDaskBackend reports it."""

        def __init__(self, workers):
            super().__init__(workers)
            time.sleep(2.0)
            self.info = {"queue_wait_s": 2.0}

    monkeypatch.setattr(stage, "make_backend", lambda name, workers, **kw: Queued(workers))
    started = time.time()
    timing = stage.run_embedding("text", fixture.manifest, tmp_path / "run", "serial", "pinned", 1,
                                 demo_settings("text"), skip_list=fixture.skipped, cpus=1)
    elapsed = time.time() - started
    assert timing["queue_wait_s"] == 2.0 and 0 <= timing["launch_s"] < 1.0
    assert timing["wall_s"] <= elapsed - 2.0 and timing["startup_s"] <= timing["wall_s"]


def test_a_run_on_slurm_workers_records_the_cpus_and_cpu_seconds_its_jobs_held(tmp_path, monkeypatch):
    """2 workers on jobs of 4 CPUs each: the table's CPUs are 8, not the 2 the name says."""
    from diffscale.embed import stage
    from embed_data import demo_settings, make_manifest

    fixture = make_manifest(tmp_path / "manifest", n_synthetic=6, n_real=0)

    class Held(backends.SerialBackend):
        def close(self):  # as SlurmDaskBackend.close records it
            self.info.update({"cluster": "slurm", "jobs": [], "job_cpus": 8, "job_cpu_s": 123.0})

    monkeypatch.setattr(stage, "make_backend", lambda name, workers, **kw: Held(workers))
    settings = demo_settings("text", "dask", dask={"cluster": "slurm", "slurm": {"cores": 4}})
    timing = stage.run_embedding("text", fixture.manifest, tmp_path / "run", "dask", "pinned", 2, settings,
                                 skip_list=fixture.skipped)
    assert timing["cpus"] == 8 and timing["worker_job_cpu_s"] == 123.0 and timing["processes"] == 2


@pytest.mark.parametrize("cluster, elsewhere", [("slurm", True), ("local", False)])
def test_a_run_whose_workers_are_slurm_jobs_neither_pins_this_job_nor_counts_its_cores(tmp_path, monkeypatch,
                                                                                         cluster, elsewhere):
    """The submitting job only schedules (it asks SLURM for one CPU): with more workers than it has
    cores it is not pinned and not oversubscribed; a local cluster on those cores is."""
    from diffscale.embed import stage
    from diffscale.embed.threads import usable_cores
    from embed_data import demo_settings, make_manifest

    fixture = make_manifest(tmp_path / "manifest", n_synthetic=6, n_real=0)
    monkeypatch.setattr(stage, "make_backend", lambda name, workers, **kw: backends.SerialBackend(workers))
    before, workers = usable_cores(), len(usable_cores()) + 1
    settings = demo_settings("text", "dask", dask={"cluster": cluster, "slurm": {}})
    timing = stage.run_embedding("text", fixture.manifest, tmp_path / cluster, "dask", "pinned", workers, settings,
                                 skip_list=fixture.skipped)
    assert timing["cpus"] == workers and timing["processes"] == workers
    assert timing["oversubscribed"] is not elsewhere
    assert timing["allocation"].get("workers_elsewhere", False) is elsewhere
    assert (timing["physical_cores"] is None) is elsewhere  # their cores are on other nodes
    assert usable_cores() == before
