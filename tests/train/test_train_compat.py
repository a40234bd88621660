"""The loop where PyTorch lacks newer features (the K80 env's PyTorch 1.13), simulated by hiding them."""

import pytest
import torch

from diffscale.train import checkpoint as ckpt_io
from diffscale.train.core import compat
from diffscale.train.unet import train


@pytest.mark.filterwarnings("ignore:.*torch.cuda.amp.GradScaler:FutureWarning")
def test_training_without_the_newer_features_gives_the_same_run(tmp_path, embeddings, make_run_config, monkeypatch):
    cfg = make_run_config(steps=3, checkpoint_every=3)
    train(cfg, *embeddings, tmp_path / "new")

    monkeypatch.delattr(torch, "_foreach_lerp_")
    monkeypatch.delattr(torch.amp, "GradScaler")
    monkeypatch.setattr(compat, "_accepts", lambda fn, name: False)  # no mmap, fused or device_id
    monkeypatch.setattr(compat, "has_flop_counter", lambda: False)
    summary = train(cfg, *embeddings, tmp_path / "old")

    assert summary["flops_per_sample"] is None and summary["tflops"] is None and summary["mfu"] is None
    new, old = ckpt_io.load(tmp_path / "new" / "checkpoint.pt"), ckpt_io.load(tmp_path / "old" / "checkpoint.pt")
    for name, tensor in new["model"].items():
        assert torch.equal(old["model"][name], tensor), name
    for name, tensor in new["ema"].items():
        torch.testing.assert_close(old["ema"][name], tensor, rtol=1e-6, atol=1e-7)
    assert (tmp_path / "old" / "metrics.csv").read_text().splitlines()[1].split(",")[5:7] == ["", ""]


def test_old_grad_scaler_is_the_cuda_one(monkeypatch):
    monkeypatch.delattr(torch.amp, "GradScaler")
    with pytest.warns(FutureWarning):  # torch.cuda.amp.GradScaler is deprecated in new PyTorch
        scaler = compat.grad_scaler("cpu", enabled=True)
    assert not scaler.is_enabled()  # it runs on CUDA only; fp16 on a CPU needs no scaling there


def test_out_of_memory_errors_include_cuda_s():
    assert torch.cuda.OutOfMemoryError in compat.oom_errors()
