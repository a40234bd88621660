"""The worker body in this process: inline and overlapped schedules, streaming, failures."""

import pytest
import torch
from safetensors.torch import load_file

from diffscale import shards as shard_format
from diffscale.embed.inputs import load_inputs
from diffscale.embed.plan import plan
from diffscale.embed.worker import WorkerFailed, WorkerTask, read_status, run_worker
from embed_data import demo_settings, make_manifest


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("manifest"), n_synthetic=10, n_real=2)


def _task(fixture, out_dir, modality="images", overlap=False, fault=None, worker=1, workers=2, **change):
    settings = demo_settings(modality, **change)
    items = load_inputs(fixture.manifest, modality, fixture.skipped).items
    part = plan(items, workers, settings.batch_size, settings.shard_size)[worker]
    return WorkerTask(run="test", backend="serial", worker=worker, shards=part.shards, out_dir=str(out_dir),
                      settings=settings.to_dict(), device="cpu", threads=torch.get_num_threads(), overlap=overlap,
                      loader_workers=2, fault=fault)


@pytest.mark.parametrize("modality,worker,workers", [("images", 1, 2), ("text", 1, 2), ("images", 0, 1)])
def test_overlapped_schedule_writes_the_same_shards_as_inline(fixture, tmp_path, modality, worker, workers):
    inline = run_worker(_task(fixture, tmp_path / "inline", modality, worker=worker, workers=workers))
    overlapped = run_worker(_task(fixture, tmp_path / "overlap", modality, overlap=True, worker=worker,
                                  workers=workers))
    assert len(inline["shards"]) >= (3 if workers == 1 else 1)  # one worker: shards after shards
    in_order = lambda result: sorted((s["file"], s["items"]) for s in result["shards"])  # noqa: E731
    assert in_order(inline) == in_order(overlapped)  # overlapped: written by a few threads, listed as they finish
    for entry in inline["shards"]:
        a, b = load_file(tmp_path / "inline" / entry["file"]), load_file(tmp_path / "overlap" / entry["file"])
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert inline["skipped"] == overlapped["skipped"] and inline["truncated"] == overlapped["truncated"]
    assert set(overlapped["phases"]) == {"prepare", "compute", "write", "wait", "collect", "host"}
    assert inline["threads"] == torch.get_num_threads()
    for record in (inline, overlapped):  # where start-up went, step by step, within the load time
        steps = record["load_phases"]
        loaders = {"loaders_s"} if record is overlapped else set()
        assert set(steps) == {"import_s", "device_init_s", "build_s"} | loaders and min(steps.values()) >= 0
        assert sum(steps.values()) <= record["load_s"] == pytest.approx(record["ready_at"] - record["started_at"])


def test_worker_streams_one_shard_at_a_time(fixture, tmp_path, monkeypatch):
    """Each shard is written as soon as its batches are computed: writes interleave with compute,
    so a worker never holds more than one shard of outputs."""
    import diffscale.embed.worker as worker_module
    from diffscale.embed import encoders

    events = []
    real_write, real_compute = worker_module.write_shard, encoders.ImageEmbedder.compute

    def write(path, tensors):
        events.append(("write", len(tensors["image_id"])))
        return real_write(path, tensors)

    def compute(self, pixels):
        events.append(("compute", len(pixels)))
        return real_compute(self, pixels)

    monkeypatch.setattr(worker_module, "write_shard", write)
    monkeypatch.setattr(encoders.ImageEmbedder, "compute", compute)
    task = _task(fixture, tmp_path, "images", worker=0, workers=1)
    result = run_worker(task)
    expected = []
    batch = task.settings["batch_size"]
    for shard in task.shards:
        readable = [sum(i.image_id != fixture.corrupt_id for i in shard.items[k:k + batch])
                    for k in range(0, len(shard.items), batch)]
        expected += [("compute", n) for n in readable] + [("write", sum(readable))]
    assert len(task.shards) >= 2 and events == expected
    assert max(n for kind, n in events if kind == "write") <= task.settings["shard_size"]
    entry = result["shards"][0]
    assert entry["worker"] == 0 and entry["sha256"] == shard_format.sha256_of(tmp_path / entry["file"])
    assert result["tensors"]["latent_mean"] == {"dtype": "float32", "item_shape": [4, 8, 8]}
    assert read_status(tmp_path, 0)["state"] == "done"


def test_text_tensors_and_dtypes(fixture, tmp_path):
    result = run_worker(_task(fixture, tmp_path, "text", worker=0, workers=1))  # ragged, the default: real tokens only
    lengths = [load_file(tmp_path / s["file"])["lengths"] for s in result["shards"]]
    assert len(lengths) >= 2 and result["tokens"] == sum(int(n.sum()) for n in lengths)  # every shard's tokens
    assert result["tensors"]["tokens"] == {"dtype": "float32", "item_shape": [32]}
    assert result["tensors"]["lengths"]["dtype"] == "int32" and result["tensors"]["offsets"]["dtype"] == "int64"
    assert result["tokens"] < 77 * result["items"] and result["tensors"]["truncated"]["dtype"] == "bool"
    assert result["tensors"]["caption_index"]["dtype"] == "int64"


@pytest.mark.parametrize("overlap", [False, True])
def test_failure_names_worker_and_shard(fixture, tmp_path, overlap):
    task = _task(fixture, tmp_path, "images", overlap=overlap)
    target = task.shards[-1]
    task = _task(fixture, tmp_path, "images", overlap=overlap, fault=("raise", target.number))
    with pytest.raises(WorkerFailed, match=rf"test: serial worker 1 \(pid \d+\) failed on {target.file}: "
                                           r"RuntimeError: injected fault"):
        run_worker(task)
    assert not (tmp_path / target.file).exists()


def test_unreadable_images_are_reported_by_the_worker(fixture, tmp_path):
    results = [run_worker(_task(fixture, tmp_path, "images", worker=w)) for w in (0, 1)]
    skipped = [s for r in results for s in r["skipped"]]
    assert [s["image_id"] for s in skipped] == [fixture.corrupt_id]
    assert sum(r["items"] for r in results) == len(load_inputs(fixture.manifest, "images", fixture.skipped).items) - 1


@pytest.mark.parametrize("modality", ["images", "text"])
def test_overlapped_batches_are_prepared_in_loader_processes_in_order(fixture, tmp_path, modality):
    """Decoding and tokenizing leave the process that drives the device (its launches would wait
    on their GIL), and the batches come back in plan order, equal to preparing them here."""
    import multiprocessing

    from diffscale.embed import worker

    task = _task(fixture, tmp_path, modality, overlap=True, worker=0, workers=1)
    source = worker.BatchSource(task)
    prepared = worker._start_loading(task)
    try:
        first = next(prepared)
        loaders = [p for p in multiprocessing.active_children() if p.is_alive()]
        assert len(loaders) == task.loader_workers == 2
        got = [first, *prepared]
    finally:
        worker._stop_loading(prepared)
    assert len(got) == len(source) > 1
    for k, batch in enumerate(got):
        here = source[k]
        assert batch.columns.keys() == here.columns.keys()
        assert all(torch.equal(batch.columns[c], here.columns[c]) for c in here.columns)
        ids = (lambda x: getattr(x, "input_ids", x))
        assert torch.equal(ids(batch.inputs), ids(here.inputs)) and batch.skipped == here.skipped
        assert batch.seconds > 0


def test_a_prepared_batch_travels_small_tensors_as_bytes_and_large_ones_shared():
    import pickle

    import numpy as np

    from diffscale.embed import encoders

    pixels = torch.zeros(6, 256, 256, 3, dtype=torch.uint8)  # 1.2 MB: shared memory
    batch = encoders.Prepared({"image_id": torch.arange(6)}, pixels, seconds=0.5)
    state = batch.__getstate__()
    assert isinstance(state["columns"]["image_id"], np.ndarray) and isinstance(state["inputs"], torch.Tensor)
    text = encoders.Prepared({"image_id": torch.arange(2), "lengths": torch.tensor([3, 2], dtype=torch.int32)},
                             encoders.TextInputs(torch.ones(2, 77, dtype=torch.int64), torch.tensor([0, 1, 2, 77, 78])))
    assert all(isinstance(a, np.ndarray) for a in text.__getstate__()["inputs"])
    for original in (batch, text):
        back = pickle.loads(pickle.dumps(original))
        assert back.seconds == original.seconds and back.size == original.size
        assert all(torch.equal(back.columns[c], original.columns[c]) for c in original.columns)
    back = pickle.loads(pickle.dumps(text))
    assert isinstance(back.inputs, encoders.TextInputs) and torch.equal(back.inputs.keep, text.inputs.keep)
    assert back.columns["lengths"].dtype == torch.int32


class _Loader:
    def __init__(self, alive: bool):
        self.alive, self.killed = alive, False

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return self.alive and not self.killed

    def kill(self):
        self.killed = True


class _StoppedMidStream:
    """A DataLoader iterator whose loader aborted as it exited: torch's SIGCHLD handler raises
    from _shutdown_workers (seen with batches still in flight, e.g. when a worker fails)."""

    def __init__(self, error: str):
        self.error, self._workers = error, [_Loader(alive=False), _Loader(alive=True)]

    def _shutdown_workers(self):
        raise RuntimeError(self.error)


def test_a_loader_that_aborts_as_it_is_stopped_does_not_replace_the_workers_error():
    from diffscale.embed import worker

    prepared = _StoppedMidStream("DataLoader worker (pid 4242) is killed by signal: Aborted. ")
    worker._stop_loading(prepared)  # its batches were being thrown away: no failure
    assert [p.killed for p in prepared._workers] == [False, True]  # none left running
    with pytest.raises(RuntimeError, match="something else"):
        worker._stop_loading(_StoppedMidStream("something else"))


@pytest.mark.parametrize("overlap", [False, True])
def test_an_unreadable_image_alone_in_its_batch_and_shard_is_neither_computed_nor_written(fixture, tmp_path,
                                                                                         monkeypatch, overlap):
    from diffscale.embed import encoders

    computed = []
    real_compute = encoders.ImageEmbedder.compute
    monkeypatch.setattr(encoders.ImageEmbedder, "compute",
                        lambda self, pixels: computed.append(len(pixels)) or real_compute(self, pixels))
    task = _task(fixture, tmp_path, "images", overlap=overlap, worker=0, workers=1, batch_size=1, shard_size=1)
    result = run_worker(task)
    readable = [s for s in task.shards if s.items[0].image_id != fixture.corrupt_id]
    assert len(readable) == len(task.shards) - 1
    # written by a few threads at once: in the order they finish (the stage sorts them by file)
    assert sorted(s["file"] for s in result["shards"]) == [s.file for s in readable]
    assert result["items"] == len(readable)
    assert computed == [1] * len(readable) and [s["image_id"] for s in result["skipped"]] == [fixture.corrupt_id]


def test_an_early_failure_of_an_overlapped_worker_with_many_shards_queued_is_reported(fixture, tmp_path):
    task = _task(fixture, tmp_path, "images", overlap=True, worker=0, workers=1, batch_size=1, shard_size=1)
    first = task.shards[0]
    task = _task(fixture, tmp_path, "images", overlap=True, worker=0, workers=1, batch_size=1, shard_size=1,
                 fault=("raise", first.number))
    assert len(task.shards) >= 5
    with pytest.raises(WorkerFailed, match=rf"failed on {first.file}: RuntimeError: injected fault"):
        run_worker(task)


def test_a_worker_without_shards_reports_zero_phases_and_computes_in_the_cpu_dtype(fixture, tmp_path):
    task = _task(fixture, tmp_path, "images", dtype="bf16", cpu_dtype="fp32")
    task = WorkerTask(**{**task.__dict__, "shards": ()})
    result = run_worker(task)
    assert result["phases"] == {"prepare": 0.0, "compute": 0.0, "write": 0.0} and result["shards"] == []
    assert result["compute_dtype"] == "fp32" and result["items"] == 0


def test_a_bad_model_spec_reaches_the_caller_as_the_one_line_error_it_is(fixture, tmp_path):
    from diffscale.errors import ModelSpecError

    task = _task(fixture, tmp_path, "images")
    task = WorkerTask(**{**task.__dict__, "settings": {**task.settings, "model": {"random": "no-such-layout"}}})
    with pytest.raises(ModelSpecError, match="^models.vae.random: unknown preset 'no-such-layout' for vae"):
        run_worker(task)


def test_a_damaged_status_file_reads_as_none_and_a_loader_without_processes_stops_as_nothing(tmp_path):
    from diffscale.embed import worker

    (tmp_path / ".status").mkdir()
    (tmp_path / ".status" / "w0.json").write_text("{")
    assert read_status(tmp_path, 0) is None and read_status(tmp_path, 1) is None
    assert worker._stop_loading(iter([])) is None


def test_a_compute_failure_in_the_overlapped_schedule_names_the_shard_it_was_computing(fixture, tmp_path,
                                                                                      monkeypatch):
    from diffscale.embed import encoders

    calls, real_compute = [], encoders.ImageEmbedder.compute

    def compute(self, pixels):
        calls.append(len(pixels))
        if len(calls) == 3:
            raise RuntimeError("compute broke")
        return real_compute(self, pixels)

    monkeypatch.setattr(encoders.ImageEmbedder, "compute", compute)
    task = _task(fixture, tmp_path, "images", overlap=True, worker=0, workers=1, batch_size=1, shard_size=1)
    third = [s for s in task.shards if s.items[0].image_id != fixture.corrupt_id][2]
    with pytest.raises(WorkerFailed, match=rf"failed on {third.file}: RuntimeError: compute broke$"):
        run_worker(task)
