"""The U-Net trains with the token mask of ragged text: padded positions carry no meaning."""

from types import SimpleNamespace

import pytest
import torch

from diffscale import models
from diffscale.train.core import precision
from diffscale.train.data import LatentTextDataset
from diffscale.train.diffusion import noise_scheduler, step_noise
from diffscale.train.synthetic import write_embedding_runs
from diffscale.train.unet import loss_of


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    return write_embedding_runs(tmp_path_factory.mktemp("ragged"), images=8, captions_per_image=2,
                                text_storage="ragged")


def _setup(make_run_config, data, null_mask):
    cfg = make_run_config(batch_size=4)
    unet = models.build("unet", cfg["models"]["unet"], seed=0)
    ctx = SimpleNamespace(device="cpu", rank=0)
    null = torch.randn(1, 77, data.hidden_shape[-1])
    s = SimpleNamespace(job=SimpleNamespace(run_config=cfg), data=data, null=null, null_mask=null_mask,
                        schedule=noise_scheduler(), prec=precision.Precision("fp32", "cpu"))
    draws = step_noise(0, 0, 4, data.latent_shape, 1000, 0.0, "cpu")
    return ctx, s, unet, draws


def test_ragged_text_batches_carry_the_mask(ragged):
    data = LatentTextDataset(*ragged)
    batch = data.__getitems__([0, 1, 2, 3])
    assert data.text_mask and batch["mask"].shape == (4, 77) and batch["mask"].dtype == torch.int8
    lengths = batch["mask"].sum(1)
    assert ((lengths >= 3) & (lengths <= 20)).all()
    for row, n in zip(batch["hidden"], lengths):
        assert row[:n].abs().sum() > 0 and not row[n:].any()


def test_the_loss_ignores_what_the_padded_positions_hold(ragged, make_run_config):
    """Fails when the mask is ignored: garbage after each caption's real tokens would change it."""
    data = LatentTextDataset(*ragged)
    batch = data.__getitems__([0, 1, 2, 3])
    garbage = dict(batch, hidden=torch.where(batch["mask"][..., None].bool(), batch["hidden"],
                                             torch.randn_like(batch["hidden"]) * 10))
    null_mask = torch.zeros(1, 77, dtype=torch.int64)
    null_mask[0, :2] = 1
    ctx, s, unet, draws = _setup(make_run_config, data, null_mask)
    with torch.no_grad():
        clean, noisy = loss_of(ctx, s, unet, batch, draws, 0), loss_of(ctx, s, unet, garbage, draws, 0)
        assert clean.item() == pytest.approx(noisy.item(), rel=1e-6, abs=1e-7)
        s.null_mask = None  # as if the mask were ignored: the garbage now changes the loss
        assert loss_of(ctx, s, unet, batch, draws, 0).item() != pytest.approx(
            loss_of(ctx, s, unet, garbage, draws, 0).item(), rel=1e-4)


def test_training_on_ragged_text_records_the_mask_in_the_checkpoint(ragged, make_run_config, tmp_path):
    from diffscale.train.unet import train

    cfg = make_run_config(steps=2, checkpoint_every=2)
    train(cfg, *ragged, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["text_mask"] is True and state["step"] == 2
    # sampling attends with the prompts' masks too, as the model was trained
    from diffscale.train.generate import Settings, TrainedModel

    model = TrainedModel(tmp_path / "run")
    assert model.text_mask and model.null_mask.sum() == 2  # start and end of text
    images = model.generate(["a man"], Settings(num_inference_steps=2, batch_size=1))
    assert images.shape[0] == 1 and images.dtype == torch.uint8


def test_a_dropped_caption_is_the_empty_prompt_with_the_empty_prompts_mask(ragged, make_run_config):
    """Classifier-free guidance's unconditional samples: the null embedding and its own mask (start
    and end of text), never the dropped caption's mask over the null states."""
    data = LatentTextDataset(*ragged)
    batch = data.__getitems__([0, 1, 2, 3])
    null_mask = torch.zeros(1, 77, dtype=torch.int64)
    null_mask[0, :2] = 1
    ctx, s, _, _ = _setup(make_run_config, data, null_mask)
    draws = step_noise(0, 0, 4, data.latent_shape, 1000, 1.0, "cpu")  # every caption dropped
    seen = {}

    def unet(noisy, timesteps, encoder_hidden_states, encoder_attention_mask):
        seen["hidden"], seen["mask"] = encoder_hidden_states, encoder_attention_mask
        return SimpleNamespace(sample=torch.zeros_like(noisy))

    loss_of(ctx, s, unet, batch, draws, 0)
    assert torch.equal(seen["mask"], null_mask.expand(4, 77))
    assert torch.equal(seen["hidden"], s.null.expand(4, 77, -1))
