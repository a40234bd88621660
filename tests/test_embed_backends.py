"""Every backend and worker count gives the same embeddings; a dying worker is named with its shard.

Equality is bitwise where the per-item computation is the same — every backend computes the same
batches (diffscale.embed.plan), so that means: the same thread count as the serial reference (1
thread on 1 CPU, like every pinned worker) — and within 1e-4 (fp32, CPU) where it differs.
"""

import pytest
import torch

from diffscale.shards import ShardReader, verify
from diffscale.provenance import usable_cpus
from diffscale.embed.stage import FAULT_ENV, run_embedding
from diffscale.embed.worker import WorkerFailed
from embed_data import demo_settings, make_manifest

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
CORES = min(2, usable_cpus())  # the gpu run below asks for 2 CPUs
FAKE_GPUS = {"partition": "gpu", "device": "cpu", "gpu_model": "fake", "gpus_per_node": 2}  # a test partition
RUNS = [("multiprocessing", "pinned", 1), ("multiprocessing", "pinned", 2), ("joblib", "pinned", 1),
        ("joblib", "pinned", 2), ("dask", "pinned", 1), ("dask", "pinned", 2), ("gpu", "pinned", 2)]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("manifest"), n_synthetic=14, n_real=2)


def _settings(modality, backend, **change):
    if backend == "gpu":  # the demo config has no gpu_hardware
        return demo_settings(modality, "serial", hw="fake_gpu", hardware=FAKE_GPUS, **change)
    return demo_settings(modality, backend, **change)


def _run(fixture, root, modality, backend, policy, workers):
    out = root / modality / f"{backend}-{policy}-w{workers}"
    timing = run_embedding(modality, fixture.manifest, out, backend, policy, workers, _settings(modality, backend),
                           skip_list=fixture.skipped, cpus=2)
    verify(out)
    reader = ShardReader(out)
    return timing, {name: reader.column(name) for name in reader.names}


# Images go through every backend and worker count; text through every backend at two workers
# (where the thread count, and so the arithmetic, differs from the reference), to keep this short.
@pytest.mark.parametrize("modality, runs", [("images", RUNS), ("text", [r for r in RUNS if r[2] == 2])])
def test_every_backend_and_worker_count_gives_the_same_embeddings(fixture, tmp_path, modality, runs):
    base_timing, reference = _run(fixture, tmp_path, modality, "serial", "pinned", 1)
    assert base_timing["threads_per_worker"] == [1]
    identical = []
    for backend, policy, workers in runs:
        timing, tensors = _run(fixture, tmp_path, modality, backend, policy, workers)
        label = timing["run"]
        assert timing["workers"] == workers and len(timing["per_worker"]) == workers, label
        assert tensors.keys() == reference.keys(), label
        same_threads = timing["threads_per_worker"] == [1] * workers
        for name, ref in reference.items():
            got = tensors[name]
            assert got.shape == ref.shape and got.dtype == ref.dtype, (label, name)
            if same_threads or not ref.is_floating_point():
                assert torch.equal(got, ref), f"{label}: {name} differs at the same thread count"
            else:
                assert (got - ref).abs().max() <= TOLERANCE, (label, name)
        if all(torch.equal(tensors[n], reference[n]) for n in reference):
            identical.append(label)
        if policy == "pinned":
            assert timing["threads_per_worker"] == [1 if backend != "gpu" else max(1, CORES // workers)] * workers, label
    # one pinned worker runs at the serial run's thread count: bitwise identical on every backend
    assert {f"{b}-{p}-w{w}" for b, p, w in runs if w == 1} <= set(identical)


@pytest.mark.parametrize("backend", ["multiprocessing", "joblib", "dask"])
def test_a_killed_worker_fails_the_job_naming_worker_and_shard(fixture, tmp_path, monkeypatch, backend):
    out = tmp_path / f"{backend}-pinned-w2"
    settings = _settings("images", backend, shard_size=4)
    # 15 images in batches (and shards) of 4: worker 0 writes shards 0-1, worker 1 shards 2-3
    monkeypatch.setenv(FAULT_ENV, "1:3:kill")
    with pytest.raises(WorkerFailed, match=rf"{backend}-pinned-w2: {backend} worker 1 \(pid \d+\) "
                                           r"(was killed by SIGKILL|died \(dask worker .* lost\)) "
                                           r"on shard-00003\.safetensors"):
        run_embedding("images", fixture.manifest, out, backend, "pinned", 2, settings, skip_list=fixture.skipped,
                      cpus=2)
    # shard 2 was complete before the crash, but nothing may look complete after a failed run
    assert not out.exists()
