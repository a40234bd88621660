"""SLURM resources of a job, from the config's hardware table — the one place to edit when a
cluster names its partitions or GPU types differently.

Keys follow snakemake-executor-plugin-slurm: `slurm_partition`, `cpus_per_task`, `mem_mb`,
`runtime` (minutes), and either `gres` ("gpu:<model>:<n>") or `gpu` + `gpu_model` (--gpus=<model>:<n>)
as the hardware entry's `gpu_request` says.
"""

from __future__ import annotations

from diffscale.errors import ConfigError


def hardware_entry(cfg: dict, hw: str) -> dict:
    try:
        return cfg["hardware"][hw]
    except KeyError:
        known = ", ".join(sorted(cfg["hardware"]))
        raise ConfigError(f"hardware key {hw!r} is not in the config's hardware table ({known})") from None


def job_resources(cfg: dict, hw: str, gpus: int = 0, workers: int = 1) -> dict:
    """Resources for a job on hardware `hw` using `gpus` GPUs (0: CPU job) and `workers` processes.

    A CPU job asks for as many CPUs as it runs workers (at least the entry's `cpus`), so a scaling
    study measures what it claims; a GPU job asks for `cpus_per_gpu` per GPU.
    """
    entry = hardware_entry(cfg, hw)
    # Every key is always present (falsy when unused) so a rule's resource keys do not depend on
    # its wildcards; the SLURM executor skips empty gres / gpu / gpu_model.
    res: dict = {
        "slurm_partition": entry["partition"],
        "mem_mb": entry["mem_mb"],
        "runtime": entry["runtime_min"],
        "gres": "",
        "gpu": 0,
        "gpu_model": "",
    }
    if gpus and entry.get("gpus_per_node", 0):
        if gpus > entry["gpus_per_node"]:
            raise ConfigError(f"hardware.{hw}: {gpus} GPUs asked but gpus_per_node is {entry['gpus_per_node']}")
        res["cpus_per_task"] = max(workers, gpus * entry["cpus_per_gpu"])
        res["mem_mb"] = entry["mem_mb"] * gpus
        if entry["gpu_request"] == "gres":
            res["gres"] = f"gpu:{entry['gpu_model']}:{gpus}"
        else:
            res["gpu"] = gpus
            res["gpu_model"] = entry["gpu_model"]
    else:
        res["cpus_per_task"] = max(workers, gpus, entry["cpus"])
    return res


def compute_device(cfg: dict, hw: str) -> str:
    """Where a job on `hw` computes: 'cuda' or 'cpu' (fake-GPU test partitions say cpu)."""
    return hardware_entry(cfg, hw)["device"]
