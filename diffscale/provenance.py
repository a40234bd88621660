"""Where and how a result was made: written as run.json beside every run's outputs.

The bench CSVs and the report are built from these files, so a figure can always be traced to
the machine, job, code and config that produced it.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from diffscale import atomic, io
from diffscale.config import config_hash
from diffscale.errors import DataError

# What SLURM tells a job about itself. Inside snakemake-executor-plugin-slurm's job step only the
# step's variables are set (it strips the batch job's before its inner srun): the job id, cluster,
# partition, node, CPUs and the step's GPUs remain; the others appear when a script runs in a
# plain batch job.
SLURM_VARS = {
    "job_id": "SLURM_JOB_ID",
    "array_task": "SLURM_ARRAY_TASK_ID",
    "cluster": "SLURM_CLUSTER_NAME",
    "partition": "SLURM_JOB_PARTITION",
    "account": "SLURM_JOB_ACCOUNT",
    "node": "SLURMD_NODENAME",
    "nodelist": "SLURM_JOB_NODELIST",
    "cpus_on_node": "SLURM_CPUS_ON_NODE",
    "cpus_per_task": "SLURM_CPUS_PER_TASK",
    "mem_per_node_mb": "SLURM_MEM_PER_NODE",
    "gpus_on_node": "SLURM_GPUS_ON_NODE",
    "job_gpus": "SLURM_JOB_GPUS",
    "step_gpus": "SLURM_STEP_GPUS",
    "gpus": "SLURM_GPUS",
    "restarts": "SLURM_RESTART_COUNT",
}

LIBRARIES = ["torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "numpy", "dask",
             "distributed", "joblib", "snakemake", "pandas", "pillow"]


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on (SLURM's cgroup/affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def slurm() -> dict[str, str] | None:
    found = {key: os.environ[var] for key, var in SLURM_VARS.items() if os.environ.get(var)}
    return found or None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def devices() -> dict[str, Any]:
    """Accelerators visible to this process, without initialising CUDA when torch is absent."""
    info: dict[str, Any] = {"cuda_available": False, "gpus": [],
                            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        import torch
    except ImportError:
        return info
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        info["cuda_available"] = True
        info["cuda_version"] = torch.version.cuda
        info["cudnn_version"] = torch.backends.cudnn.version()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(count)]
        info["gpu_capabilities"] = [".".join(map(str, torch.cuda.get_device_capability(i))) for i in range(count)]
        info["gpu_memory_gb"] = [round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)
                                 for i in range(count)]
    return info


def collect(config_slice: Any = None, models: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    """Everything a run.json records, except the run's own timings (passed in `extra`)."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "slurm": slurm(),
        "devices": devices(),
        "versions": versions(),
        "git_commit": git_commit(),
        "config": config_slice,
        "config_hash": config_hash(config_slice) if config_slice is not None else None,
        "models": models or [],
        **extra,
    }


def write_run_json(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    record = collect(**kwargs)
    atomic.write_json(path, record)
    return record


# --- reading a run's record back ----------------------------------------------------------------
RUN_RECORD = "run.json"  # a run folder's record: what write_run_json wrote when the run finished
UNFINISHED = "missing; the run did not finish"


def distinct_runs(run_dirs) -> list[Path]:
    """The run folders a table is built from, as Paths; a DataError when one is given twice (a glob
    and an explicit path, a path repeated): it would be a second row of the same run."""
    seen: dict[Path, Path] = {}
    for run_dir in map(Path, run_dirs):
        if run_dir.resolve() in seen:
            raise DataError(f"{run_dir}: run folder given twice; each run is one row of the table")
        seen[run_dir.resolve()] = run_dir
    return list(seen.values())


def read_record(run_dir: str | Path) -> Any:
    """A run folder's run.json, parsed; a DataError naming it when the run left none (io.read_json)."""
    return io.read_json(Path(run_dir) / RUN_RECORD, missing=UNFINISHED)


def results_of(record: Any, run_dir: str | Path, kind: str, required: tuple | list = ()) -> dict:
    """The `results` section of a run's record, or a DataError naming the file: no section (not
    a `kind`'s record), or the first of `required` it lacks."""
    path = Path(run_dir) / RUN_RECORD
    results = record.get("results") if isinstance(record, dict) else None
    if not isinstance(results, dict) or not results:
        raise DataError(f"{path}: no results section; not a {kind}'s record")
    missing = [key for key in required if key not in results]
    if missing:
        raise DataError(f"{path}: results has no {missing[0]!r} (expected {', '.join(required)})")
    return results


def read_results(run_dir: str | Path, kind: str, required: tuple | list = ()) -> dict:
    """results_of the run folder's record: what a launcher returns for ranks that ran elsewhere."""
    return results_of(read_record(run_dir), run_dir, kind, required)
