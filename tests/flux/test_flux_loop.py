"""The LoRA loop on the tiny FLUX (CPU): frozen base, trained LoRA that FluxPipeline loads, exact
resume, 2 gloo processes = 1, SDPA kernel selection, caption pairing, NaN and optimizer errors."""

from __future__ import annotations

import csv
import time

import pytest
import torch
from safetensors.torch import load_file

from diffscale import atomic, models, timing
from diffscale.errors import ConfigError
from diffscale.flux import flow, loop
from diffscale.flux.cache import load_cache
from diffscale.flux.loop import TrainingError, train
from diffscale.provenance import read_results


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared, demo_config):
    """A 4-step run (global batch 2) and the transformer object it trained."""
    from diffscale.flux.settings import run_config

    cfg = run_config(demo_config, "local", 1, 4)
    cfg["flux"].update(log_every=1, checkpoint_every=4, batch_size=2, lr=1e-3)
    built = {}
    real = models.build

    def spy(role, spec, **kwargs):
        model = real(role, spec, **kwargs)
        built.setdefault(role, model)
        return model

    mp = pytest.MonkeyPatch()
    mp.setattr(models, "build", spy)
    try:
        out = tmp_path_factory.mktemp("runs") / "g1-s4"
        summary = train(cfg, prepared[1], prepared[0], out)
    finally:
        mp.undo()
    return cfg, out, summary, built["flux_transformer"]


def probe(transformer):
    """The transformer's output on a fixed input (eval mode, no grad)."""
    g = torch.Generator().manual_seed(3)
    latents, t5, pooled = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 16, 32, generator=g), torch.randn(1, 32, generator=g)
    with torch.no_grad():
        return flow.predict(transformer.eval(), flow.pack(latents), torch.tensor([0.4]), t5, pooled,
                            flow.image_ids(8, 8), flow.text_ids(16))


def test_the_base_stays_frozen_and_unchanged_and_the_lora_trains(trained):
    _, _, _, transformer = trained
    fresh = models.build("flux_transformer", {"random": "tiny"}).state_dict()
    state = transformer.state_dict()
    bases = [k for k in state if "lora_" not in k]
    assert len(bases) == len(fresh)
    for key in bases:
        assert torch.equal(state[key], fresh[key.replace(".base_layer", "")]), key
    assert all(not p.requires_grad for n, p in transformer.named_parameters() if "lora_" not in n)
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero


def test_the_saved_lora_loads_into_a_fresh_fluxpipeline_and_reproduces_the_output(trained):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    _, out, summary, transformer = trained
    keys = load_file(str(out / "lora.safetensors"))
    assert keys and all(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
                        vae=models.build("flux_vae", {"random": "tiny"}), text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None,
                        transformer=models.build("flux_transformer", {"random": "tiny"}))
    base = probe(pipe.transformer)
    pipe.load_lora_weights(str(out / "lora.safetensors"))
    loaded, ours = probe(pipe.transformer), probe(transformer)
    torch.testing.assert_close(loaded, ours, rtol=1e-5, atol=1e-6)
    assert (loaded - base).abs().max() > 1e-4  # the LoRA changes the output


def test_a_run_writes_its_outputs(trained):
    _, out, summary, _ = trained
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    quality = list(csv.DictReader(open(out / "quality.csv")))
    assert [int(r["checkpoint_step"]) for r in quality] == [0, 4] and {r["n_images"] for r in quality} == {"2"}  # flux.quality_images of the demo
    assert sorted(p.name for p in (out / "lora").iterdir()) == ["step-00004.safetensors"]
    assert [c["step"] for c in summary["checkpoints"]] == [0, 4]
    assert all((out / "samples" / f"step-{s:05d}" / "prompt_0.png").is_file() for s in (0, 4))
    for key in ("setup_s", "cache_s", "train_s", "sampling_s", "saving_s", "total_s"):
        assert summary[key] >= 0
    assert summary["resumed"] is False and summary["job_time_s"] >= summary["total_s"]  # one invocation, whole
    assert summary["random_weights"] is True and summary["resolution"] == 64
    assert not (out / "resume").exists() and (out / "checkpoint.pt").is_file()
    # counted FLOPs: achieved TFLOP/s on any device, MFU only against a GPU's known peak
    assert summary["flops_per_sample"] > 0 and summary["mfu"] is None
    assert summary["tflops"] == pytest.approx(summary["flops_per_sample"] * summary["images_per_s"] / 1e12)
    assert all(float(r["tflops"]) > 0 for r in rows)


def test_lora_training_flops_are_a_counted_forward_and_backward_and_leave_the_state_alone(trained, prepared,
                                                                                         monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    from diffscale.flux import lora as lora_io

    cfg = trained[0]
    transformer = models.build("flux_transformer", cfg["models"]["flux_transformer"])
    params = lora_io.add_lora(transformer, {**cfg["flux"], "lora_dropout": 0.5}, 0)  # dropout draws from the generators
    transformer.enable_gradient_checkpointing()
    transformer.train()
    cache = load_cache(prepared[1])
    latents, t5, pooled = loop.batch_tensors(cache, [0], "cpu")
    _, _, h, w = latents.shape
    counter, state = FlopCounterMode(display=False), torch.get_rng_state()
    with torch.no_grad(), counter:  # the transformer's forward alone, counted independently
        flow.predict(transformer, flow.pack(latents), torch.tensor([0.5]), t5, pooled, flow.image_ids(h, w),
                     flow.text_ids(t5.shape[1]))
    forward = counter.get_total_flops()
    assert not torch.equal(torch.get_rng_state(), state)  # a forward in training mode draws (dropout)
    state = torch.get_rng_state()
    # checkpointing stays on while counting (off, the 12B model's activations overflow an A40)
    monkeypatch.setattr(transformer, "disable_gradient_checkpointing", lambda: pytest.fail("checkpointing off"))
    counted = flow.lora_train_flops_per_sample(transformer, params, latents, t5, pooled, torch.float32)
    monkeypatch.undo()
    # backward: the activation gradients that lead to the LoRA (not the time embedding's: nothing
    # trains there) and the LoRA's weight gradients; no base weight gradients (a full training
    # step's third forward)
    assert 1.5 * forward < counted < 2.5 * forward
    assert torch.equal(torch.get_rng_state(), state)  # LoRA dropout's draws do not shift training's
    assert all(p.grad is None for p in params) and transformer.is_gradient_checkpointing
    transformer.disable_gradient_checkpointing()  # no recomputation was counted with it on
    assert flow.lora_train_flops_per_sample(transformer, params, latents, t5, pooled, torch.float32) == counted


def test_checkpointed_flops_without_the_blocks_found_by_name_are_no_count(trained, prepared, monkeypatch):
    """A renamed diffusers class must not leave the recomputation in: no MFU rather than a wrong one."""
    from diffscale.flux import lora as lora_io

    cfg = trained[0]
    transformer = models.build("flux_transformer", cfg["models"]["flux_transformer"])
    params = lora_io.add_lora(transformer, cfg["flux"], 0)
    transformer.enable_gradient_checkpointing()
    latents, t5, pooled = loop.batch_tensors(load_cache(prepared[1]), [0], "cpu")
    monkeypatch.setattr(flow, "checkpointed_forward_flops", lambda *args: 0)
    assert flow.lora_train_flops_per_sample(transformer, params, latents, t5, pooled, torch.float32) is None


def test_flops_per_sample_weigh_the_buckets_as_training_draws_them(prepared, monkeypatch):
    cache = load_cache(prepared[1])
    monkeypatch.setattr(loop.Cache, "buckets", property(lambda self: {(64, 64): [0, 1, 2], (48, 80): [3]}))
    monkeypatch.setattr(loop, "lora_train_flops_per_sample",
                        lambda transformer, params, latents, t5, pooled, dtype: 100 if latents is first[0] else 300)
    first = [None]
    real = loop.batch_tensors

    def tensors(cache, indices, device, dropped=None):
        out = real(cache, indices, device, dropped)
        if indices == [0]:
            first[0] = out[0]
        return out

    monkeypatch.setattr(loop, "batch_tensors", tensors)
    assert loop.bucket_mean_flops(None, [], cache, "cpu", torch.float32) == pytest.approx((3 * 100 + 300) / 4)


def test_a_resumed_run_ends_equal_to_an_uninterrupted_one(trained, prepared, tmp_path):
    cfg, out, summary, _ = trained
    assert train(cfg, prepared[1], prepared[0], tmp_path, stop_after=2) is None
    assert (tmp_path / "resume" / "last.pt").is_file() and not (tmp_path / "run.json").exists()
    resumed = train(cfg, prepared[1], prepared[0], tmp_path, resume=True)
    a, b = load_file(str(out / "lora.safetensors")), load_file(str(tmp_path / "lora.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in list(csv.DictReader(open(out / "metrics.csv")))] == \
           [r["loss"] for r in list(csv.DictReader(open(tmp_path / "metrics.csv")))]
    assert [c["step"] for c in resumed["checkpoints"]] == [0, 2, 4]  # the stop at 2, then 4: nothing repeated


def test_a_resumed_run_bills_every_invocation_from_its_scripts_start(trained, prepared, tmp_path, monkeypatch):
    """Snakemake's benchmark of the job holds the last invocation only; job_time_s sums them all."""
    cfg = trained[0]
    monkeypatch.setenv(timing.JOB_STARTED_ENV, repr(time.time() - 1000))  # as if its script started 1000 s ago
    train(cfg, prepared[1], prepared[0], tmp_path, stop_after=2)
    monkeypatch.setenv(timing.JOB_STARTED_ENV, repr(time.time() - 500))
    start = time.time()
    resumed = train(cfg, prepared[1], prepared[0], tmp_path, resume=True)
    assert resumed["resumed"] is True
    assert 1500 <= resumed["job_time_s"] <= 1500 + 2 * (time.time() - start) + 60
    assert read_results(tmp_path, "FLUX training run")["job_time_s"] == resumed["job_time_s"]
    # no record of the first invocation's try (diffscale.attempts): its checkpoints' sum, a lower bound
    assert resumed["job_time_whole"] is False and resumed["earlier_tries"] == 0


def test_a_resumed_run_whose_tries_were_recorded_bills_each_whole(trained, prepared, tmp_path, monkeypatch):
    """The first invocation ran on 300 s after its last checkpoint (killed at its time limit): its
    try's record counts that; a failed try that never reached a checkpoint counts too."""
    cfg = trained[0]
    first_start = time.time() - 2000
    monkeypatch.setenv(timing.JOB_STARTED_ENV, repr(first_start))
    train(cfg, prepared[1], prepared[0], tmp_path, stop_after=2)
    checkpointed = time.time() - first_start
    tries = [{"started_at": first_start - 100, "alive_at": first_start - 40, "held_s": 60.0},  # failed at once
             {"started_at": first_start, "alive_at": first_start + checkpointed + 300, "held_s": checkpointed + 300}]
    monkeypatch.setenv(timing.JOB_STARTED_ENV, repr(time.time() - 500))
    start = time.time()
    resumed = train(cfg, prepared[1], prepared[0], tmp_path, resume=True, earlier_tries=tries)
    assert resumed["job_time_whole"] is True and resumed["earlier_tries"] == 2
    assert resumed["earlier_tries_s"] == pytest.approx(60 + checkpointed + 300)
    assert 60 + checkpointed + 300 + 500 <= resumed["job_time_s"] <= 60 + checkpointed + 300 + 500 + 2 * (
        time.time() - start) + 60


def test_two_gloo_processes_match_one_on_the_same_global_batch(trained, prepared, tmp_path):
    cfg, out, summary, _ = trained
    two = {**cfg, "run": {**cfg["run"], "gpus": 2}}
    result = train(two, prepared[1], prepared[0], tmp_path)
    a, b = load_file(str(out / "lora.safetensors")), load_file(str(tmp_path / "lora.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)
    assert result["final_loss"] == pytest.approx(summary["final_loss"], rel=1e-5)


def test_a_jobs_thread_budget_is_split_among_its_processes(monkeypatch):
    """Snakemake sets OMP_NUM_THREADS to the rule's threads in every process the job starts."""
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert (loop.cpu_threads(1), loop.cpu_threads(2), loop.cpu_threads(8)) == (4, 2, 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert loop.cpu_threads(2) is None  # the core's usable cores // processes


@pytest.fixture
def no_sampling(monkeypatch):
    """Checkpoints without samples and quality (tests that check neither)."""
    monkeypatch.setattr(loop, "sample_checkpoint", lambda *args: ([], {"psnr": None, "ssim": None, "n_images": 0}))


def test_training_runs_under_the_configured_sdpa_kernels(prepared, make_run_config, tmp_path, monkeypatch,
                                                         no_sampling):
    seen = []
    real = loop.flow_loss

    def spy(*args, **kwargs):
        seen.append((torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
                     torch.backends.cuda.math_sdp_enabled(), torch.backends.cuda.cudnn_sdp_enabled()))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "flow_loss", spy)
    train(make_run_config(steps=1, checkpoint_every=1, sdpa_kernels=["flash", "efficient"]), prepared[1],
          prepared[0], tmp_path / "a")
    assert seen == [(True, True, False, False)]  # no math, no cuDNN attention
    with pytest.raises(ConfigError, match=r"^flux.sdpa_kernels: none of \['efficient'\] can run this attention on cpu"):
        train(make_run_config(steps=1, sdpa_kernels=["efficient"]), prepared[1], prepared[0], tmp_path / "b")


def test_every_cached_latent_stays_paired_with_its_own_caption(prepared):
    from diffscale.flux.cache import load_image
    from diffscale.flux.text import FluxText

    dataset, cache_dir = prepared
    cache = load_cache(cache_dir)
    vae = models.build("flux_vae", {"random": "tiny"})
    text = FluxText({"random": "tiny"}, {"random": "tiny"}, 16)
    for name in cache.names:
        latent, t5, pooled = cache.item(name)
        torch.testing.assert_close(latent, flow.encode(vae, load_image(dataset / "images" / f"{name}.png"))[0])
        hidden, pool = text([cache.caption(name)])
        torch.testing.assert_close(t5, hidden[0])
        torch.testing.assert_close(pooled, pool[0])
    hidden, pool = text([""])  # what a dropped caption becomes
    torch.testing.assert_close(cache.empty_caption()[0], hidden[0])
    torch.testing.assert_close(cache.empty_caption()[1], pool[0])
    assert len({cache.caption(n) for n in cache.names}) == len(cache.names)  # a mix-up would show
    indices, _, _, _ = loop.draw(cache, 0, 3, 4, {"timestep_sampling": "uniform", "logit_mean": 0, "logit_std": 1,
                                                   "timestep_shift": 1.0, "caption_dropout": 0.0})
    latents, t5s, _ = loop.batch_tensors(cache, indices, "cpu")
    for j, i in enumerate(indices):
        assert torch.equal(latents[j], cache.latents[cache.names[i]])
        assert torch.equal(t5s[j], cache.text[f"{cache.names[i]}.t5"])


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_last_good_lora(prepared, make_run_config, tmp_path,
                                                                        monkeypatch, no_sampling):
    real, calls = loop.flow_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(loop, "flow_loss", poisoned)
    with pytest.raises(TrainingError, match=r"^loss is nan at step 3; stopped \(the last good checkpoint \(step 2\) "
                                            r"is kept at .*lora/step-00002.safetensors\)\. Lower flux.lr"):
        train(make_run_config(), prepared[1], prepared[0], tmp_path)


def test_the_8bit_optimizer_without_bitsandbytes_is_a_one_line_config_error(prepared, make_run_config, tmp_path):
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match=r"^flux.optimizer: adamw8bit needs bitsandbytes"):
        train(make_run_config(optimizer="adamw8bit"), prepared[1], prepared[0], tmp_path)


def test_the_training_adapter_is_frozen_active_in_training_and_off_for_sampling(trained, demo_config):
    from diffscale.flux import lora

    _, out, _, _ = trained
    flux = {**demo_config["flux"], "training_adapter": str(out / "lora.safetensors")}
    base = probe(models.build("flux_transformer", {"random": "tiny"}))
    transformer = models.build("flux_transformer", {"random": "tiny"})
    params = lora.add_lora(transformer, flux, 0)
    trainable = {n for n, p in transformer.named_parameters() if p.requires_grad}
    assert len(params) == len(trainable) and all(".default." in n for n in trainable)
    assert (probe(transformer) - base).abs().max() > 1e-4  # the adapter shapes the training forward
    with lora.sampling(transformer, flux):
        torch.testing.assert_close(probe(transformer), base)  # ours starts at zero; the adapter is off
    assert (probe(transformer) - base).abs().max() > 1e-4 and len(params) == len(
        [p for p in transformer.parameters() if p.requires_grad])


def test_inference_timing_rows_for_base_lora_and_fused(trained, demo_config, tmp_path):
    from diffscale.flux.infer import run_infer
    from diffscale.flux.settings import infer_config

    _, out, _, _ = trained
    settings = {**infer_config(demo_config, "local"), "batch_sizes": [1, 2], "repeats": 1,
                "max_sequence_length": 16}
    rows = run_infer(settings, out / "lora.safetensors", tmp_path)
    assert [(r["model"], r["batch_size"]) for r in rows] == [(m, b) for m in ("base", "lora", "lora_fused")
                                                             for b in (1, 2)]
    for row in rows:
        assert row["status"] == "ok" and row["dtype"] == "fp32" and row["random_weights"] is True
        busy = row["text_s"] + row["denoise_s"] + row["decode_s"]
        assert row["first_image_s"] > row["load_s"]  # plus each phase's first call (test below)
        assert row["images_per_s"] == pytest.approx(row["batch_size"] / busy)
    assert rows[2]["load_s"] > rows[0]["load_s"]  # loading the LoRA counts
    header = (tmp_path / "infer.csv").read_text().splitlines()[0].split(",")
    assert {"hw", "model", "batch_size", "load_s", "text_s", "denoise_s", "decode_s", "first_image_s",
            "images_per_s", "device", "random_weights"} <= set(header)


def test_the_first_image_waits_for_each_phases_cold_call_not_its_warm_median():
    import time

    from diffscale.flux.infer import median_time

    calls = []

    def phase():
        time.sleep(0.2 if not calls else 0.001)  # the first call selects kernels, fills caches
        calls.append(1)
        return len(calls)

    median, result, first = median_time(phase, 3, "cpu")
    assert first >= 0.2 and median < 0.1 and result == 4


def test_running_out_of_memory_is_one_line_saying_what_to_change(prepared, make_run_config, tmp_path, monkeypatch,
                                                                 no_sampling):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "flow_loss", oom)
    with pytest.raises(TrainingError, match=r"^out of memory on cpu with micro-batch 2 \(flux.batch_size 2 / 1 "
                                            r"processes, \[64, 64\] px\); turn on flux.grad_checkpointing"):
        train(make_run_config(), prepared[1], prepared[0], tmp_path)


def test_each_step_draws_one_bucket_from_seed_and_step_alone():
    from diffscale.flux.cache import Cache

    items = [{"name": f"i{k}", "caption": str(k), "bucket": [64, 64] if k < 3 else [80, 48]} for k in range(5)]
    latents = {it["name"]: torch.zeros(4, it["bucket"][1] // 8, it["bucket"][0] // 8) for it in items}
    cache = Cache(None, {"items": items, "sample_prompts": []}, latents, {}, {})
    flux = {"timestep_sampling": "logit_normal", "logit_mean": 0.0, "logit_std": 1.0, "timestep_shift": 1.0,
            "caption_dropout": 0.5}
    seen, drops = set(), []
    for step in range(20):
        indices, noise, sigmas, dropped = loop.draw(cache, 0, step, 2, flux)
        buckets = {tuple(items[i]["bucket"]) for i in indices}
        assert len(buckets) == 1 and len(set(indices)) == 2  # one bucket, no image twice in a batch
        assert noise.shape[-2:] == latents[items[indices[0]]["name"]].shape[-2:]
        again = loop.draw(cache, 0, step, 2, flux)
        assert again[0] == indices and torch.equal(again[1], noise) and torch.equal(again[2], sigmas)
        assert again[3] == dropped
        for rate, expected in ((0.0, [False, False]), (1.0, [True, True])):  # the rate changes the drops only
            other = loop.draw(cache, 0, step, 2, {**flux, "caption_dropout": rate})
            assert other[0] == indices and torch.equal(other[1], noise) and torch.equal(other[2], sigmas)
            assert other[3] == expected
        seen |= buckets
        drops += dropped
    assert seen == {(64, 64), (80, 48)}
    assert 10 <= sum(drops) <= 30  # 40 draws at 0.5


def test_a_dropped_caption_trains_on_the_empty_caption_and_the_others_on_their_own(prepared, make_run_config,
                                                                                    tmp_path, monkeypatch,
                                                                                    no_sampling):
    seen, real = [], loop.flow_loss

    def spy(model, latents, noise, sigmas, t5, pooled, dtype):
        seen.append((latents.clone(), t5.clone(), pooled.clone()))
        return real(model, latents, noise, sigmas, t5, pooled, dtype)

    monkeypatch.setattr(loop, "flow_loss", spy)
    cfg = make_run_config(steps=4, caption_dropout=0.5)
    train(cfg, prepared[1], prepared[0], tmp_path)
    cache = load_cache(prepared[1])
    empty_t5, empty_pooled = cache.empty_caption()
    kinds = set()
    for step, (latents, t5, pooled) in enumerate(seen):
        indices, _, _, dropped = loop.draw(cache, cfg["seed"], step, 2, cfg["flux"])
        for j, i in enumerate(indices):
            latent, own_t5, own_pooled = cache.item(cache.names[i])
            assert torch.equal(latents[j], latent)  # the image is kept either way
            want = (empty_t5, empty_pooled) if dropped[j] else (own_t5, own_pooled)
            assert torch.equal(t5[j], want[0]) and torch.equal(pooled[j], want[1])
            kinds.add(dropped[j])
    assert len(seen) == 4 and kinds == {True, False}  # both kinds were checked


def test_caption_dropout_on_a_cache_without_the_empty_caption_is_one_line_before_training(
        prepared, make_run_config, tmp_path, no_sampling):
    import shutil

    from safetensors.torch import save_file

    from diffscale.errors import DataError

    old = tmp_path / "old-cache"
    shutil.copytree(prepared[1], old)
    prompts = load_file(str(old / "prompts.safetensors"))
    save_file({k: v for k, v in prompts.items() if not k.startswith("empty.")}, str(old / "prompts.safetensors"))
    with pytest.raises(DataError, match=r"old-cache: this FLUX cache has no empty-caption embeddings .*"
                                        r"flux.caption_dropout needs; run the flux_cache stage again$"):
        train(make_run_config(steps=1, caption_dropout=0.05), old, prepared[0], tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()
    train(make_run_config(steps=1, caption_dropout=0.0), old, prepared[0], tmp_path / "run0")  # not needed at 0


def test_a_saved_lora_keeps_its_alpha_so_a_loader_applies_the_trained_strength(demo_config, tmp_path):
    from diffscale.flux import lora

    flux = {**demo_config["flux"], "lora_rank": 8, "lora_alpha": 4}  # scaling alpha / rank = 0.5, not 1
    trained = models.build("flux_transformer", {"random": "tiny"})
    lora.add_lora(trained, flux, 0)
    with torch.no_grad():  # B starts at zero: give the LoRA an effect to compare
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    path = lora.save(lora.lora_state(trained), tmp_path / "lora.safetensors", lora.lora_metadata(trained))
    assert path.stat().st_mode & atomic.FILE_MODE == atomic.FILE_MODE  # safetensors alone writes 0o600
    loaded = models.build("flux_transformer", {"random": "tiny"})
    lora.load_adapter(loaded, path, "lora", "--lora")  # as flux_infer and a training adapter load it
    scalings = {m.scaling["lora"] for m in loaded.modules() if hasattr(m, "scaling") and "lora" in m.scaling}
    assert scalings == {0.5}
    torch.testing.assert_close(probe(loaded), probe(trained))


def test_an_update_clips_the_lora_gradient_norm_and_the_metrics_record_it(trained):
    from diffscale.train.core import precision

    param = torch.nn.Parameter(torch.zeros(4))
    param.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5
    optimizer = torch.optim.SGD([param], lr=1.0)
    norm = loop.update(precision.Precision("fp32", "cpu"), optimizer, [param], 1.0)
    assert float(norm) == pytest.approx(5.0)  # the norm before clipping, as logged
    torch.testing.assert_close(param.detach(), torch.tensor([-0.6, -0.8, 0.0, 0.0]))  # the step used norm 1
    assert param.grad is None
    _, out, _, _ = trained
    norms = [row["grad_norm"] for row in csv.DictReader(open(out / "metrics.csv"))]
    assert norms and all(float(n) > 0 for n in norms)


def test_peak_memory_restarts_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(device))
    loop.reset_peak_memory("cpu")
    loop.reset_peak_memory("cuda:1")
    assert calls == ["cuda:1"]


def test_a_file_that_is_not_a_lora_is_named_when_loaded(tmp_path):
    from safetensors.torch import save_file

    from diffscale.errors import DataError
    from diffscale.flux import lora

    latents = tmp_path / "latents.safetensors"  # a safetensors file, but of other tensors
    save_file({"latent.0": torch.zeros(2, 2)}, str(latents))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    transformer = models.build("flux_transformer", {"random": "tiny"})
    with pytest.raises(DataError, match=rf"^--lora: {latents} holds no LoRA weights for this transformer"):
        lora.load_adapter(transformer, latents, "lora", "--lora")
    with pytest.raises(DataError, match=rf"^flux.training_adapter: {junk} is not a LoRA .safetensors file \("):
        lora.load_training_adapter(transformer, str(junk))
    # read from the header alone, before any model is built (flux_infer checks --lora first)
    with pytest.raises(DataError, match=rf"^--lora: {latents} holds no LoRA weights for a transformer"):
        lora.check_file(latents, "--lora")
    with pytest.raises(DataError, match=rf"^--lora: {tmp_path / 'nope.safetensors'} not found"):
        lora.check_file(tmp_path / "nope.safetensors", "--lora")


@pytest.mark.parametrize("damage, problem", [
    (lambda root: (root / "latents.safetensors").write_bytes(b"\x08" + bytes(40)), "header"),
    (lambda root: (root / "cache.json").write_text("{}"), "cache.json has no list of items"),
], ids=["cut-latents", "manifest-without-items"])
def test_a_damaged_cache_is_one_line(prepared, tmp_path, damage, problem):
    import shutil

    from diffscale.errors import DataError

    root = tmp_path / "cache"
    shutil.copytree(prepared[1], root)
    damage(root)
    with pytest.raises(DataError, match=rf"^{root}: not a complete FLUX cache \(.*{problem}.*\); run the flux_cache"):
        load_cache(root)
