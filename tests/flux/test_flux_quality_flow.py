"""PSNR/SSIM on known pairs, the sample grid, FLUX's latent packing and our sampler against FluxPipeline."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from diffscale import models
from diffscale.flux import flow
from diffscale.flux.quality import grid, psnr, ssim


def test_identical_images_have_infinite_psnr_and_ssim_one():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_a_known_noise_level_gives_the_known_psnr():
    image = torch.full((3, 32, 32), 0.5, dtype=torch.float64)
    signs = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1  # +-1 checkerboard
    noisy = image + 0.1 * signs.double()  # MSE 0.01 -> 20 dB
    assert psnr(image, noisy) == pytest.approx(20.0, abs=1e-9)
    assert psnr(image, image + 0.01) == pytest.approx(40.0, abs=1e-6)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    a, b = torch.full((3, 24, 24), 0.2, dtype=torch.float64), torch.full((3, 24, 24), 0.6, dtype=torch.float64)
    c1 = 0.01 ** 2
    assert ssim(a, b) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1), rel=1e-9)
    noise = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1))
    assert ssim(noise, 1 - noise) < 0  # anti-correlated structure


def test_the_grid_has_one_row_per_run_and_one_column_per_checkpoint(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(path)
        paths.append(path)
    image = grid([[paths[0], paths[1], paths[2]], [paths[3], paths[4]]])
    assert image.size == (3 * 64, 2 * 64)
    assert image.getpixel((2 * 64 + 5, 64 + 5)) == (255, 255, 255)  # the shorter run leaves a blank cell
    assert image.getpixel((64 + 5, 64 + 5)) == (160, 0, 0)


def test_pack_and_unpack_are_inverse_and_ids_follow_the_patches():
    latents = torch.randn(2, 4, 6, 8)
    packed = flow.pack(latents)
    assert packed.shape == (2, 12, 16)
    assert torch.equal(flow.unpack(packed, 6, 8), latents)
    ids = flow.image_ids(6, 8)
    assert ids.shape == (12, 3) and ids[5].tolist() == [0, 1, 1]


def test_sigma_sampling_stays_in_the_unit_interval_and_shift_raises_it():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    for scheme in ("uniform", "logit_normal", "shift"):
        sigmas = flow.sample_sigmas(1000, g(), scheme)
        assert ((sigmas > 0) & (sigmas < 1)).all()
    assert flow.sample_sigmas(1000, g(), "shift", shift=3.0).mean() > flow.sample_sigmas(1000, g(), "uniform").mean()


def test_our_sampler_is_fluxpipeline_with_schnells_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    transformer = models.build("flux_transformer", {"random": "tiny"})
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=models.build("flux_vae", {"random": "tiny"}),
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                        transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    noise, t5, pooled = torch.randn(1, 4, 8, 8), torch.randn(1, 16, 32), torch.randn(1, 32)
    ours = flow.denoise(transformer, noise, t5, pooled, 4, torch.float32)
    theirs = pipe(prompt_embeds=t5, pooled_prompt_embeds=pooled, latents=flow.pack(noise), num_inference_steps=4,
                  guidance_scale=0.0, height=64, width=64, output_type="latent").images
    torch.testing.assert_close(flow.pack(ours), theirs)


def test_large_models_can_be_built_directly_on_their_device_seeded_in_their_dtype():
    config = models.preset_config(models.parse_spec("flux_transformer", {"random": "tiny"}))
    role = models.ROLES["flux_transformer"]
    a = models._build_on_device(role, config, 5, "cpu", torch.bfloat16)
    b = models._build_on_device(role, config, 5, "cpu", torch.bfloat16)
    assert torch.get_default_dtype() == torch.float32  # restored
    assert {p.dtype for p in a.parameters()} == {torch.bfloat16}
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = models._build_on_device(role, config, 6, "cpu", torch.bfloat16)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_the_flow_loss_is_zero_for_the_true_velocity_on_rectified_flows_mix():
    """The objective itself: x_t = (1 - s) x_0 + s noise goes in, and the target is noise - x_0
    (diffusers' train_dreambooth_lora_flux.py); a stand-in that predicts it exactly scores 0."""
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g)
    sigmas = torch.tensor([0.25, 0.8])
    t5, pooled = torch.randn(2, 4, 8, generator=g), torch.randn(2, 8, generator=g)
    seen = {}

    def oracle(hidden_states, timestep, **_):
        seen["x"], seen["t"] = hidden_states, timestep
        return [flow.pack(noise - latents)]

    assert flow.flow_loss(oracle, latents, noise, sigmas, t5, pooled, torch.float32).item() == 0.0
    s = sigmas.view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["x"], flow.pack((1 - s) * latents + s * noise))
    torch.testing.assert_close(seen["t"], sigmas)


def test_logit_normal_noise_levels_follow_their_mean_and_std():
    sigmas = flow.sample_sigmas(40000, torch.Generator().manual_seed(0), "logit_normal", logit_mean=0.5, logit_std=0.5)
    z = torch.logit(sigmas.double())
    assert z.mean().item() == pytest.approx(0.5, abs=0.01) and z.std().item() == pytest.approx(0.5, abs=0.01)
