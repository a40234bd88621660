"""generate.py: determinism, classifier-free guidance, PNG metadata, and clear errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffscale.errors import ConfigError, DataError, ModelSpecError
from diffscale.train.diffusion import predict_noise
from diffscale.train.generate import Settings, TrainedModel, generate, read_prompts

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a man riding a wave on a surfboard", "a plate of food on a table", "two dogs in a park"]
FAST = Settings(guidance_scale=2.0, num_inference_steps=4, seed=7, scheduler="ddim", batch_size=4)


def pixels(paths):
    return np.stack([np.asarray(Image.open(p)) for p in paths])


def test_same_seed_same_images_other_seed_other_images(tmp_path, trained_run):
    first = pixels(generate(PROMPTS, trained_run, tmp_path / "a", FAST))
    again = pixels(generate(PROMPTS, trained_run, tmp_path / "b", FAST))
    other = pixels(generate(PROMPTS, trained_run, tmp_path / "c", Settings(**{**FAST.__dict__, "seed": 8})))
    assert first.shape == (3, 64, 64, 3) and first.dtype == np.uint8  # 8x8 latents, the VAE upsamples 8x
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_an_image_does_not_depend_on_its_batch(tmp_path, trained_run):
    together = pixels(generate(PROMPTS, trained_run, tmp_path / "a", FAST))
    alone = pixels(generate(PROMPTS, trained_run, tmp_path / "b", Settings(**{**FAST.__dict__, "batch_size": 1})))
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1  # batched kernels may round differently


def test_guidance_one_is_the_conditional_prediction(trained_run):
    model = TrainedModel(trained_run)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = model.encoder(PROMPTS[:2])
    uncond = model.null.expand(2, -1, -1)
    t = torch.tensor(500)
    with torch.inference_mode():
        conditional = model.unet(latents, t, encoder_hidden_states=cond).sample
        unconditional = model.unet(latents, t, encoder_hidden_states=uncond).sample
        assert torch.equal(predict_noise(model.unet, latents, t, cond, uncond, 1.0), conditional)
        guided = predict_noise(model.unet, latents, t, cond, uncond, 3.0)
        zero = predict_noise(model.unet, latents, t, cond, uncond, 0.0)
    torch.testing.assert_close(guided, unconditional + 3.0 * (conditional - unconditional), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(zero, unconditional, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(conditional, unconditional)  # the prompt matters


@pytest.mark.parametrize("scheduler", ["ddpm", "euler"])
def test_every_sampler_runs(tmp_path, trained_run, scheduler):
    images = pixels(generate(PROMPTS[:1], trained_run, tmp_path, Settings(**{**FAST.__dict__, "scheduler": scheduler})))
    assert images.shape == (1, 64, 64, 3) and images.std() > 0


def test_png_carries_prompt_and_settings(tmp_path, trained_run):
    paths = generate(PROMPTS[:2], trained_run, tmp_path, FAST)
    assert [p.name for p in paths] == ["000-a-man-riding-a-wave-on-a-surfboard.png", "001-a-plate-of-food-on-a-table.png"]
    text = Image.open(paths[1]).text
    assert text["prompt"] == PROMPTS[1]
    assert text["guidance_scale"] == "2.0" and text["num_inference_steps"] == "4" and text["seed"] == "7"
    assert text["scheduler"] == "ddim" and text["weights"] == "ema" and text["train_step"] == "3"
    assert text["model_path"] == str(trained_run)
    manifest = json.loads((tmp_path / "samples.json").read_text())
    assert [i["prompt"] for i in manifest["images"]] == PROMPTS[:2] and manifest["settings"]["seed"] == 7
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"]["prompts"] == PROMPTS[:2] and record["timings"]["images_per_s"] > 0
    assert [m["role"] for m in record["models"]] == ["unet", "text_encoder", "vae"]


def test_prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# demo prompts\n\na red bus\n  two cats  \n")
    assert read_prompts(path) == ["a red bus", "two cats"]
    path.write_text("\n# only a comment\n   \n")
    with pytest.raises(DataError, match=r"prompts.txt: no prompts"):
        read_prompts(path)
    with pytest.raises(DataError, match="prompt file not found"):
        read_prompts(tmp_path / "absent.txt")


def test_bad_model_path(tmp_path, trained_run):
    with pytest.raises(DataError, match=r"--model-path .*nowhere: no such directory"):
        TrainedModel(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"--model-path .*empty: no config.json; not a finished training run"):
        TrainedModel(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"broken/checkpoint.pt: not a readable checkpoint"):
        TrainedModel(broken)


def test_checkpoint_of_another_model_size(tmp_path, trained_run):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    config = json.loads((other / "config.json").read_text())
    config["models"]["unet"] = {"random": "tiny", "overrides": {"block_out_channels": [64, 64]}}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match=r"checkpoint.pt: a U-Net of another size than models.unet \(random:tiny\)"
                                             r" in .*config.json: conv_in.weight is \[32, 4, 3, 3\] in the checkpoint, "
                                             r"\[64, 4, 3, 3\] in the model"):
        TrainedModel(other)


def test_another_text_encoder_is_refused(tmp_path, trained_run):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    config = json.loads((other / "config.json").read_text())
    config["models"]["text_encoder"] = {"random": "tiny", "overrides": {"num_hidden_layers": 1}}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match="does not encode the empty prompt as the one the model was trained with"):
        TrainedModel(other)


def test_cli(tmp_path, trained_run):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red bus\n")
    cmd = [sys.executable, str(ROOT / "scripts" / "generate.py"), "--prompts", str(prompts), "--model-path",
           str(trained_run), "--guidance-scale", "1.5", "--num-inference-steps", "2", "--seed", "3",
           "--out", str(tmp_path / "out"), "--scheduler", "euler", "--batch-size", "1", "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "000-a-red-bus.png").is_file()
    assert Image.open(tmp_path / "out" / "000-a-red-bus.png").text["guidance_scale"] == "1.5"
    prompts.write_text("\n")
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {prompts}: no prompts (one per line; blank lines and "
                                                  "# comments are skipped)"]


def test_more_sampling_steps_than_the_training_schedule_is_one_line(tmp_path, trained_run):
    with pytest.raises(ConfigError, match=r"^--num-inference-steps: 1001 is more than the 1000 timesteps the model "
                                          r"was trained with$"):
        generate(PROMPTS[:1], trained_run, tmp_path / "out", Settings(num_inference_steps=1001, scheduler="ddpm"))
    assert not (tmp_path / "out").exists()


def test_an_out_folder_of_other_files_is_refused_before_the_model_loads(tmp_path, trained_run, monkeypatch):
    from diffscale.train import generate as gen

    for out in (tmp_path / "mine", trained_run):  # a folder of one's own; the model's own run directory
        (tmp_path / "mine").mkdir(exist_ok=True)
        (tmp_path / "mine" / "notes.txt").write_text("keep")
        before = sorted(p.name for p in out.iterdir())
        monkeypatch.setattr(gen, "TrainedModel", lambda *a, **k: pytest.fail("the model loaded"))
        with pytest.raises(DataError, match=rf"^{out}: a folder of other files \(without samples.json"):
            generate(PROMPTS[:1], trained_run, out, FAST)
        assert sorted(p.name for p in out.iterdir()) == before


def test_an_interrupted_generation_leaves_no_images(tmp_path, trained_run, monkeypatch):
    from diffscale import provenance

    out = tmp_path / "samples"
    generate(PROMPTS[:1], trained_run, out, FAST)  # an earlier, complete gallery
    before = sorted(p.name for p in out.iterdir())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # after the images and samples.json, before run.json

    monkeypatch.setattr(provenance, "write_run_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(PROMPTS, trained_run, out, FAST)
    assert sorted(p.name for p in out.iterdir()) == before  # the earlier gallery, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["samples"]  # no staging folder left


@pytest.mark.parametrize("overrides, message", [
    ({"latent_channels": 8}, r"models.vae \(random:tiny\) has 8 latent channels, the model was trained on 4; "
                             r"it is another VAE"),
    ({"scaling_factor": 0.5}, r"models.vae \(random:tiny\) scales latents by 0.5, the model was trained with "),
])
def test_another_vae_is_refused(tmp_path, trained_run, overrides, message):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    config = json.loads((other / "config.json").read_text())
    config["models"]["vae"] = {"random": "tiny", "overrides": overrides}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match=message):
        TrainedModel(other)


def test_a_config_without_models_is_named(tmp_path, trained_run):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    (other / "config.json").write_text(json.dumps({"models": None}))
    with pytest.raises(DataError, match=r"other/config.json: not a training run's config \(no models section\)$"):
        TrainedModel(other)


def test_a_model_trained_on_bf16_captions_is_conditioned_at_bf16(tmp_path, demo_config):
    """A gpu embedding run stores captions in bf16: the empty prompt that replaces dropped captions,
    and the prompts at generation, are rounded to bf16 too, not fed at fp32 (0.2 % off)."""
    from diffscale.train import checkpoint as ckpt_io
    from diffscale.train.config import run_config
    from diffscale.train.synthetic import write_embedding_runs
    from diffscale.train.unet import train

    images, text = write_embedding_runs(tmp_path / "embed", images=8, text_dtype="bfloat16")
    cfg = run_config(demo_config, "local", "fp32", 1)
    cfg["train"].update(steps=1, batch_size=4, warmup_steps=0, log_every=1, checkpoint_every=1, loader_workers=0)
    out = tmp_path / "run"
    train(cfg, images, text, out)
    ckpt = ckpt_io.load(out / "checkpoint.pt")
    null = ckpt["null_embedding"]
    assert ckpt["text_dtype"] == "bfloat16" and null.dtype == torch.float32
    assert torch.equal(null, null.bfloat16().float())

    model = TrainedModel(out)
    cond, _ = model.condition(PROMPTS)
    exact = model.encoder(PROMPTS)
    assert torch.equal(cond, exact.bfloat16().float()) and not torch.equal(cond, exact)
    assert torch.equal(model.null, null)
