"""The training loop: DDP equivalence, bitwise resume, precisions, divergence, OOM, checkpoints."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffscale.errors import ConfigError, DataError, ModelSpecError
from diffscale.train import checkpoint as ckpt_io
from diffscale.train.data import StepBatches
from diffscale.train.synthetic import write_embedding_runs
from diffscale.train.unet import TrainingError, train

ROOT = Path(__file__).resolve().parents[2]


def losses(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


def final(run_dir):
    return ckpt_io.load(run_dir / "checkpoint.pt")


def assert_states_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_run_writes_its_directory(tmp_path, embeddings, make_run_config):
    out = tmp_path / "run"
    summary = train(make_run_config(), *embeddings, out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.csv", "run.json"]
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[0]["warmup"] == "1" and rows[1]["warmup"] == "0"
    assert all(float(r["samples_per_s"]) > 0 and float(r["lr"]) == pytest.approx(1e-4) for r in rows)
    assert rows[0]["mfu"] == ""  # no GPU, no MFU
    ckpt = final(out)
    assert ckpt["step"] == 4 and ckpt["latent_shape"] == [4, 8, 8] and ckpt["null_embedding"].shape == (1, 77, 32)
    assert {"model", "ema", "optimizer", "scaler", "lr_scheduler", "rng", "run_config", "metrics"} <= set(ckpt)
    assert summary["steps"] == 4 and summary["global_batch"] == 8 and summary["params"] > 0
    assert summary["flops_per_sample"] > 0 and summary["final_loss"] == pytest.approx(losses(out)[-1])
    # the EMA trails the weights
    name = "conv_in.weight"
    assert not torch.equal(ckpt["ema"][name], ckpt["model"][name])


def relative_update_difference(a: dict, b: dict, init: dict) -> float:
    """||(b - init) - (a - init)|| / ||a - init|| over all weights."""
    da = torch.cat([(a[k] - init[k]).flatten() for k in init])
    db = torch.cat([(b[k] - init[k]).flatten() for k in init])
    return float((db - da).norm() / da.norm())


def initial_weights():
    from diffscale import models

    return models.build("unet", {"random": "tiny"}, seed=0).state_dict()


def test_two_gloo_processes_match_one_process(tmp_path, embeddings, make_run_config):
    single = train(make_run_config(steps=3), *embeddings, tmp_path / "g1")
    double = train(make_run_config(gpus=2, steps=3), *embeddings, tmp_path / "g2")
    assert double["micro_batch"] == 4 and single["micro_batch"] == 8
    # the loss of each step, averaged over the two processes, is the one-process loss
    assert losses(tmp_path / "g2") == pytest.approx(losses(tmp_path / "g1"), rel=1e-5, abs=1e-6)
    a, b = final(tmp_path / "g1")["model"], final(tmp_path / "g2")["model"]
    # Adam turns gradients at rounding-noise level (biases ahead of a GroupNorm) into steps of up to
    # lr; so: no weight apart by more than lr, and the updates as a whole agree to 1%. (Without the
    # all-reduce each process would follow its half batch: the updates would differ by tens of %.)
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=1e-4, msg=name)
    assert relative_update_difference(a, b, initial_weights()) < 1e-2
    assert len(final(tmp_path / "g2")["rng"]) == 2  # every process's RNG state is kept


def test_gradient_accumulation_matches_one_big_batch(tmp_path, embeddings, make_run_config):
    train(make_run_config(steps=2), *embeddings, tmp_path / "a1")
    train(make_run_config(steps=2, grad_accum=4), *embeddings, tmp_path / "a4")
    assert losses(tmp_path / "a4") == pytest.approx(losses(tmp_path / "a1"), rel=1e-5)
    a, b = final(tmp_path / "a1")["model"], final(tmp_path / "a4")["model"]
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=1e-4, msg=name)
    assert relative_update_difference(a, b, initial_weights()) < 1e-2


def test_a_segments_set_up_counts_from_the_job_scripts_start(tmp_path, embeddings, make_run_config, monkeypatch):
    """scripts/train_unet.py marks its process's start (interpreter and imports: what a resumed
    run's bill must include); called in-process, set-up counts from the call."""
    import time

    from diffscale import timing

    monkeypatch.setenv(timing.JOB_STARTED_ENV, repr(time.time() - 100.0))  # the script started 100 s ago
    train(make_run_config(steps=1), *embeddings, tmp_path / "script")
    [segment] = json.loads((tmp_path / "script" / "run.json").read_text())["segments"]
    assert 100.0 <= segment["setup_s"] < 400.0
    monkeypatch.delenv(timing.JOB_STARTED_ENV)
    train(make_run_config(steps=1), *embeddings, tmp_path / "call")
    [segment] = json.loads((tmp_path / "call" / "run.json").read_text())["segments"]
    assert 0.0 < segment["setup_s"] < 100.0


def test_a_run_after_a_failed_try_bills_that_try_too(tmp_path, embeddings, make_run_config):
    """A try that failed before any checkpoint (diffscale.attempts) restarts from step 0: not
    resumed, but its 300 s were held all the same."""
    failed = [{"started_at": 1.0, "alive_at": 301.0, "held_s": 300.0}]
    summary = train(make_run_config(steps=1), *embeddings, tmp_path / "run", earlier_tries=failed)
    assert summary["resumed"] is False and summary["job_time_whole"] is True
    assert (summary["earlier_tries"], summary["earlier_tries_s"]) == (1, 300.0)
    assert 300.0 < summary["job_time_s"] < 300.0 + 300.0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["results"]["job_time_s"] == summary["job_time_s"]


def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path, embeddings, make_run_config):
    cfg = make_run_config(steps=6, checkpoint_every=3, warmup_steps=4)
    train(cfg, *embeddings, tmp_path / "straight")
    interrupted = tmp_path / "interrupted"
    assert train(cfg, *embeddings, interrupted, resume=True, stop_after=3) is None
    assert ckpt_io.load(ckpt_io.resume_path(interrupted))["step"] == 3
    assert not (interrupted / "checkpoint.pt").exists()
    summary = train(cfg, *embeddings, interrupted, resume=True)
    assert summary["resumed"] is True
    segments = json.loads((interrupted / "run.json").read_text())["segments"]
    assert [(g["start_step"], g["end_step"]) for g in segments] == [(0, 3), (3, 6)]
    assert all(g["setup_s"] > 0 for g in segments)  # each start's data, models and restore: billed too
    assert summary["job_time_s"] == pytest.approx(sum(g["seconds"] + g["setup_s"] for g in segments))
    assert summary["train_time_s"] == pytest.approx(sum(g["seconds"] for g in segments))
    a, b = final(tmp_path / "straight"), final(interrupted)
    for key in ("model", "ema"):
        assert_states_equal(a[key], b[key])
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_states_equal(pa, pb)
    assert a["lr_scheduler"] == b["lr_scheduler"]
    assert losses(tmp_path / "straight") == losses(interrupted)
    assert not ckpt_io.resume_path(interrupted).exists()  # moved into place as checkpoint.pt


def test_an_fp16_resume_carries_the_grad_scalers_state_on(tmp_path, embeddings, make_run_config):
    """The scaler's growth tracker counts clean steps toward its next growth; a resume that started
    it over would grow the loss scale later than the uninterrupted run does."""
    cfg = make_run_config("fp16", steps=4, checkpoint_every=2)
    train(cfg, *embeddings, tmp_path / "straight")
    train(cfg, *embeddings, tmp_path / "interrupted", resume=True, stop_after=2)
    train(cfg, *embeddings, tmp_path / "interrupted", resume=True)
    a, b = final(tmp_path / "straight")["scaler"], final(tmp_path / "interrupted")["scaler"]
    assert a["_growth_tracker"] > 2  # clean steps on both sides of the checkpoint at step 2
    assert a == b


def test_checkpoint_time_is_not_in_the_next_rows_rate(tmp_path, embeddings, make_run_config, monkeypatch):
    from diffscale.train import unet

    real_save = unet.save

    def slow_save(ctx, s, done, *args):
        real_save(ctx, s, done, *args)
        if done == 2:
            time.sleep(2.0)

    monkeypatch.setattr(unet, "save", slow_save)
    train(make_run_config(steps=3, checkpoint_every=2), *embeddings, tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    after_save = rows[2]
    assert after_save["step"] == "3"
    assert 8 / float(after_save["samples_per_s"]) < 1.0  # one step of batch 8, not the 2 s the save held
    assert float(after_save["elapsed_s"]) - float(rows[1]["elapsed_s"]) > 2.0  # the wall clock did see it


def test_checkpoint_made_with_other_settings_is_not_resumed(tmp_path, embeddings, make_run_config, capsys):
    out = tmp_path / "run"
    train(make_run_config(steps=4), *embeddings, out, resume=True, stop_after=2)
    train(make_run_config(steps=4, lr=5e-4), *embeddings, out, resume=True)
    said = capsys.readouterr().out
    assert "not resuming" in said and "train.lr" in said and "starting over" in said
    assert final(out)["segments"][0]["start_step"] == 0 and len(final(out)["segments"]) == 1
    # a longer run continues a shorter one: steps is not part of the trajectory
    train(make_run_config(steps=4), *embeddings, tmp_path / "short", resume=True, stop_after=2)
    train(make_run_config(steps=5), *embeddings, tmp_path / "short", resume=True)
    assert "resuming from" in capsys.readouterr().out


def test_an_out_path_that_is_a_file_is_refused_before_training(tmp_path, embeddings, make_run_config, monkeypatch):
    from diffscale.train import unet

    (tmp_path / "out").write_text("not a folder")
    monkeypatch.setattr(unet, "prepare", lambda *a, **k: pytest.fail("the run was prepared"))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'out'}: a file is there; the output is a folder$"):
        train(make_run_config(), *embeddings, tmp_path / "out")


def test_resume_and_resume_from_with_a_checkpoint_of_its_own_is_refused(tmp_path, embeddings, make_run_config):
    cfg = make_run_config(steps=4)
    train(cfg, *embeddings, tmp_path / "other")
    out = tmp_path / "run"
    train(cfg, *embeddings, out, resume=True, stop_after=2)
    own = ckpt_io.resume_path(out)
    with pytest.raises(ConfigError, match=rf"^--resume and --resume-from {tmp_path / 'other' / 'checkpoint.pt'}: "
                                          rf"{own} is this run's own checkpoint, which a run from the other would "
                                          r"replace; give one of the two$"):
        train(cfg, *embeddings, out, resume=True, resume_from=tmp_path / "other" / "checkpoint.pt")
    assert ckpt_io.load(own)["step"] == 2  # kept
    assert train(cfg, *embeddings, out, resume=True, resume_from=own)["resumed"] is True  # its own: the same


def test_resume_from_a_checkpoint_of_another_model_size_is_refused(tmp_path, embeddings, make_run_config):
    train(make_run_config(steps=2), *embeddings, tmp_path / "tiny")
    other = make_run_config(steps=4)
    other["models"]["unet"] = {"random": "tiny", "overrides": {"block_out_channels": [32, 32]}}
    with pytest.raises(ModelSpecError, match=r"checkpoint.pt: a U-Net of another size than models.unet.*"
                                             r"block_out_channels is \[32, 64\] in the checkpoint, \[32, 32\]"):
        train(other, *embeddings, tmp_path / "other", resume_from=tmp_path / "tiny" / "checkpoint.pt")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_paths_run_on_cpu(tmp_path, embeddings, make_run_config, precision):
    summary = train(make_run_config(precision, steps=2), *embeddings, tmp_path / precision)
    assert summary["precision"] == precision
    assert all(torch.isfinite(torch.tensor(losses(tmp_path / precision))))
    ckpt = final(tmp_path / precision)
    assert ckpt["model"]["conv_in.weight"].dtype == torch.float32  # master weights stay fp32
    if precision == "fp16":
        assert ckpt["scaler"]["scale"] > 0  # the GradScaler ran and is checkpointed


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, make_run_config):
    images_dir, text_dir = write_embedding_runs(tmp_path / "embed", images=16, captions_per_image=2)
    # poison one caption; find the first step whose batch reads it
    from diffscale.shards import ShardReader, shard_name, write_index, write_shard
    from diffscale.train.data import LatentTextDataset

    reader = ShardReader(text_dir)
    shard = reader.shard(1)
    shard["hidden"][0] = float("nan")
    poisoned_dir = tmp_path / "text-poisoned"
    shards = [write_shard(poisoned_dir / shard_name(0), reader.shard(0)),
              write_shard(poisoned_dir / shard_name(1), shard)]
    shards += [write_shard(poisoned_dir / shard_name(k), reader.shard(k)) for k in range(2, len(reader.index["shards"]))]
    write_index(poisoned_dir, "text", shards, reader.index["tensors"])
    data = LatentTextDataset(images_dir, poisoned_dir)
    sample = int(list(data.text_rows).index(8))  # caption row 8 = first item of shard 1
    order = StepBatches(len(data), 8, 1, 1, 0, 0, 0, 10)
    bad_step = next(s for s in range(10) if sample in order.indices(s, 0)) + 1
    assert bad_step >= 2, "the poisoned sample must come after the first checkpoint for this test"
    cfg = make_run_config(steps=10, checkpoint_every=1, log_every=3, caption_dropout=0.0)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=rf"loss is nan at step {bad_step}; stopped \(the last good checkpoint "
                                            rf"\(step {bad_step - 1}\) is kept at .*last.pt\)"):
        train(cfg, images_dir, poisoned_dir, out)
    kept = ckpt_io.load(ckpt_io.resume_path(out))
    assert kept["step"] == bad_step - 1
    assert all(torch.isfinite(t).all() for t in kept["model"].values())
    assert not (out / "checkpoint.pt").exists()


def test_out_of_memory_names_the_batch_to_lower(tmp_path, embeddings, make_run_config, monkeypatch):
    import diffscale.train.unet as loop

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loop, "step_noise", oom)
    with pytest.raises(TrainingError, match=r"out of memory on cpu with micro-batch 8 \(train.batch_size 8 / "
                                            r"\(1 processes x grad_accum 1\)\); lower train.batch_size"):
        train(make_run_config(), *embeddings, tmp_path / "run")


def test_unet_must_fit_the_embeddings(tmp_path, embeddings, make_run_config):
    cfg = make_run_config()
    cfg["models"]["unet"] = {"random": "tiny", "overrides": {"cross_attention_dim": 64}}
    with pytest.raises(ModelSpecError, match="cross_attention_dim 64 but the text embeddings .* have width 32"):
        train(cfg, *embeddings, tmp_path / "run")


def _cli(cfg_json, embeddings, out, *extra):
    return [sys.executable, str(ROOT / "scripts" / "train_unet.py"), "--run-config", cfg_json,
            "--images", str(embeddings[0]), "--text", str(embeddings[1]), "--out", str(out), *extra]


@pytest.mark.slow
def test_killed_job_rerun_resumes_from_its_last_checkpoint(tmp_path, embeddings, make_run_config):
    import json

    cfg = json.dumps(make_run_config(steps=60, checkpoint_every=5, log_every=5))
    straight = subprocess.run(_cli(cfg, embeddings, tmp_path / "straight", "--resume"), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    job = subprocess.Popen(_cli(cfg, embeddings, out, "--resume"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt_io.resume_path(out).exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    kept = ckpt_io.load(ckpt_io.resume_path(out))["step"]
    assert 5 <= kept < 60 and not (out / "checkpoint.pt").exists()
    rerun = subprocess.run(_cli(cfg, embeddings, out, "--resume"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from {ckpt_io.resume_path(out)} at step {kept}" in rerun.stdout
    assert_states_equal(final(tmp_path / "straight")["model"], final(out)["model"])


def test_cli_errors_are_one_line(tmp_path, embeddings):
    result = subprocess.run(_cli("{not json", embeddings, tmp_path / "out"), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --run-config: not valid JSON (Expecting property name "
                                                  "enclosed in double quotes)"]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_unet.py"), "--config",
                             str(ROOT / "config.yaml"), "--hw", "local", "--precision", "fp32", "--gpus", "1",
                             "--images", str(tmp_path / "missing"), "--text", str(embeddings[1]),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "missing/index.json: no index" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_gpu_run_without_gpus_fails_naming_the_hardware(tmp_path, embeddings, make_run_config):
    cfg = make_run_config()
    cfg["hardware"]["local"] = {"partition": "a100", "device": "cuda"}
    from diffscale.errors import HardwareError

    with pytest.raises(HardwareError, match=r"hardware.local \(partition a100\): device cuda requested but no usable GPU"):
        train(cfg, *embeddings, tmp_path / "run")
    assert not (tmp_path / "run").exists()
