"""The hardware table -> SLURM resources and conda env mapping (diffscale.resources)."""

from __future__ import annotations

import copy

import pytest

from diffscale import resources as hwres
from diffscale.config import load_config
from diffscale.errors import ConfigError


@pytest.fixture(scope="module")
def full(repo_root):
    return load_config(repo_root / "config" / "full.yaml")


def with_request_style(cfg: dict, hw: str, style: str) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["hardware"][hw]["gpu_request"] = style
    return cfg


def test_every_key_is_always_present_for_every_hardware_key_and_wildcard(full):
    for hw, entry in full["hardware"].items():
        for gpus in range(entry.get("gpus_per_node", 0) + 1):
            for workers in (1, 2, 8):
                res = hwres.job_resources(full, hw, gpus, workers)
                assert set(res) == set(hwres.RESOURCE_KEYS), (hw, gpus, workers)
                assert res["slurm_partition"] == entry["partition"]


def test_cpu_job_asks_for_one_cpu_per_worker_but_at_least_the_entrys_cpus(full):
    cpu = full["hardware"]["cpu"]
    assert hwres.job_resources(full, "cpu", 0, 1) == {
        "slurm_partition": "cpu", "cpus_per_task": cpu["cpus"], "mem_mb": cpu["mem_mb"],
        "runtime": cpu["runtime_min"], "gres": "", "gpu": 0, "gpu_model": "",
        "constraint": None, "qos": None, "slurm_extra": "--hint=nomultithread",
    }
    assert hwres.job_resources(full, "cpu", 0, 16)["cpus_per_task"] == 16


@pytest.mark.parametrize("hw", ["a40", "a100", "k80"])
@pytest.mark.parametrize("gpus", [1, 2])
def test_gres_style_asks_for_gpus_of_the_entrys_model(full, hw, gpus):
    entry = full["hardware"][hw]
    res = hwres.job_resources(full, hw, gpus, workers=1)
    assert res["slurm_partition"] == entry["partition"]
    assert res["gres"] == f"gpu:{entry['gpu_model']}:{gpus}"
    assert (res["gpu"], res["gpu_model"]) == (0, "")
    assert res["cpus_per_task"] == gpus * entry["cpus_per_gpu"]
    assert res["mem_mb"] == gpus * entry["mem_mb"]


@pytest.mark.parametrize("hw", ["a40", "a100", "k80"])
def test_gpus_style_asks_for_gpu_count_and_model(full, hw):
    cfg = with_request_style(full, hw, "gpus")
    entry = cfg["hardware"][hw]
    res = hwres.job_resources(cfg, hw, 2)
    assert (res["gpu"], res["gpu_model"], res["gres"]) == (2, entry["gpu_model"], "")
    assert res["slurm_partition"] == entry["partition"]


def test_gpu_job_with_more_workers_than_cpus_per_gpu_gets_one_cpu_per_worker(full):
    assert hwres.job_resources(full, "a100", 1, workers=12)["cpus_per_task"] == 12


def test_gpus_on_a_cpu_entry_count_processes_not_gpus(full):
    res = hwres.job_resources(full, "cpu", gpus=2)
    assert (res["gres"], res["gpu"], res["slurm_partition"]) == ("", 0, "cpu")


def test_a_retry_gets_a_longer_time_limit_and_nothing_else(full):
    first, third = hwres.job_resources(full, "a40", 1), hwres.job_resources(full, "a40", 1, attempt=3)
    assert third["runtime"] == 3 * first["runtime"]
    assert {k: v for k, v in third.items() if k != "runtime"} == {k: v for k, v in first.items() if k != "runtime"}


def test_a_retry_never_asks_for_more_than_the_partitions_max_time(full):
    full["hardware"]["k80"] |= {"runtime_min": 1440, "max_runtime_min": 2880}  # tries ask 1440, 2880, 2880
    assert [hwres.job_resources(full, "k80", 1, attempt=n)["runtime"] for n in (1, 2, 3)] == [1440, 2880, 2880]
    full["hardware"]["k80"]["max_runtime_min"] = 2000
    assert [hwres.job_resources(full, "k80", 1, attempt=n)["runtime"] for n in (1, 2)] == [1440, 2000]


def test_an_entrys_sbatch_options_reach_every_job_on_it_and_only_those(full):
    cfg = copy.deepcopy(full)
    cfg["hardware"]["a100"] |= {"constraint": "a100_80gb", "qos": "gpu", "slurm_extra": "--hint=nomultithread"}
    on_a100 = hwres.job_resources(cfg, "a100", 2)
    assert {key: on_a100[key] for key in hwres.SBATCH_KEYS} == {
        "constraint": "a100_80gb", "qos": "gpu", "slurm_extra": "--hint=nomultithread"}
    elsewhere = hwres.job_resources(cfg, "a40", 1)
    assert {key: elsewhere[key] for key in hwres.SBATCH_KEYS} == dict.fromkeys(hwres.SBATCH_KEYS)  # None: not passed


def test_more_gpus_than_a_node_has_is_an_error_naming_the_entry(full):
    with pytest.raises(ConfigError, match=r"hardware\.a100: 8 GPUs asked but gpus_per_node is 4"):
        hwres.job_resources(full, "a100", 8)


def test_unknown_hardware_key_is_an_error_naming_it_and_the_known_keys(full):
    with pytest.raises(ConfigError, match=r"hardware key 'h100' is not in the config's hardware table \(a100, a40, cpu, cpu_large, k80\)"):
        hwres.job_resources(full, "h100", 1)


def test_jobs_without_a_hardware_key_run_on_the_cpu_hardware(full):
    assert hwres.cpu_hardware(full) == full["embed"]["hardware"] == "cpu"
    assert hwres.job_resources(full, None) == hwres.job_resources(full, "cpu")


def test_a_hardware_entry_can_override_the_rule_familys_env(full):
    assert full["hardware"]["k80"]["conda_env"] == "train-k80"
    assert hwres.conda_env(full, "k80", "train") == "train-k80"
    assert hwres.conda_env(full, "a100", "train") == "train"
    assert hwres.conda_env(full, None, "data") == "data"
    with pytest.raises(ConfigError, match="'v100'"):
        hwres.conda_env(full, "v100", "train")


def test_a_scaling_run_asks_for_exactly_its_cpus(full):
    """w{N} runs on N CPUs: below the entry's `cpus` too (the 1-CPU baseline), and above it."""
    assert hwres.job_resources(full, "cpu", 0, 1, cpus=1)["cpus_per_task"] == 1
    assert hwres.job_resources(full, "cpu", 0, 16, cpus=16)["cpus_per_task"] == 16
    assert hwres.job_resources(full, "cpu", 0, 1)["cpus_per_task"] == full["hardware"]["cpu"]["cpus"]


@pytest.mark.parametrize("backend, cluster, expected", [
    ("multiprocessing", "local", 8), ("dask", "local", 8),  # the run's own N CPUs
    ("dask", "slurm", 1), ("dask", "address", 1),  # the workers run in jobs (a cluster) of their own
    ("multiprocessing", "slurm", 8),  # the dask setting concerns dask runs only
    ("gpu", "local", None)])  # the entry's cpus_per_gpu
def test_a_scaling_run_whose_dask_workers_run_elsewhere_asks_for_one_cpu(backend, cluster, expected):
    assert hwres.scaling_cpus(backend, 8, cluster) == expected


def test_a_training_job_asks_a_cpu_for_each_process_and_each_dataloader_worker(full):
    """A DDPM DataLoader sweep point w8 on one A100 runs 9 processes: 8 CPUs (the entry's per GPU)
    would make the loaders compete with the training process they feed."""
    assert hwres.training_processes(1, 8) == 9
    assert hwres.training_processes(2, 4) == 10
    assert hwres.training_processes(0, 0) == 1  # a CPU job: the one training process
    processes = lambda w: hwres.training_processes(1, int(w["workers"]))  # noqa: E731
    asked = hwres.rule_resources(full, {"hw": "a100", "workers": "8"}, gpus=1, workers=processes)
    assert asked["cpus_per_task"] == 9 and asked["gres"] == "gpu:a100:1"
    few = hwres.rule_resources(full, {"hw": "a100", "workers": "2"}, gpus=1, workers=processes)
    assert few["cpus_per_task"] == full["hardware"]["a100"]["cpus_per_gpu"]


def test_a_wildcard_decides_unless_the_rule_gives_a_function_of_the_wildcards(full):
    assert hwres.rule_resources(full, {"hw": "a100", "gpus": "2"}, gpus=1)["gres"] == "gpu:a100:2"
    assert hwres.rule_resources(full, {"hw": "a100", "gpus": "2"}, gpus=lambda w: 1)["gres"] == "gpu:a100:1"
    assert hwres.rule_resources(full, {"hw": "a100"}, gpus=4)["gres"] == "gpu:a100:4"


def test_a_cpu_job_of_n_processes_asks_for_n_cpus_at_least(full):
    """gloo processes on a CPU hardware key (the demo's 2-process runs): each needs a CPU of its own."""
    cpus = full["hardware"]["cpu"]["cpus"]
    assert hwres.job_resources(full, "cpu", gpus=cpus + 4)["cpus_per_task"] == cpus + 4
    assert hwres.job_resources(full, "cpu", gpus=1)["cpus_per_task"] == cpus
