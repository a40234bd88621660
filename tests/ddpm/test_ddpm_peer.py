"""The peer: imported without its package __init__ (no Trainer, no torchvision stand-in left behind),
run on our schedule and objective, and a peer that cannot run is a status, not a number."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from diffscale.ddpm import peer, sweeps

needs_peer = pytest.mark.skipif(importlib.util.find_spec(peer.PACKAGE) is None,
                                reason="denoising-diffusion-pytorch is not installed (the peer extra)")


@needs_peer
def test_import_bypasses_the_package_init_and_leaves_no_stand_ins():
    had_torchvision = importlib.util.find_spec("torchvision") is not None
    module = peer.import_peer()
    assert module.__name__ == peer.MODULE and hasattr(module, "GaussianDiffusion")
    package = sys.modules[peer.PACKAGE]
    assert not hasattr(package, "Trainer1D") and not hasattr(package, "KarrasUnet")  # __init__ never ran
    if not had_torchvision:
        assert "torchvision" not in sys.modules and "torchvision.transforms" not in sys.modules
        assert importlib.util.find_spec("torchvision") is None


@needs_peer
def test_peer_uses_hos_linear_schedule_and_epsilon_objective():
    import torch

    from diffscale.ddpm import loop

    module = peer.import_peer()
    ours = torch.linspace(*loop.BETAS, loop.NUM_TIMESTEPS, dtype=torch.float64)
    assert torch.allclose(module.linear_beta_schedule(loop.NUM_TIMESTEPS), ours)
    unet = loop.build_model({"random": "tiny"}, 0, "cpu", channels_last=False)
    diffusion = module.GaussianDiffusion(peer.as_peer_unet(unet), image_size=32, timesteps=1000,
                                         objective="pred_noise", beta_schedule="linear")
    assert diffusion.objective == "pred_noise"
    assert torch.allclose(diffusion.sqrt_alphas_cumprod, loop.Schedule("cpu").sqrt_ac, atol=1e-6)


def test_a_peer_that_cannot_run_is_a_status_row(ddpm_config, cache, monkeypatch, tmp_path):
    def unavailable():
        raise peer.PeerUnavailable(f"denoising-diffusion-pytorch is not installed ({peer.INSTALL})")

    monkeypatch.setattr(peer, "import_peer", unavailable)
    rc = sweeps.run_config(ddpm_config, "peer", "local", precision="fp32", compile="off")
    sweeps.execute(rc, cache, tmp_path / "peer")
    rows = sweeps.read_rows([tmp_path / "peer"])
    by_impl = {r["impl"]: r for r in rows}
    assert by_impl["ours"]["status"] == "ok" and by_impl["ours"]["steps_per_s"] > 0
    assert by_impl["ours"]["ratio_to_peer"] is None
    assert by_impl["peer"]["status"] == ("not run: denoising-diffusion-pytorch is not installed (pip install "
                                         "--no-deps denoising-diffusion-pytorch==2.3.4 ema-pytorch==0.8.3 "
                                         "einops==0.8.2)")
    # none of our window's measurements is shown as the peer's
    assert all(by_impl["peer"][key] is None for key in sweeps.MEASURED)
    assert by_impl["ours"]["data_wait_frac"] is not None and by_impl["ours"]["params"] > 0
