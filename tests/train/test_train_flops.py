"""Counted FLOPs and GPU peaks for MFU."""

import pytest
import torch

from diffscale import models
from diffscale.train.core.flops import forward_flops, peak_flops
from diffscale.train.flops import unet_train_flops_per_sample


def test_forward_flops_are_counted():
    layer = torch.nn.Linear(64, 32, bias=False)
    assert forward_flops(layer, torch.zeros(5, 64)) == 2 * 5 * 64 * 32


def test_unet_training_flops_are_three_forwards_and_scale_with_area():
    unet = models.build("unet", {"random": "tiny"})
    small = unet_train_flops_per_sample(unet, (4, 8, 8), (77, 32), "cpu")
    large = unet_train_flops_per_sample(unet, (4, 16, 16), (77, 32), "cpu")
    latents, hidden = torch.zeros(1, 4, 8, 8), torch.zeros(1, 77, 32)
    assert small == 3 * forward_flops(unet, latents, torch.zeros(1, dtype=torch.long), encoder_hidden_states=hidden)
    assert 3.0 < large / small < 4.5  # convolutions grow with the area, cross-attention a little faster


@pytest.mark.parametrize("name, precision, tf32, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", True, 989.4),
    ("NVIDIA H100 PCIe", "bf16", True, 756.0),
    ("NVIDIA A100-SXM4-40GB", "fp32", True, 156.0),
    ("NVIDIA A100-SXM4-40GB", "fp32", False, 19.5),
    ("NVIDIA A40", "bf16", True, 149.7),
    ("Tesla K80", "fp16", True, 4.37),
])
def test_peak_flops(name, precision, tf32, tflops):
    assert peak_flops(name, precision, tf32) == pytest.approx(tflops * 1e12)


def test_unknown_gpu_has_no_peak():
    assert peak_flops("Some Future GPU", "bf16") is None
