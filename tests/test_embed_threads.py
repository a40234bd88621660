"""A run w{N} runs on N CPUs: its affinity and each worker's threads, as recorded inside the workers."""

import os

import pytest

from diffscale.embed import threads as thread_policy
from diffscale.embed.stage import run_embedding
from embed_data import demo_settings, make_manifest

USABLE = len(thread_policy.usable_cores())


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("manifest"), n_synthetic=6, n_real=0)


def _run(fixture, tmp_path, backend, policy, n):
    return run_embedding("images", fixture.manifest, tmp_path / f"{backend}-{policy}-w{n}", backend, policy, n,
                         demo_settings("images", backend), skip_list=fixture.skipped)


@pytest.mark.parametrize("backend, policy, n, processes, threads", [
    ("serial", "pinned", 1, 1, 1),          # the baseline: 1 CPU, 1 thread
    ("serial", "intraop", 2, 1, 2),         # 1 process × N threads
    ("multiprocessing", "pinned", 2, 2, 1),  # N processes × 1 thread
    ("multiprocessing", "naive", 2, 2, 2),  # N × the default, which is the job's OMP_NUM_THREADS capped at N
])
def test_a_run_on_n_cpus_records_them_inside_its_workers(fixture, tmp_path, monkeypatch, backend, policy, n,
                                                         processes, threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # a job that was given more: a run on N CPUs sees N
    before = thread_policy.usable_cores()
    timing = _run(fixture, tmp_path, backend, policy, n)
    assert timing["cpus"] == n and timing["processes"] == processes == len(timing["per_worker"])
    assert timing["oversubscribed"] is (n > USABLE)
    assert timing["affinity_per_worker"] == [min(n, USABLE)] * processes
    assert timing["threads_per_worker"] == [threads] * processes
    assert timing["physical_cores"] == thread_policy.physical_cores(timing["allocation"]["cores"]) <= min(n, USABLE)
    assert thread_policy.usable_cores() == before and os.environ["OMP_NUM_THREADS"] == "8"  # restored after


@pytest.mark.parametrize("backend", ["multiprocessing", "joblib", "dask"])
def test_naive_workers_run_n_threads_whatever_the_backend_and_the_environment(fixture, tmp_path, monkeypatch,
                                                                                backend):
    # bench embed runs in a bare process: loky would give each worker cores / n_jobs threads and
    # dask's nanny 1, which made naive the same as pinned there but not under Snakemake
    for name in thread_policy.THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    n = min(2, USABLE)
    timing = _run(fixture, tmp_path, backend, "naive", n)
    assert timing["threads_per_worker"] == [n] * n
    assert all(name not in os.environ for name in thread_policy.THREAD_ENV)  # restored after


def test_more_cpus_than_the_machine_has_is_marked_oversubscribed(fixture, tmp_path):
    n = USABLE + 1
    timing = _run(fixture, tmp_path, "serial", "intraop", n)
    assert timing["oversubscribed"] is True and timing["allocation"]["pinned"] is False
    assert timing["affinity_per_worker"] == [USABLE] and timing["threads_per_worker"] == [n]


def test_pin_job_takes_the_first_n_usable_cores():
    if not hasattr(os, "sched_setaffinity") or USABLE < 2:
        pytest.skip("needs an affinity API and 2 cores")
    with thread_policy.pinned_job(1) as allocation:
        assert thread_policy.usable_cores() == allocation["cores"] == thread_policy.usable_cores()[:1]
        assert allocation == {**allocation, "cpus": 1, "pinned": True, "oversubscribed": False}
    assert len(thread_policy.usable_cores()) == USABLE


def test_a_job_takes_one_cpu_per_physical_core_before_any_smt_sibling(monkeypatch):
    """8 CPUs on 4 physical cores, siblings numbered adjacently (0/1 share a core) or half the machine
    apart (0/4): either way a job on 2 or 4 CPUs gets 2 or 4 physical cores, and one on all 8 records 4."""
    for name in thread_policy.THREAD_ENV:  # pin_job sets them; the test leaves them as they were
        monkeypatch.delenv(name, raising=False)
    set_to = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: set_to.append(sorted(cores)), raising=False)
    monkeypatch.setattr(thread_policy, "usable_cores", lambda: [0, 1, 2, 3, 4, 5, 6, 7])
    for core_of, two in ((lambda cpu: cpu // 2, [0, 2]), (lambda cpu: cpu % 4, [0, 1])):
        monkeypatch.setattr(thread_policy, "physical_core", lambda cpu: (0, core_of(cpu)))
        assert thread_policy.spread([0, 1, 2, 3])[:2] == two
        allocation = thread_policy.pin_job(2)
        assert allocation["cores"] == two == set_to[-1] and allocation["physical_cores"] == 2
        assert thread_policy.pin_job(4)["physical_cores"] == 4
        six = thread_policy.pin_job(6)  # 4 cores, then 2 siblings: recorded and pinned in CPU order
        assert six["cores"] == sorted(six["cores"]) == set_to[-1] and six["usable_cores"] == 8
        pinned = len(set_to)
        whole = thread_policy.pin_job(8)  # all 8: the 4 cores' two threads each
        assert whole["physical_cores"] == 4 and whole["pinned"] is False and len(set_to) == pinned  # nothing to narrow
        assert thread_policy.pin_job(9)["oversubscribed"] is True


def test_physical_core_reads_linux_topology_and_falls_back_to_one_core_per_cpu(monkeypatch, tmp_path):
    topology = tmp_path / "cpu3" / "topology"
    topology.mkdir(parents=True)
    (topology / "physical_package_id").write_text("1\n")
    (topology / "core_id").write_text("5\n")
    monkeypatch.setattr(thread_policy, "TOPOLOGY", str(tmp_path / "cpu{}" / "topology"))
    assert thread_policy.physical_core(3) == (1, 5)
    assert thread_policy.physical_core(7) == (-1, 7)  # no topology files: its own core
    (topology / "core_id").write_text("x\n")
    assert thread_policy.physical_core(3) == (-1, 3)  # unreadable: its own core, not a traceback


def test_a_model_is_built_on_one_thread_and_the_record_names_the_thread_variables(monkeypatch):
    import torch

    before = torch.get_num_threads()
    with thread_policy.building():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    for name in thread_policy.THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    info = thread_policy.record()
    assert info["env"] == {"OMP_NUM_THREADS": "3"} and info["threads"] == before
    assert info["affinity"] == len(thread_policy.usable_cores())


def test_thread_env_kept_restores_set_and_unset_variables(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with thread_policy.thread_env_kept():
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    assert os.environ["OMP_NUM_THREADS"] == "3" and "MKL_NUM_THREADS" not in os.environ
