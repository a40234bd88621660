"""SLURM resources and conda env of a job, from the config's hardware table — the one place to
edit when a cluster names its partitions or GPU types differently.

Keys follow snakemake-executor-plugin-slurm: `slurm_partition`, `cpus_per_task`, `mem_mb`,
`runtime` (minutes), and either `gres` ("gpu:<model>:<n>" -> --gres) or `gpu` + `gpu_model`
(-> --gpus=<model>:<n>) as the hardware entry's `gpu_request` says (clusters accept one or the
other). rules/common.smk turns these into `resources:` callables of the {hw}/{gpus}/{workers}
wildcards; jobs without a {hw} wildcard run on the CPU hardware (`cpu_hardware`).
"""

from __future__ import annotations

import re

from diffscale import vocab
from diffscale.errors import ConfigError

# sbatch options a hardware entry may add for all its jobs, passed as the plugin's resources of the
# same name (None: not passed): node features (-C), quality of service (--qos), other flags verbatim.
SBATCH_KEYS = ("constraint", "qos", "slurm_extra")
RESOURCE_KEYS = ("slurm_partition", "cpus_per_task", "mem_mb", "runtime", "gres", "gpu", "gpu_model", *SBATCH_KEYS)
# sbatch options the SLURM plugin and the hardware table set; slurm_extra must not set them again
# (a short option with its value attached, -Cfoo, too).
MANAGED_SBATCH = re.compile(
    r"(?:^|\s)(-[pcCtAJNnoeDG]|--(?:partition|cpus-per-task|cpus-per-gpu|mem|mem-per-cpu|mem-per-gpu|time"
    r"|gres|gpus|gpus-per-node|gpus-per-task|constraint|qos|account|job-name|nodes|ntasks|ntasks-per-gpu|output"
    r"|error|export|comment|clusters|parsable|workdir|chdir)(?=[=\s]|$))")


def managed_flag(slurm_extra: str) -> str | None:
    """The first sbatch option in `slurm_extra` that the plugin or the hardware table already sets."""
    found = MANAGED_SBATCH.search(slurm_extra)
    return found.group(1) if found else None


def hardware_entry(cfg: dict, hw: str) -> dict:
    return vocab.hardware_entry(cfg, hw)


def cpu_hardware(cfg: dict) -> str:
    """The hardware key of jobs that name none (data preparation, report): the CPU backends'."""
    return cfg["embed"]["hardware"]


def requests_gpus(entry: dict, gpus: int) -> bool:
    """Whether a job with `gpus` on this entry asks SLURM for GPUs (entries without GPUs count
    `gpus` as processes)."""
    return bool(gpus) and entry.get("gpus_per_node", 0) > 0


def dask_workers_elsewhere(backend: str, dask_cluster: str | None) -> bool:
    """Whether an embedding run's workers run outside its own job: dask workers that are SLURM
    jobs of their own (`embed.dask.cluster: slurm`) or join a running scheduler (`address`)."""
    return backend == "dask" and (dask_cluster or "local") != "local"


def scaling_cpus(backend: str, workers: int, dask_cluster: str | None = "local") -> int | None:
    """The CPUs an embedding scaling run asks SLURM for: exactly its `workers` on a CPU backend
    (a run w{N} runs on N CPUs); 1 when its dask workers run elsewhere (this job then only
    schedules and gathers; the workers' jobs have their own CPUs); None (the hardware entry's
    rule) for the gpu backend."""
    if backend == "gpu":
        return None
    return 1 if dask_workers_elsewhere(backend, dask_cluster) else int(workers)


def training_processes(gpus: int, loader_workers: int) -> int:
    """Processes of a training job: one per device (or gloo process on a CPU entry), each with its
    `loader_workers` DataLoader worker processes (8 workers on 1 GPU: 9 processes)."""
    return max(1, gpus) * (loader_workers + 1)


def runtime(entry: dict, attempt: int = 1) -> int:
    """The time limit, minutes, of a job's `attempt`-th try on a hardware entry: `attempt` times
    its `runtime_min` (a job killed at its limit resumes from its checkpoint and should not hit the
    same limit again), but never more than the partition's `max_runtime_min`."""
    return min(entry["runtime_min"] * attempt, entry.get("max_runtime_min", entry["runtime_min"] * attempt))


def job_resources(cfg: dict, hw: str | None, gpus: int = 0, workers: int = 1, attempt: int = 1,
                  cpus: int | None = None) -> dict:
    """Resources for a job on hardware `hw` (None: the CPU hardware) using `gpus` GPUs (0: CPU
    job) and `workers` processes, on its `attempt`-th try.

    A CPU job asks for as many CPUs as it runs workers (at least the entry's `cpus`), or exactly
    `cpus` when given (a scaling run `w{N}` runs on N CPUs, so it measures what it claims); a GPU
    job asks for `cpus_per_gpu` and `mem_mb` per GPU. A retry gets a longer time limit (`runtime`).
    """
    hw = hw or cpu_hardware(cfg)
    entry = hardware_entry(cfg, hw)
    # Every key is always present (falsy when unused) so a rule's resource keys do not depend on
    # its wildcards; the SLURM executor skips empty gres / gpu / gpu_model, and Snakemake drops a
    # resource that is None (constraint, qos, slurm_extra an entry does not set).
    res: dict = {
        "slurm_partition": entry["partition"],
        "mem_mb": entry["mem_mb"],
        "runtime": runtime(entry, attempt),
        "gres": "",
        "gpu": 0,
        "gpu_model": "",
        **{key: entry.get(key) for key in SBATCH_KEYS},
    }
    if requests_gpus(entry, gpus):
        if gpus > entry["gpus_per_node"]:
            raise ConfigError(f"hardware.{hw}: {gpus} GPUs asked but gpus_per_node is {entry['gpus_per_node']}")
        res["cpus_per_task"] = max(workers, gpus * entry["cpus_per_gpu"])
        res["mem_mb"] = entry["mem_mb"] * gpus
        if entry["gpu_request"] == "gres":
            res["gres"] = f"gpu:{entry['gpu_model']}:{gpus}"
        else:
            res["gpu"] = gpus
            res["gpu_model"] = entry["gpu_model"]
    elif cpus:
        res["cpus_per_task"] = cpus
    else:
        res["cpus_per_task"] = max(workers, gpus, entry["cpus"])
    return res


def rule_resources(cfg: dict, wildcards, attempt: int = 1, hw=None, gpus=0, workers=1, cpus=None) -> dict:
    """`job_resources` of one workflow job: `hw`, `gpus` and `workers` are the arguments when they are
    functions of the wildcards (e.g. the embedding backend decides the hardware key; a DDPM job's
    processes follow from its {workers} DataLoader workers), else the job's wildcards of the same
    name when it has them, else the argument values; `cpus` (a value or function, None: none) asks
    for exactly that many CPUs."""
    given = dict(wildcards)

    def pick(name: str, default):
        if callable(default):
            return default(wildcards)
        return given.get(name, default)

    exact = cpus(wildcards) if callable(cpus) else cpus
    return job_resources(cfg, pick("hw", hw), int(pick("gpus", gpus)), int(pick("workers", workers)), attempt, exact)


def conda_env(cfg: dict, hw: str | None, family: str) -> str:
    """Name of the env (envs/<name>.yaml) a job of rule family `family` runs in on hardware `hw`
    (None: a job tied to no hardware key): the hardware entry's `conda_env` when it names one
    (a K80 partition needs a PyTorch that still supports compute capability 3.7), else the
    family's own env."""
    if hw is None:
        return family
    return hardware_entry(cfg, hw).get("conda_env") or family


def compute_device(cfg: dict, hw: str) -> str:
    """Where a job on `hw` computes: 'cuda' or 'cpu' (fake-GPU test partitions say cpu)."""
    return hardware_entry(cfg, hw)["device"]
