"""The dask backend's workers as SLURM jobs, through dask-jobqueue's SLURMCluster
(`embed.dask.cluster: slurm`).

The config's `embed.dask.slurm` becomes SLURMCluster's keyword arguments (`cluster_kwargs`):

  partition, account          -> queue, account           (#SBATCH -p, -A)
  cores, memory, walltime     -> job_cpu, memory, walltime (--cpus-per-task, --mem, -t), per job;
                                 walltime null: the time the submitting job has left (worker_walltime)
  processes                   -> dask worker processes per job: workers / processes jobs
  python, prologue            -> the worker jobs' interpreter, and shell lines run before it
  directives, interface, log_directory, local_directory -> job_extra_directives, ...
  options                     -> any other SLURMCluster keyword, verbatim

Threads: every dask worker process runs one task thread (dask's --nthreads is cores/processes
of SLURMCluster's `cores`, set here to `processes`), while SLURM gives the job `cores` CPUs. Under
the pinned policy each process computes with cores / processes torch threads; under naive, with
the backend's default. Either way the worker sets and records it from inside (worker.py).

Life cycle (SlurmDaskBackend): `sbatch --test-only` (a request SLURM refuses fails at once) ->
submit -> wait until every worker has joined, at most embed.dask.timeout_s, failing early when a
job ends before its worker joined, and on time-out with one line naming the partition and each
job's squeue state and reason -> run -> close: the cluster's own scancel of each job, then
`scancel --name` of the cluster's unique job name, which also catches a job whose id never came
back. A SIGTERM (SLURM or Snakemake cancelling the submitting job) cancels the jobs first, then
exits with 143 through the same path. A submitting process killed with SIGKILL cannot clean up:
its workers exit on their own once they lose the scheduler (dask-jobqueue's death_timeout, 60 s by
default), which ends their jobs.

Timing: the first prologue line notes when each job started. `queue_wait_s` runs from the
request (scale) to the start of the last worker job, `worker_start_s` from there until every
worker had joined (interpreter, imports, connection). The stage does not charge queue_wait_s to
the backend's wall time; it is recorded beside it, since a user pays it.

Provenance: per worker, the SLURM job id, node, partition and CPUs, read inside the worker
(`backend_info.workers` of timing.json and run.json). What the worker jobs held, for the table's
CPUs and the report's cost (`held_by_jobs`): each job once, its CPUs and the seconds from its start
to the run's close, which cancels it (`backend_info.jobs`, `job_cpus`, `job_cpu_s`).
"""

from __future__ import annotations

import copy
import dataclasses
import getpass
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from diffscale import provenance
from diffscale.embed.backends import DaskBackend
from diffscale.embed.worker import WorkerFailed, WorkerTask
from diffscale.errors import ConfigError

STARTED_ENV = "DIFFSCALE_JOB_STARTED"
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
FALLBACK_WALLTIME = "01:00:00"  # worker jobs submitted from outside a SLURM job, with no walltime set
SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$")  # squeue's %L, which sbatch -t also reads
POLL_S = 2.0  # how often the start-up wait looks at the queue
REPO_ROOT = Path(__file__).resolve().parents[2]


def with_defaults(slurm: dict | None) -> dict:
    """embed.dask.slurm with the schema's defaults (the schema owns them)."""
    from diffscale.config import fill_defaults, schema

    root = schema()
    node = root["properties"]["embed"]["properties"]["dask"]["properties"]["slurm"]
    filled = copy.deepcopy(slurm or {})
    fill_defaults(filled, node, root)
    unknown = sorted(set(filled) - set(node["properties"]))
    if unknown:
        raise ConfigError(f"embed.dask.slurm.{unknown[0]}: unknown key {unknown[0]!r} (allowed: "
                          f"{', '.join(sorted(node['properties']))}; other SLURMCluster arguments go under options)")
    return filled


def threads_per_process(slurm: dict, policy_threads: int | None) -> int | None:
    """Torch threads of each worker process: the job's CPUs over its processes when pinned
    (policy_threads is not None), the backend's default when naive."""
    if policy_threads is None:
        return None
    return max(1, slurm["cores"] // slurm["processes"])


def cluster_kwargs(slurm: dict, job_name: str) -> dict:
    """SLURMCluster's keyword arguments for embed.dask.slurm (defaults filled)."""
    pythonpath = f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"
    kwargs = {
        "queue": slurm["partition"],
        "account": slurm["account"],
        "job_cpu": slurm["cores"],  # --cpus-per-task of each job
        "cores": slurm["processes"],  # dask's threads per job: one task thread per process
        "processes": slurm["processes"],
        "memory": slurm["memory"],
        "walltime": slurm["walltime"] or worker_walltime(),
        "python": slurm["python"] or sys.executable,
        "job_name": job_name,
        # first: when the job started (queue wait ends); the workers unpickle diffscale's tasks
        "job_script_prologue": [f"export {STARTED_ENV}=$(date +%s.%N)", pythonpath, *slurm["prologue"]],
        "job_extra_directives": list(slurm["directives"]),
        "interface": slurm["interface"],
        "log_directory": slurm["log_directory"],
        "local_directory": slurm["local_directory"],
        "scheduler_options": {"dashboard_address": ":0"},  # any free port: runs on one node never collide
    }
    return {**kwargs, **slurm["options"]}


def worker_walltime() -> str:
    """The worker jobs' time limit when embed.dask.slurm.walltime is unset: the time the submitting
    SLURM job has left (squeue's %L; the workers are of no use once it ends, and a retry's longer
    limit reaches them too), else FALLBACK_WALLTIME (outside SLURM, or a job without a limit)."""
    job = os.environ.get("SLURM_JOB_ID")
    out = _run(["squeue", "-h", "-j", job, "-o", "%L"]) if job else None
    left = out.stdout.strip() if out is not None and out.returncode == 0 else ""
    if not SLURM_TIME.match(left) or not any(c in "123456789" for c in left):  # 0:00 would ask for no limit
        return FALLBACK_WALLTIME
    return left


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str, str]] | None:
    """{job id: (state, reason, partition)} from squeue, every state; None when squeue fails. A job
    SLURM no longer lists is missing from the answer."""
    if not job_ids:
        return {}
    out = _run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r|%P"])
    if out is None or (out.returncode != 0 and "Invalid job id" not in out.stderr):
        return None
    found = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            found[parts[0]] = (parts[1], parts[2], parts[3])
    return found


def check_submission(job_script: str, partition: str | None) -> None:
    """Ask SLURM whether it would take a worker job (`sbatch --test-only`) before submitting any:
    a request it refuses (too many CPUs, unknown partition or account) is one line at once, not a
    time-out later."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="diffscale-dask-") as script:
        script.write(job_script)
        script.flush()
        out = _run(["sbatch", "--test-only", script.name])
    if out is None:
        raise ConfigError("embed.dask.cluster: slurm needs sbatch, which is not on this machine's PATH "
                          "(run on a node of the SLURM cluster)")
    if out.returncode != 0:
        where = f"partition {partition}" if partition else "the default partition"
        lines = [line.strip() for line in out.stderr.splitlines() if line.strip()] or [f"exit code {out.returncode}"]
        raise ConfigError(f"embed.dask.slurm: SLURM refuses the worker job ({where}): {lines[-1]}")


def describe_jobs(job_ids: list[str], states: dict | None) -> str:
    """'job 12 PENDING (Resources), job 13 RUNNING' — what the queue says about each job."""
    if not job_ids:
        return "no job was submitted"
    if states is None:
        return "jobs " + ", ".join(job_ids) + " (squeue did not answer)"
    parts = []
    for job in job_ids:
        state, reason, _ = states.get(job, ("not in the queue", "None", ""))
        parts.append(f"job {job} {state}" + (f" ({reason})" if reason and reason != "None" else ""))
    return ", ".join(parts)


def timeout_message(label: str, joined: int, workers: int, timeout: float, partition: str | None,
                    job_ids: list[str], states: dict | None) -> str:
    where = f"partition {partition}" if partition else "the default partition"
    return (f"{label}: dask on SLURM: {joined} of {workers} workers joined within {timeout:g} s "
            f"(embed.dask.timeout_s); {where}: {describe_jobs(job_ids, states)}")


def ended_message(label: str, job: str, state: str, partition: str | None, log_directory: str | None) -> str:
    where = f"partition {partition}" if partition else "the default partition"
    logs = f"; its log is in {log_directory}" if log_directory else ""
    return f"{label}: dask on SLURM: worker job {job} in {where} ended ({state}) before its worker joined{logs}"


def held_by_jobs(workers: list[dict], jobs: int, ended_at: float) -> dict:
    """What the worker jobs held: each job once (its `processes` workers share it) with its
    partition, the CPUs SLURM allocated it (SLURM_CPUS_ON_NODE: a node that allocates whole cores
    gives 2 where 1 was asked; else what it asked) and the seconds from its start (the prologue's
    note) to `ended_at`; and the totals, None unless all `jobs` jobs said their CPUs and start (a
    total over some of them would understate what the run held)."""
    held: dict[str, dict] = {}
    for w in workers:
        if not w.get("job_id"):
            continue
        started, cpus = w.get("job_started_at"), w.get("cpus_on_node") or w.get("cpus_per_task")
        held.setdefault(str(w["job_id"]), {
            "job_id": str(w["job_id"]), "partition": w.get("partition"), "node": w.get("node"),
            "cpus": int(cpus) if cpus else None,
            "held_s": max(0.0, ended_at - float(started)) if started else None})
    found = list(held.values())
    complete = len(found) == jobs and all(j["cpus"] and j["held_s"] is not None for j in found)
    return {"jobs": found,
            "job_cpus": sum(j["cpus"] for j in found) if complete else None,
            "job_cpu_s": sum(j["cpus"] * j["held_s"] for j in found) if complete else None}


def identity() -> dict:
    """Run inside each dask worker (client.run): who and where it is, as SLURM started it."""
    import os
    import socket

    started = os.environ.get(STARTED_ENV)
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm": provenance.slurm() or {},
            "job_started_at": float(started) if started else None, "affinity": provenance.usable_cpus()}


class _CancelOnSigterm:
    """While installed, SIGTERM cancels the worker jobs at once, then exits (143) through the
    normal way out, so the backend closes too. Only the main thread can install handlers."""

    def __init__(self, cancel):
        self.cancel = cancel
        self.previous = None
        self.fired = False

    def install(self) -> "_CancelOnSigterm":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.cancel()
        if not self.fired:
            self.fired = True
            raise SystemExit(128 + signum)

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


def import_cluster():
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError("embed.dask.cluster: slurm needs dask-jobqueue, which is not installed "
                          "(pip install 'diffscale[cluster]'; it is pinned in envs/embed.yaml)") from None
    return SLURMCluster


class SlurmDaskBackend(DaskBackend):
    """DaskBackend whose workers are SLURM jobs. `cluster_cls` is SLURMCluster (tests pass a fake)."""

    def __init__(self, workers: int, dask_settings: dict, threads: int | None, label: str, cluster_cls=None):
        self.cluster_cls = cluster_cls
        self.slurm = with_defaults((dask_settings or {}).get("slurm"))
        self.job_name = f"diffscale-{label or 'embed'}-{secrets.token_hex(3)}"
        self.job_ids: list[str] = []
        self.identities: dict[str, dict] = {}
        self.sigterm = _CancelOnSigterm(self.cancel_jobs)
        super().__init__(workers, dask_settings, threads, label)

    def _start(self) -> None:
        import dask
        from distributed import Client

        processes = self.slurm["processes"]
        if self.workers % processes:
            raise ConfigError(f"embed.dask.slurm.processes: {processes} processes per job do not divide "
                              f"{self.workers} workers")
        cluster_cls = self.cluster_cls or import_cluster()
        began = time.time()
        self.sigterm.install()
        try:
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                try:
                    self.cluster = cluster_cls(**cluster_kwargs(self.slurm, self.job_name))
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"embed.dask.slurm: {str(exc).strip().splitlines()[0]}") from None
                check_submission(self.cluster.job_script(), self.slurm["partition"])
                requested = time.time()
                self.cluster.scale(n=self.workers)
                self.client = Client(self.cluster, timeout=self.settings["timeout_s"])
            self._wait(requested + self.settings["timeout_s"])
            joined = time.time()
            self.identities = self.client.run(identity)
        except BaseException:
            self.close()
            raise
        starts = [i["job_started_at"] for i in self.identities.values() if i["job_started_at"]]
        last_start = max(starts) if starts else requested
        self.info = {
            "cluster": "slurm", "scheduler": self.client.scheduler.address, "job_name": self.job_name,
            "partition": self.slurm["partition"], "job_ids": self.current_job_ids(),
            "processes_per_job": processes, "cpus_per_job": self.slurm["cores"],
            "threads_per_process": threads_per_process(self.slurm, self.threads),
            "scheduler_start_s": requested - began,
            "queue_wait_s": max(0.0, last_start - requested),
            "worker_start_s": max(0.0, joined - last_start),
            "cluster_start_s": joined - began,
            "job_script": self.cluster.job_script(),  # each job's, but for the worker's --name
        }

    def current_job_ids(self) -> list[str]:
        """Ids of the jobs submitted so far (the cluster's loop thread fills them in)."""
        if self.cluster is None:
            return self.job_ids
        for _ in range(3):
            try:
                jobs = list(self.cluster.workers.values())
                break
            except RuntimeError:  # changed size during iteration
                continue
        else:
            jobs = []
        for job in jobs:
            job_id = getattr(job, "job_id", None)
            if job_id and str(job_id) not in self.job_ids:
                self.job_ids.append(str(job_id))
        return self.job_ids

    def _wait(self, deadline: float) -> None:
        """Until every worker has joined; a job that ended, or the deadline, fails the run."""
        while True:
            try:
                self.client.wait_for_workers(self.workers, timeout=max(0.1, min(POLL_S, deadline - time.time())))
                return
            except TimeoutError as exc:
                joined = getattr(exc, "available_workers", 0)
            job_ids = self.current_job_ids()
            states = queue_states(job_ids)
            for job in job_ids if states is not None else []:
                state = states.get(job, ("no longer in the queue",))[0]
                if state in ENDED or job not in states:
                    raise WorkerFailed(ended_message(self.label, job, state, self.slurm["partition"],
                                                     self.slurm["log_directory"]))
            if time.time() >= deadline:
                raise WorkerFailed(timeout_message(self.label, joined, self.workers, self.settings["timeout_s"],
                                                   self.slurm["partition"], job_ids, states))

    def run(self, tasks: list[WorkerTask]) -> list[dict]:
        threads = threads_per_process(self.slurm, self.threads)
        tasks = [dataclasses.replace(t, threads=threads) for t in tasks]
        results = super().run(tasks)
        by_process = {(i["host"], i["pid"]): (address, i) for address, i in self.identities.items()}
        workers = []
        for result in results:
            address, ident = by_process.get((result["host"], result["pid"]), (None, {}))
            slurm = ident.get("slurm", {})
            workers.append({"worker": result["worker"], "address": address, "host": result["host"],
                            "pid": result["pid"], "job_id": slurm.get("job_id"), "node": slurm.get("node"),
                            "partition": slurm.get("partition"), "cpus_per_task": slurm.get("cpus_per_task"),
                            "cpus_on_node": slurm.get("cpus_on_node"),
                            "affinity": ident.get("affinity"), "threads": result["threads"],
                            "job_started_at": ident.get("job_started_at")})
        self.info["workers"] = workers
        return results

    def cancel_jobs(self) -> None:
        """scancel every job of this cluster: by id, and by its unique name (ids not yet known)."""
        ids = self.current_job_ids()
        if ids:
            _run(["scancel", *ids])
        _run(["scancel", "--name", self.job_name, "--user", getpass.getuser()])

    def close(self) -> None:
        self.current_job_ids()  # before the cluster object goes
        try:
            super().close()  # the client, then the cluster (dask-jobqueue scancels each job)
        finally:
            cancelled = time.time()  # the jobs end here (SLURM's own record of their end follows the scancel)
            self.cancel_jobs()
            self.sigterm.restore()
            if "workers" in self.info:  # it ran: what its jobs held until they were cancelled
                self.info.update(held_by_jobs(self.info["workers"], self.workers // self.slurm["processes"],
                                              cancelled))
