"""One run end to end in this process (serial backend), and what must fail before any work."""

import json
from pathlib import Path

import pytest
import torch

from diffscale.shards import ShardReader, verify
from diffscale.embed.stage import parse_faults, run_embedding
from diffscale.errors import ConfigError, DataError, HardwareError
from embed_data import demo_settings, make_manifest


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("manifest"), n_synthetic=10, n_real=2)


@pytest.fixture(scope="module")
def image_run(fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("images") / "serial-pinned-w1"
    timing = run_embedding("images", fixture.manifest, out, "serial", "pinned", 1, demo_settings("images"),
                           skip_list=fixture.skipped)
    return out, timing


@pytest.fixture(scope="module")
def text_run(fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "serial-pinned-w1"
    timing = run_embedding("text", fixture.manifest, out, "serial", "pinned", 1, demo_settings("text"),
                           skip_list=fixture.skipped)
    return out, timing


def test_image_run_writes_a_verified_index_in_manifest_order(fixture, image_run):
    out, timing = image_run
    index = verify(out)
    reader = ShardReader(out)
    ids = reader.column("image_id").tolist()
    assert ids == sorted(ids) and fixture.corrupt_id not in ids and fixture.skip_listed_id not in ids
    synthetic = 10  # plus the real COCO images where ../shared has them, minus the corrupt and the skip-listed one
    assert len(ids) == index["items"] == timing["items"] == synthetic + len(fixture.real_ids) - 2
    assert timing["unreadable"] == 1 and timing["skipped"] == 2  # the corrupt file, found by the worker
    assert set(fixture.real_ids) <= set(ids) or not fixture.real_ids
    meta = index["meta"]
    assert meta["scaling_factor"] == pytest.approx(0.18215)
    assert meta["image_size"] == 64 and meta["dtype"] == "fp32"
    assert {(s["image_id"], s["source"]) for s in meta["skipped"]} == {(fixture.skip_listed_id, "skip list"),
                                                                       (fixture.corrupt_id, "embed")}
    assert index["model"] == {"role": "vae", "random": "tiny"}
    assert index["tensors"]["latent_std"] == {"dtype": "float32", "item_shape": [4, 8, 8]}
    assert all(s["worker"] == 0 for s in index["shards"]) and len(index["shards"]) >= 2
    item = reader.item(0)
    assert item["latent_mean"].shape == (4, 8, 8) and (item["latent_std"] > 0).all()
    assert not (out / ".status").exists()


def test_timing_and_provenance(image_run):
    out, timing = image_run
    on_disk = json.loads((out / "timing.json").read_text())
    assert on_disk["run"] == "serial-pinned-w1" and on_disk["threads_per_worker"] == [timing["cores"]]
    for key in ("startup_s", "decode_s", "compute_s", "write_s", "wall_s", "items_per_s"):
        assert on_disk[key] >= 0, key
    assert on_disk["items_per_s"] == pytest.approx(on_disk["items"] / on_disk["wall_s"])
    # the steady window opens when the first worker is ready
    assert on_disk["steady_from_s"] == pytest.approx(min(w["startup_s"] for w in on_disk["per_worker"]))
    assert on_disk["steady_items_per_s"] == pytest.approx(on_disk["items"] / (on_disk["wall_s"] - on_disk["steady_from_s"]))
    assert on_disk["startup_s"] + on_disk["decode_s"] + on_disk["compute_s"] <= on_disk["wall_s"] + 1e-6
    worker = on_disk["per_worker"][0]
    assert worker["peak_rss_mb"] > 50 and worker["threads"] == on_disk["threads_requested"]
    # start-up, step by step: one worker, so the run's steps are its own and add up to its start-up
    names = ("spawn_s", "import_s", "loaders_s", "device_init_s", "build_s")
    steps = [on_disk[step] for step in names]
    assert steps == [worker[step] for step in names] and on_disk["loaders_s"] == 0  # inline: no loader processes
    assert min(steps) >= 0 and sum(steps) <= on_disk["startup_s"] + 1e-6
    run = json.loads((out / "run.json").read_text())
    assert run["models"] == [{"role": "vae", "random": "tiny"}]
    assert run["config"]["backend"] == "serial" and run["config"]["image_size"] == 64
    assert run["timings"]["items"] == timing["items"] and run["config_hash"]


def test_text_run_reports_truncation_and_empty_captions(fixture, text_run):
    out, timing = text_run
    index = verify(out)
    reader = ShardReader(out)
    keys = list(zip(reader.column("image_id").tolist(), reader.column("caption_index").tolist()))
    assert keys == sorted(keys) and (fixture.empty_caption_id, 0) not in keys
    truncated = reader.column("truncated")
    assert truncated.sum() == 1 and index["meta"]["truncated"]["count"] == 1 == timing["truncated"]
    [[image_id, caption_index, tokens]] = index["meta"]["truncated"]["items"]
    assert image_id == fixture.long_caption_id and tokens > 77
    assert keys[int(truncated.nonzero()[0, 0])] == (image_id, caption_index)
    assert any(s["reason"] == "empty caption" for s in index["meta"]["skipped"])
    first = reader.item(0)
    assert first["hidden"].shape == (77, 32) and first["mask"].dtype == torch.int8 and first["pooled"].shape == (32,)
    assert index["meta"]["tokenizer"].startswith("instant-clip-tokenizer")


def test_rerun_replaces_the_previous_shards(fixture, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "shard-00099.safetensors").write_bytes(b"stale")
    (out / "index.json").write_text("{}")
    settings = demo_settings("text", shard_size=1000, batch_size=64)
    run_embedding("text", fixture.manifest, out, "serial", "pinned", 1, settings, skip_list=fixture.skipped)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.safetensors"]


def test_gpu_backend_fails_at_once_without_gpus(tmp_path):
    settings = demo_settings("images", hw="a100", hardware={"partition": "a100", "device": "cuda",
                                                            "gpu_model": "a100", "gpus_per_node": 4})
    with pytest.raises(HardwareError, match=r"hardware.a100 \(partition a100\): device cuda requested but no usable GPU"):
        run_embedding("images", tmp_path / "never-read.parquet", tmp_path / "out", "gpu", "pinned", 2, settings)
    assert not (tmp_path / "out").exists()


def test_bad_arguments_and_empty_input(fixture, tmp_path):
    with pytest.raises(ConfigError, match="embed: backend: 'mpi' is not one of serial"):
        run_embedding("images", fixture.manifest, tmp_path, "mpi", "pinned", 1, demo_settings("images"))
    with pytest.raises(ConfigError, match="the serial backend runs one worker, not 2"):
        run_embedding("images", fixture.manifest, tmp_path, "serial", "pinned", 2, demo_settings("images"))
    with pytest.raises(ConfigError, match="^embed: policy intraop is 1 process x N threads, run on the serial "
                                          "backend, not multiprocessing$"):
        run_embedding("images", fixture.manifest, tmp_path, "multiprocessing", "intraop", 2, demo_settings("images"))
    with pytest.raises(ConfigError, match="DIFFSCALE_EMBED_FAULT: 'x' is not"):
        parse_faults("x")
    assert parse_faults("1:3:kill,0:0:raise") == {1: ("kill", 3), 0: ("raise", 0)}
    import pandas as pd

    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"image_id": pd.Series([], dtype="int64"), "file_name": pd.Series([], dtype=str),
                  "path": pd.Series([], dtype=str)}).to_parquet(empty)
    with pytest.raises(DataError, match="nothing to embed"):
        run_embedding("images", empty, tmp_path / "e", "serial", "pinned", 1, demo_settings("images"))
    assert not (tmp_path / "e").exists()  # no output, not even the empty directory the run made


def test_loader_processes_per_gpu_process():
    from dataclasses import replace

    from diffscale.embed import threads as thread_policy
    from diffscale.embed.stage import TEXT_LOADERS, loader_workers

    layout = thread_policy.layout("pinned", 16, "gpu", 2)  # 2 GPU processes on 16 CPUs: 8 each
    images, text = demo_settings("images"), demo_settings("text")
    assert loader_workers(images, layout) == 7  # all but the CPU that drives the device
    assert loader_workers(text, layout) == TEXT_LOADERS == 2
    assert loader_workers(replace(text, loader_workers=5), layout) == 5
    assert loader_workers(images, thread_policy.layout("pinned", 1, "gpu", 1)) == 1


def test_by_hand_an_unreadable_image_is_a_warning_on_stderr_naming_the_manifest(fixture, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "scripts/embed.py", "images", "--manifest", str(fixture.manifest),
                           "--backend", "serial", "--out-dir", str(tmp_path / "run"), "--config", "config.yaml"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    total = 10 + len(fixture.real_ids)  # no skip list given: only the corrupt file is left out
    assert proc.stderr.strip().splitlines() == [
        f"warning: {fixture.manifest}: 1 of {total} images could not be read and are left out (index.json's "
        "meta.skipped names them and why)"]


def test_each_argument_is_refused_before_any_work_with_its_own_message(fixture, tmp_path):
    from diffscale.embed.stage import plan_run

    def refused(backend, policy, workers, message, cpus=None):
        with pytest.raises(ConfigError, match=message):
            plan_run("images", fixture.manifest, tmp_path / "out", backend, policy, workers, demo_settings("images"),
                     cpus=cpus)

    refused("multiprocessing", "pinned", 0, "^embed: workers must be at least 1, not 0$")
    refused("gpu", "pinned", 1, "^embed: cpus must be at least 1, not 0$", cpus=0)
    refused("serial", "pinned", 2, r"^embed: the serial backend runs one worker, not 2 \(N CPUs in one process: "
                                   r"policy intraop\)$")
    refused("joblib", "intraop", 2, "^embed: policy intraop is 1 process x N threads, run on the serial backend, "
                                    "not joblib$")
    with pytest.raises(ConfigError, match="embed settings are for text, not images"):
        plan_run("images", fixture.manifest, tmp_path / "out", "serial", "pinned", 1, demo_settings("text"))
    with pytest.raises(ConfigError, match="DIFFSCALE_EMBED_FAULT: fault kind: 'boom' is not one of raise, kill, exit"):
        parse_faults("0:0:boom")
    assert not (tmp_path / "out").exists()


def test_a_failed_run_leaves_no_index_and_no_status_of_an_earlier_one(fixture, tmp_path, monkeypatch):
    out = tmp_path / "serial-pinned-w1"
    (out / ".status").mkdir(parents=True)
    (out / ".status" / "w0.json").write_text("{}")
    (out / "index.json").write_text("{}")  # an earlier run's: the folder looked complete
    monkeypatch.setenv("DIFFSCALE_EMBED_FAULT", "0:0:raise")
    with pytest.raises(Exception, match="injected fault"):
        run_embedding("images", fixture.manifest, out, "serial", "pinned", 1, demo_settings("images"),
                      skip_list=fixture.skipped)
    assert sorted(p.name for p in out.iterdir()) == []


def fake_result(worker: int, t0: float, ready: float, items: int, build_s: float, compute_s: float) -> dict:
    return {"worker": worker, "pid": 100 + worker, "host": "h", "device": "cpu", "threads": 1,
            "thread_info": {"affinity": 1}, "started_at": t0 + 0.2, "ready_at": t0 + ready, "load_s": ready - 0.2,
            "finished_at": t0 + 8.0, "phases": {"prepare": 0.5, "compute": compute_s, "write": 0.25},
            "items": items, "shards": [], "peak_rss_mb": 100.0, "load_phases": {"build_s": build_s},
            "skipped": [], "truncated": [], "tokens": 0, "tensors": None}


def test_the_timing_record_takes_the_slowest_start_up_the_first_ready_worker_and_busy_workers_only(fixture, tmp_path,
                                                                                                   monkeypatch):
    from diffscale.embed import sizes, stage

    planned = stage.plan_run("images", fixture.manifest, tmp_path / "out", "multiprocessing", "pinned", 2,
                             demo_settings("images"))
    monkeypatch.setattr(sizes, "storage", lambda *args: {})
    t0 = 1000.0
    results = [fake_result(0, t0, ready=1.0, items=6, build_s=1.0, compute_s=3.0),
               fake_result(1, t0, ready=3.0, items=0, build_s=3.0, compute_s=0.0)]  # nothing left to embed
    allocation = {"oversubscribed": False, "usable_cores": 2, "physical_cores": 2}
    executed = stage.Executed(results, {}, allocation, t0, launched=t0 + 0.5, gathered=t0 + 10.0, closed=t0 + 12.0)
    timing = stage._timing(planned, executed, [])
    assert timing["launch_s"] == 0.5 and timing["shutdown_s"] == 2.0
    assert timing["startup_s"] == 3.0 and timing["steady_from_s"] == 1.0
    assert timing["compute_s"] == 3.0 and timing["decode_s"] == 0.5  # the busy worker's, not a mean with an idle one
    assert timing["build_s"] == 3.0 and timing["spawn_s"] == pytest.approx(0.2)
    assert [w["startup_s"] for w in timing["per_worker"]] == [1.0, 3.0]
