"""diffscale.report.cost: what a job is billed, share by share (the report's cost columns and the
dask worker jobs' per-CPU price), checked against hand-computed USD."""

from __future__ import annotations

import math

import pytest

from diffscale.errors import ConfigError
from diffscale.report.cost import Prices

CPU = {"partition": "cpu", "device": "cpu", "cpus": 8, "price_per_hour": 0.40}  # no mem_mb: the schema's default
GPU = {"partition": "gpu", "device": "cuda", "gpu_model": "a100", "gpus_per_node": 4, "cpus_per_gpu": 8,
       "price_per_hour": 2.50}


def test_a_cpu_job_pays_for_the_cpus_it_asked_for_in_shares_of_the_entry():
    prices = Prices({"cpu": CPU, "gpu": GPU})
    assert prices.job("cpu", 3600) == pytest.approx(0.40)  # at least the entry's 8 CPUs: one share
    assert prices.job("cpu", 1800, workers=16) == pytest.approx(0.40)  # 16 processes ask 16 CPUs, half an hour
    assert prices.job("cpu", 3600, cpus=2) == pytest.approx(0.10)  # a scaling run w2 asks exactly 2
    assert prices.job("cpu", 3600, gpus=2) == pytest.approx(0.40)  # gloo processes on a CPU entry: no GPU share
    assert Prices({"one": {**CPU, "cpus": 1}}).job("one", 3600, workers=math.nan) == pytest.approx(0.40)  # 1 process


def test_a_gpu_job_pays_per_gpu():
    prices = Prices({"cpu": CPU, "gpu": GPU})
    assert prices.job("gpu", 3600, gpus=2) == pytest.approx(5.0)
    assert prices.job("gpu", 36, gpus="1") == pytest.approx(0.025)  # a count read from a CSV


def test_a_job_that_cannot_be_priced_has_no_cost_not_zero():
    prices = Prices({"cpu": CPU, "gpu": GPU})
    assert prices.job("h100", 3600) is None  # a key this config lacks
    assert Prices({"free": {**CPU, "price_per_hour": 0}}).job("free", 3600) is None  # no price set
    assert prices.job("gpu", 3600, gpus=8) is None  # more GPUs than a node has: no placement, no price
    assert prices.job("cpu", math.inf) is None and prices.job("cpu", None) is None and prices.job("cpu", "?") is None


def test_dask_worker_jobs_pay_the_per_cpu_price_of_their_partitions_cpu_entries():
    prices = Prices({"cpu": CPU, "gpu": GPU, "gpu_host": {**GPU, "partition": "cpu", "price_per_hour": 9.0}})
    assert prices.cpu_seconds("cpu", 3600) == pytest.approx(0.40 / 8)  # the GPU entry on that partition is no CPU price
    assert prices.cpu_seconds("cpu", 8 * 3600) == pytest.approx(0.40)
    assert prices.cpu_seconds("gpu", 3600) is None  # no CPU entry on that partition
    assert prices.cpu_seconds("cpu", math.inf) is None


def test_a_malformed_hardware_table_is_a_config_error_naming_its_source():
    with pytest.raises(ConfigError, match=r"^the report's prices: "):
        Prices({"cpu": {"partition": "cpu"}}, source="the report's prices")
