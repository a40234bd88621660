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
    assert thread_policy.usable_cores() == before and os.environ["OMP_NUM_THREADS"] == "8"  # restored after


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
