"""Did every job of a run go where the config's hardware table sends it? Answered from SLURM's own
records, for the CI cluster (.ci/slurm) and for anyone who wants proof from a real cluster.

Three sources, none of them trusted alone:
- Snakemake's output of the run: each job's rule, wildcards and the resources it asked for (the
  job blocks), and the SLURM job id it got ("Job N has been submitted with SLURM jobid M").
- The config: what each job *should* have asked for. With a {hw} wildcard that is exactly
  `diffscale.resources.job_resources` of the job's hardware key, GPUs and workers; without one the
  request must be that of a hardware entry on the same partition (the CPU hardware by default).
- SLURM: where each job actually ran — partition, node, allocated GPUs by model, final state —
  from sacct (accounting) or scontrol (no accounting, while MinJobAge keeps finished jobs).
Nothing here knows the workflow's rule names, so rules added later are audited the same way.

The dask backend's own SLURM jobs (diffscale.embed.dask_slurm) are audited from the run's
timing.json, which names every worker job and the node each worker said it ran on.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from diffscale import resources as hwres
from diffscale import shards
from diffscale.config import validate_config
from diffscale.errors import ConfigError, DataError, HardwareError
from diffscale.hardware import demand
from diffscale.io import read_json, read_text

SACCT_FORMAT = "JobIDRaw,Partition,NodeList,State,AllocTRES,AllocCPUS,ElapsedRaw"
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
JOB_HEADER = re.compile(r"^(local)?rule (\w+):$")
NOTHING_TO_DO = "Nothing to be done"
GPU_KEYS = ("gres", "gpu", "gpu_model")


@dataclass
class PlannedJob:
    """One job as Snakemake printed it: what it asked for, and the SLURM job ids it got (one per
    attempt)."""

    jobid: str
    rule: str
    local: bool
    wildcards: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    slurm_ids: list[str] = field(default_factory=list)
    command: str = ""  # with --printshellcmds; empty for target-only rules such as `all`

    @property
    def label(self) -> str:
        wc = ",".join(f"{k}={v}" for k, v in self.wildcards.items())
        return f"{self.rule}[{wc}]" if wc else self.rule


@dataclass(frozen=True)
class SlurmRecord:
    """Where SLURM ran a job: partition, node, allocated GPUs {model: count}, final state; the CPUs
    it allocated and the seconds it ran, where the source said (None: it did not)."""

    job_id: str
    partition: str
    node: str
    state: str
    gpus: dict[str, int]
    cpus: int | None = None
    elapsed_s: float | None = None


def _pairs(text: str) -> dict[str, str]:
    """'a=1, b=x y' -> {'a': '1', 'b': 'x y'} (Snakemake's wildcards/resources lines)."""
    out = {}
    for item in text.split(", "):
        key, sep, value = item.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_run_log(text: str) -> list[PlannedJob]:
    """The jobs of a Snakemake run (or dry run) from its output, in the order they appear."""
    jobs: dict[str, PlannedJob] = {}
    current: dict | None = None

    def flush() -> None:
        if current and "jobid" in current:
            job = jobs.setdefault(current["jobid"], PlannedJob(current["jobid"], current["rule"], current["local"]))
            # A retried job is printed again: its latest request is the one to check.
            job.wildcards = _pairs(current.get("wildcards", ""))
            job.resources = _pairs(current.get("resources", ""))

    last = None
    for line in text.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            flush()
            current = {"rule": header.group(2), "local": bool(header.group(1))}
            continue
        if current is not None and line.startswith("    ") and ":" in line:
            key, _, value = line.strip().partition(": ")
            current[key.rstrip(":")] = value
            continue
        if current is not None and not line.startswith("    "):
            flush()
            last = jobs.get(current.get("jobid", ""))
            current = None
        if line.startswith("Shell command: ") and last is not None:
            command = line.removeprefix("Shell command: ")
            last.command = "" if command == "None" else command
        submitted = SUBMITTED.search(line)
        if submitted and submitted.group(1) in jobs:
            jobs[submitted.group(1)].slurm_ids.append(submitted.group(2))
    flush()
    return list(jobs.values())


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def requested_gpus(resources: dict) -> tuple[str, int]:
    """(GPU model, count) a job asked for, in either request style; ('', 0) for none."""
    gres = resources.get("gres") or ""
    if gres.startswith("gpu"):
        parts = gres.split(":")
        if len(parts) == 3:
            return parts[1], int(parts[2])
        return "", int(parts[1]) if len(parts) == 2 else 1
    if _int(resources.get("gpu")) > 0 or resources.get("gpu_model"):
        return resources.get("gpu_model") or "", max(1, _int(resources.get("gpu"), 1))
    return "", 0


def request_problems(cfg: dict, job: PlannedJob) -> list[str]:
    """How the job's request differs from what the hardware table says it should be."""
    asked = job.resources
    model, count = requested_gpus(asked)
    gpus = _int(job.wildcards.get("gpus"), count)
    workers = _int(job.wildcards.get("workers"), 1)
    hw = job.wildcards.get("hw")
    if hw is None:
        # No {hw}: the CPU hardware, or another entry on the partition the rule chose.
        partition = asked.get("slurm_partition")
        candidates = [hwres.cpu_hardware(cfg)] + sorted(cfg["hardware"])
        matches = [key for key in candidates if cfg["hardware"][key]["partition"] == partition]
        if not matches:
            return [f"{job.label}: partition {partition!r} is not the partition of any hardware entry"]
        hw = next((key for key in matches if _gpu_request_matches(cfg, key, gpus, asked)), matches[0])
    try:
        backend = job.wildcards.get("backend")  # an embedding scaling run: exactly its CPUs
        cpus = (hwres.scaling_cpus(backend, workers, cfg["embed"]["dask"]["cluster"])
                if backend and "workers" in job.wildcards else None)
        expected = hwres.job_resources(cfg, hw, gpus, workers, cpus=cpus)
    except ConfigError as exc:
        return [f"{job.label}: {exc}"]
    problems = []
    for key in hwres.RESOURCE_KEYS:
        want, got = expected[key], asked.get(key)
        if key == "runtime":
            # the limit of some try: retries multiply it, up to the partition's max_runtime_min
            tries = range(1, _int(got) // want + 2)
            ok = got is not None and _int(got) in {hwres.runtime(hwres.hardware_entry(cfg, hw), k) for k in tries}
        elif key == "cpus_per_task" and cpus is None:
            # only a scaling run's CPUs are exact; a rule may run more processes than the entry's
            # minimum (a DDPM job's DataLoader workers beside its training process)
            ok = _int(got) >= want
        else:
            ok = _plain(want) == _plain(got)
        if not ok:
            problems.append(f"{job.label}: {key} is {got!r}, hardware.{hw} says {want!r}")
    return problems


def _plain(value) -> str:
    """Resource values as Snakemake prints them, unused ones ('', 0, None) as ''."""
    return "" if value in (None, "", 0, "0") else str(value)


def _gpu_request_matches(cfg: dict, hw: str, gpus: int, asked: dict) -> bool:
    try:
        expected = hwres.job_resources(cfg, hw, gpus)
    except ConfigError:
        return False
    return all(_plain(expected[key]) == _plain(asked.get(key)) for key in GPU_KEYS)


def placement_problems(job: PlannedJob, record: SlurmRecord, partition_nodes: dict[str, set[str]]) -> list[str]:
    """How SLURM's record of the job differs from what the job asked for."""
    where = f"{job.label} (SLURM job {record.job_id})"
    problems = []
    partition = job.resources.get("slurm_partition")
    if record.partition != partition:
        problems.append(f"{where}: ran in partition {record.partition!r}, asked for {partition!r}")
    if record.node not in partition_nodes.get(partition or "", set()):
        problems.append(f"{where}: ran on node {record.node!r}, not a node of partition {partition!r}")
    model, count = requested_gpus(job.resources)
    if model and set(record.gpus) != {""}:
        allocated_ok = record.gpus == {model: count}
    else:  # a request without a model ("gpu:2"), or a cluster that accounts only untyped
        # gres/gpu (the partition and node checks above place the model): the right number
        allocated_ok = sum(record.gpus.values()) == count
    if not allocated_ok:
        wanted = f"{model or 'any'}:{count}" if count else "none"
        problems.append(f"{where}: SLURM allocated GPUs {record.gpus or 'none'}, asked for {wanted}")
    if record.state != "COMPLETED":
        problems.append(f"{where}: ended {record.state}")
    return problems


def _run(cmd: list[str], flag: str | None = None) -> str:
    """stdout of a SLURM command; a command that is not installed is a ConfigError naming `flag`
    (the option that chose it, e.g. '--records scontrol') or the command."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        where = f"{flag}: " if flag else ""
        raise ConfigError(f"{where}{cmd[0]} is not installed here (not on PATH); run the audit where SLURM's "
                          f"commands are") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HardwareError(f"{flag + ': ' if flag else ''}{cmd[0]}: {exc}") from None
    if done.returncode != 0:  # e.g. no controller reachable from this host
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise HardwareError(f"{flag + ': ' if flag else ''}{cmd[0]} failed ({said}); run the audit on a host of "
                            "the cluster that ran the jobs")
    return done.stdout


def read_input(path: Path, flag: str, what: str, noun: str) -> str:
    """The text of the file an audit option names (io.read_text), its errors led by the option:
    "--log: PATH: no such file (expected `what`)", "... expected the `noun` file, found a folder"."""
    try:
        return read_text(path, missing=f"no such file (expected {what})", what=noun)
    except DataError as exc:
        raise DataError(f"{flag}: {exc}") from None


def _gpus_from_tres(tres: str) -> dict[str, int]:
    """sacct AllocTRES / scontrol TRES: 'cpu=2,gres/gpu:a100=2,gres/gpu=2' -> {'a100': 2}."""
    found = dict(re.findall(r"gres/gpu:([\w.]+)=(\d+)", tres))
    if not found:
        total = re.search(r"gres/gpu=(\d+)", tres)
        return {"": int(total.group(1))} if total else {}
    return {model: int(n) for model, n in found.items()}


def _gpus_from_job_gres(gres: str) -> dict[str, int]:
    """scontrol JOB_GRES: 'gpu:a100:2' or 'gpu:a100:2(IDX:0-1)' -> {'a100': 2}."""
    found: dict[str, int] = {}
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] == "gpu" and len(parts) == 3:
            found[parts[1]] = found.get(parts[1], 0) + int(parts[2])
        elif parts[0] == "gpu" and len(parts) == 2:
            found[""] = found.get("", 0) + int(parts[1])
    return found


def parse_sacct(text: str) -> dict[str, SlurmRecord]:
    """`sacct -X -n -P --format=SACCT_FORMAT` (AllocCPUS and ElapsedRaw optional)."""
    records = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, partition, node, state, tres, *more = line.split("|")
        cpus, elapsed = (more + ["", ""])[:2]
        records[job_id] = SlurmRecord(job_id, partition, node, state.split()[0], _gpus_from_tres(tres),
                                      int(cpus) if cpus.isdigit() else None,
                                      float(elapsed) if elapsed.isdigit() else None)
    return records


def _slurm_seconds(value: str) -> float | None:
    """scontrol's RunTime ([D-]HH:MM:SS) in seconds."""
    found = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", value or "")
    if not found:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def parse_scontrol(text: str) -> dict[str, SlurmRecord]:
    """`scontrol -d -o show job`: one line per job, Key=Value fields."""
    records = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if "JobId" not in fields:
            continue
        gpus = _gpus_from_job_gres(fields.get("JOB_GRES", "")) or _gpus_from_tres(fields.get("TRES", ""))
        cpus = fields.get("NumCPUs", "")
        records[fields["JobId"]] = SlurmRecord(fields["JobId"], fields.get("Partition", ""),
                                               fields.get("NodeList", ""), fields.get("JobState", ""), gpus,
                                               int(cpus) if cpus.isdigit() else None,
                                               _slurm_seconds(fields.get("RunTime", "")))
    return records


def slurm_records(source: str, job_ids: list[str] | None = None) -> dict[str, SlurmRecord]:
    """SLURM's records of `job_ids` (all it knows when None): 'sacct' or 'scontrol'."""
    if source == "sacct":
        cmd = ["sacct", "-X", "-n", "-P", f"--format={SACCT_FORMAT}"]
        cmd += ["-j", ",".join(job_ids)] if job_ids else ["-a", "-S", "2000-01-01"]
        return parse_sacct(_run(cmd, "--records sacct"))
    if source == "scontrol":
        records = parse_scontrol(_run(["scontrol", "-d", "-o", "show", "job"], "--records scontrol"))
        return {k: v for k, v in records.items() if job_ids is None or k in job_ids}
    raise ValueError(f"unknown record source {source!r} (sacct or scontrol)")


def partition_nodes() -> dict[str, set[str]]:
    """Nodes of each partition, from sinfo (one line per node and partition)."""
    found: dict[str, set[str]] = {}
    for line in _run(["sinfo", "-h", "-N", "-o", "%N %P"]).splitlines():
        node, partition = line.split()
        found.setdefault(partition.rstrip("*"), set()).add(node)
    return found


def merged_config(paths: list[str | Path]) -> dict:
    """Config files merged the way Snakemake merges --configfile a b (mappings deep, lists
    replaced), then validated."""

    def merge(base: dict, update: dict) -> dict:
        for key, value in update.items():
            base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return base

    cfg: dict = {}
    for path in paths:
        merge(cfg, yaml.safe_load(read_input(path, "--configfile", "a config YAML file", "config")) or {})
    return validate_config(cfg, source=" + ".join(map(str, paths)))


def provenance_problems(results: Path, records: dict[str, SlurmRecord]) -> list[str]:
    """Every run.json written by an audited job must name the job, partition and node SLURM did."""
    problems = []
    for path in sorted(results.rglob("run.json")):
        slurm = read_json(path, what="run record").get("slurm") or {}
        record = records.get(slurm.get("job_id", ""))
        if record is None:
            continue
        for key, want in (("partition", record.partition), ("node", record.node)):
            if slurm.get(key) != want:
                problems.append(f"{path}: slurm.{key} is {slurm.get(key)!r}, SLURM says {want!r}")
    return problems


@dataclass
class Audit:
    rows: list[tuple[str, str, str, str, str]]  # job, SLURM id, partition, node, GPUs
    problems: list[str]


def audit_run(log_text: str, cfg: dict, records: dict[str, SlurmRecord],
              nodes: dict[str, set[str]], results: Path | None = None) -> Audit:
    """Check every submitted job: its request against the config, SLURM's record against its
    request; every partition of a hardware key the studies use got at least one job; and the
    provenance the jobs wrote agrees with SLURM."""
    jobs = [job for job in parse_run_log(log_text) if not job.local]
    rows, problems = [], []
    if not jobs:
        problems.append("the run submitted no jobs (is the output from a run through the SLURM executor?)")
    used_partitions = set()
    for job in jobs:
        problems += request_problems(cfg, job)
        if not job.slurm_ids:
            problems.append(f"{job.label}: never submitted to SLURM")
            continue
        for slurm_id in job.slurm_ids:
            record = records.get(slurm_id)
            if record is None:
                problems.append(f"{job.label}: SLURM has no record of job {slurm_id}")
                continue
            problems += placement_problems(job, record, nodes)
            used_partitions.add(record.partition)
            gpus = ",".join(f"{m or 'gpu'}:{n}" for m, n in record.gpus.items()) or "-"
            rows.append((job.label, slurm_id, record.partition, record.node, gpus))
    for hw in demand(cfg):
        partition = cfg["hardware"][hw]["partition"]
        if partition not in used_partitions:
            problems.append(f"hardware.{hw}: no job ran in its partition {partition!r}")
    if results is not None:
        audited = {r.job_id: r for r in records.values() if any(r.job_id in j.slurm_ids for j in jobs)}
        problems += provenance_problems(results, audited)
    return Audit(rows, problems)


def idle_rerun_problems(log_text: str, known_ids: set[str], records: dict[str, SlurmRecord]) -> list[str]:
    """A second run of a finished workflow must submit nothing, by its own account and SLURM's."""
    problems = []
    submitted = SUBMITTED.findall(log_text)
    if submitted:
        problems.append(f"the second run submitted {len(submitted)} jobs: {[s for _, s in submitted]}")
    if NOTHING_TO_DO not in log_text:
        problems.append(f"the second run did not report {NOTHING_TO_DO!r}")
    new = sorted(set(records) - known_ids, key=int)
    if new:
        problems.append(f"SLURM has jobs that did not exist before the second run: {new}")
    return problems


# --- the dask backend's worker jobs (diffscale.embed.dask_slurm) --------------------------------

# The backend cancels its worker jobs when the run ends (dask-jobqueue's scancel), so a worker job
# that did its work ends CANCELLED, or COMPLETED when its worker exited first.
DASK_JOB_ENDED = ("COMPLETED", "CANCELLED")
# What the run recorded each worker job held (backend_info.jobs, which the report bills) against
# SLURM's record: the same CPUs, and seconds from the job's start (its prologue's first line, on
# the worker's node) to the run's cancelling it (on the submitting node). Not more than SLURM's
# elapsed time but for its whole seconds and the two nodes' clocks (HELD_OVER_S), and less by at
# most the time a cancelled job takes to end (SLURM's KillWait, 30 s by default).
NO_TIMING = "missing (expected an embedding run's folder, which holds timing.json)"
HELD_SLACK_S = 30.0
HELD_OVER_S = 2.0


def held_problems(run_dir: Path, job: str, held: dict | None, record: SlurmRecord) -> list[str]:
    """A worker job's recorded CPUs and seconds against SLURM's record of it."""
    if held is None:
        return [f"{run_dir}: worker job {job}: the run recorded nothing of what it held (backend_info.jobs)"]
    problems = []
    if record.cpus is not None and held.get("cpus") != record.cpus:
        problems.append(f"{run_dir}: worker job {job} held {held.get('cpus')} CPUs by the run's record, "
                        f"{record.cpus} by SLURM's")
    seconds = held.get("held_s")
    if record.elapsed_s is not None and (seconds is None or not
                                         record.elapsed_s - HELD_SLACK_S <= seconds <= record.elapsed_s + HELD_OVER_S):
        problems.append(f"{run_dir}: worker job {job} held it {seconds if seconds is None else round(seconds, 1)} s "
                        f"by the run's record, {record.elapsed_s:g} s by SLURM's (at most {HELD_SLACK_S:g} s "
                        f"less, {HELD_OVER_S:g} s more)")
    return problems


def _held_cells(held: dict | None, record: SlurmRecord) -> tuple[str, str]:
    cpus = f"{held['cpus']} CPU" + "s" * (held["cpus"] != 1) if held and held.get("cpus") else "-"
    seconds = held.get("held_s") if held else None
    slurm = f" of {record.elapsed_s:g}" if record.elapsed_s is not None else ""
    return cpus, (f"{seconds:.1f}{slurm} s" if seconds is not None else "-")


def dask_worker_problems(run_dir: Path, records: dict[str, SlurmRecord], partition: str) -> Audit:
    """An embedding run of the dask backend on SLURM: every worker reported from inside a SLURM job,
    and SLURM's record of each submitted job says it ran in `partition`, on the node its worker
    named, and ended; and what the run recorded each job held (held_problems; runs from before it
    was recorded are not asked). Rows: worker, job id, partition, node, state, CPUs, seconds held
    of SLURM's elapsed."""
    timing = read_json(run_dir / "timing.json", NO_TIMING, "timing")
    info = timing.get("backend_info") or {}
    if info.get("cluster") != "slurm":
        return Audit([], [f"{run_dir}: backend_info.cluster is {info.get('cluster')!r}, not 'slurm'"])
    workers = info.get("workers") or []
    held = {str(j["job_id"]): j for j in info.get("jobs") or []} if "jobs" in info else None
    rows, problems = [], []
    if len(workers) != timing["workers"]:
        problems.append(f"{run_dir}: {len(workers)} workers recorded their SLURM job, the run had {timing['workers']}")
    if held is not None and info.get("job_cpu_s") is None:
        problems.append(f"{run_dir}: the run could not total what its worker jobs held (backend_info.job_cpu_s "
                        f"is null), so the report cannot bill them")
    by_job: dict[str, list[dict]] = {}  # a job runs embed.dask.slurm.processes workers
    for worker in workers:
        job = str(worker.get("job_id") or "")
        if not job:
            problems.append(f"{run_dir}: worker {worker['worker']} did not run in a SLURM job")
            continue
        by_job.setdefault(job, []).append(worker)
    for job in sorted(set(info.get("job_ids") or []) | set(by_job), key=int):
        mine = by_job.get(job, [])
        label = ("worker" + "s" * (len(mine) > 1) + " " + ",".join(str(w["worker"]) for w in mine)) if mine else "-"
        record = records.get(job)
        if record is None:
            problems.append(f"{run_dir}: SLURM has no record of worker job {job}")
            continue
        rows.append((label, job, record.partition, record.node, record.state,
                     *_held_cells(held.get(job) if held is not None else None, record)))
        if held is not None and mine:  # a job no worker reported from is one problem, above
            problems += held_problems(run_dir, job, held.get(job), record)
        if record.partition != partition:
            problems.append(f"{run_dir}: worker job {job} ran in partition {record.partition!r}, not {partition!r}")
        if record.state not in DASK_JOB_ENDED:
            problems.append(f"{run_dir}: worker job {job} is {record.state}, not ended ({', '.join(DASK_JOB_ENDED)})")
        if not mine:
            problems.append(f"{run_dir}: worker job {job} was submitted but no worker reported from it")
        for worker in mine:
            if record.node != worker.get("node"):
                problems.append(f"{run_dir}: worker job {job} ran on {record.node!r} by SLURM's record, "
                                f"its worker {worker['worker']} said {worker.get('node')!r}")
    return Audit(rows, problems)


def same_embeddings_problems(run_dir: Path, reference_dir: Path) -> list[str]:
    """The run's embeddings are bitwise those of the reference run, item by item in manifest order,
    computed at the same thread count. Item by item, not shard by shard: where a shard ends depends
    on the worker count (diffscale/embed/plan.py), so a 2-worker run's shards are cut differently
    from a 1-worker reference's even when every embedding is the same."""
    import torch

    def load(path: Path, name: str) -> dict:
        return read_json(path / name, NO_TIMING, "timing")

    problems = []
    threads = set(load(run_dir, "timing.json")["threads_per_worker"])
    reference_threads = set(load(reference_dir, "timing.json")["threads_per_worker"])
    if threads != reference_threads:
        problems.append(f"{run_dir}: threads per worker {sorted(threads)}, the reference ran with "
                        f"{sorted(reference_threads)}: not comparable bitwise")
    try:
        for directory in (run_dir, reference_dir):
            shards.verify(directory)  # every shard present and matching its checksum
        run, reference = shards.ShardReader(run_dir), shards.ShardReader(reference_dir)
    except DataError as exc:
        return problems + [str(exc)]
    if (len(run), run.names) != (len(reference), reference.names):
        return problems + [f"{run_dir}: {len(run)} items of {', '.join(run.names)}, the reference has "
                           f"{len(reference)} of {', '.join(reference.names)}"]
    differ = [i for i in range(len(run))
              if not all(torch.equal(a, b) for a, b in zip(run.item(i).values(), reference.item(i).values()))]
    if differ:
        problems.append(f"{run_dir}: {len(differ)} of {len(run)} items differ from {reference_dir}'s "
                        f"(the first is item {differ[0]} in manifest order)")
    return problems


def audit_dask_run(run_dir: Path, partition: str, source: str, reference: Path | None = None) -> Audit:
    """dask_worker_problems from SLURM's records (`source`: sacct or scontrol) of the run's jobs,
    plus same_embeddings_problems against `reference` when given."""
    info = read_json(Path(run_dir) / "timing.json", NO_TIMING, "timing").get("backend_info") or {}
    ids = {str(i) for i in info.get("job_ids") or []}
    ids |= {str(w["job_id"]) for w in info.get("workers") or [] if w.get("job_id")}
    result = dask_worker_problems(Path(run_dir), slurm_records(source, sorted(ids)) if ids else {}, partition)
    if reference is not None:
        result.problems += same_embeddings_problems(Path(run_dir), Path(reference))
    return result


@dataclass
class Verdict:
    """What the audit CLI prints: table lines, then one line per problem (exit 1) or the `ok` line."""

    lines: list[str]
    problems: list[str]
    ok: str


ROW_WIDTHS = (44, 6, 6, 10, 10)


def audit_run_log(log: Path, configfiles: list[str | Path], records: str = "sacct", results: Path | None = None,
                  save_ids: Path | None = None) -> Verdict:
    """`slurm_audit.py run`: audit the jobs of a run's Snakemake output; optionally save every SLURM
    job id known now, for a later `rerun` audit."""
    text = read_input(log, "--log", "Snakemake's output of the run", "Snakemake log")
    cfg = merged_config(configfiles)
    ids = [i for job in parse_run_log(text) for i in job.slurm_ids]
    if not ids:
        raise DataError(f"--log: {log}: no job of this run was submitted to SLURM (expected Snakemake's output of a "
                        "run through the SLURM executor, not a dry run or a local run)")
    result = audit_run(text, cfg, slurm_records(records, ids or None), partition_nodes(), results)
    lines = ["  ".join(f"{cell:<{width}}" for cell, width in zip(row, ROW_WIDTHS)) for row in result.rows]
    if save_ids:
        Path(save_ids).write_text("\n".join(sorted(slurm_records(records), key=int)) + "\n")
    return Verdict(lines, result.problems, f"{len(result.rows)} SLURM jobs ran where the hardware table says")


def audit_rerun_log(log: Path, known_ids: Path, records: str = "sacct") -> Verdict:
    """`slurm_audit.py rerun`: a second run of the finished workflow submitted nothing."""
    saved = read_input(known_ids, "--known-ids", "the SLURM job ids saved by `run --save-ids`", "job id list")
    text = read_input(log, "--log", "Snakemake's output of the second run", "Snakemake log")
    problems = idle_rerun_problems(text, set(saved.split()), slurm_records(records))
    return Verdict([], problems, "the second run submitted nothing")


def audit_dask_verdict(run_dir: Path, partition: str, records: str = "sacct",
                       reference: Path | None = None) -> Verdict:
    """`slurm_audit.py dask`: audit the worker jobs of a dask-on-SLURM embedding run."""
    result = audit_dask_run(run_dir, partition, records, reference)
    lines = ["  ".join(f"{cell:<{width}}" for cell, width in zip(row, (10, 8, 10, 12, 10, 8, 14)))
             for row in result.rows]
    ok = (f"{len(result.rows)} dask worker jobs ran in partition {partition} and ended"
          + ("; the embeddings equal the reference run's bitwise, item by item" if reference else ""))
    return Verdict(lines, result.problems, ok)
