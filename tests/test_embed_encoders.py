import numpy as np
import pytest
import torch
from PIL import Image

from diffscale.embed import encoders
from diffscale.embed.inputs import ImageItem, TextItem
from diffscale.tokenize import CONTEXT_LENGTH, END_OF_TEXT, ClipTokenizer


def _halves(path, width, height, fmt="PNG"):
    """Left half red, right half blue: a center crop must keep both, a bad crop would not."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    Image.fromarray(array).save(path, format=fmt)
    return path


def test_load_image_resizes_shorter_side_and_center_crops(tmp_path):
    out = encoders.load_image(str(_halves(tmp_path / "wide.png", 256, 128)), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # the 128x64 resize keeps the middle 64 columns: 32 red then 32 blue
    assert (out[:, :30, 0] > 200).all() and (out[:, 34:, 2] > 200).all()
    tall = encoders.load_image(str(_halves(tmp_path / "tall.png", 100, 300)), 48)
    assert tall.shape == (48, 48, 3)


def test_jpeg_draft_decode_matches_full_decode(tmp_path, monkeypatch):
    from diffscale.data.synthetic import draw_image

    path = tmp_path / "photo.jpg"
    draw_image(np.random.default_rng(1), 640, 480).save(path, quality=92)
    decoded = []
    convert = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: decoded.append(self.size) or convert(self, *a, **k))
    drafted = encoders.load_image(str(path), 128).astype(float)
    assert decoded == [(160, 120)]  # decoded at 1/4 scale, the smallest whose short side keeps >= 90 % of 128 px
    monkeypatch.undo()
    with Image.open(path) as img:
        full = np.asarray(img.convert("RGB").resize((171, 128), Image.Resampling.BICUBIC).crop((21, 0, 149, 128)))
    assert np.abs(drafted - full).mean() < 6  # same picture; DCT scaling differs only in detail


def test_unreadable_images_are_skipped_and_named(tmp_path):
    good = _halves(tmp_path / "good.png", 80, 80)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (200, 200), (9, 9, 9)).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:300])
    items = [ImageItem(1, str(good)), ImageItem(2, str(bad)), ImageItem(3, str(tmp_path / "missing.jpg")),
             ImageItem(4, str(truncated))]
    prepared = encoders.ImageLoader(32)(items)
    assert prepared.columns["image_id"].tolist() == [1]
    assert prepared.inputs.shape == (1, 32, 32, 3)
    assert [s["image_id"] for s in prepared.skipped] == [2, 3, 4]
    assert prepared.skipped[0]["reason"].startswith("unreadable: UnidentifiedImageError")
    assert "FileNotFoundError" in prepared.skipped[1]["reason"]
    assert prepared.skipped[1]["file_name"] == "missing.jpg"


def test_all_unreadable_batch_is_empty(tmp_path):
    prepared = encoders.ImageLoader(16)([ImageItem(9, str(tmp_path / "none.jpg"))])
    assert prepared.size == 0 and prepared.inputs.shape == (0, 16, 16, 3)


def test_image_embedder_outputs_mean_std_and_scaling_factor(tmp_path):
    embedder = encoders.ImageEmbedder({"random": "tiny"}, "cpu", "fp32", "fp16", seed=0)
    assert embedder.meta()["scaling_factor"] == pytest.approx(0.18215)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    out = embedder.compute(pixels)
    assert set(out) == {"latent_mean", "latent_std"}
    assert out["latent_mean"].shape == (3, 4, 8, 8) and out["latent_mean"].dtype == torch.float16
    assert (out["latent_std"] > 0).all()
    # the same as the model's own encode of the [-1, 1] image
    x = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        ref = embedder.model.encode(x).latent_dist.mean
    torch.testing.assert_close(out["latent_mean"].float(), ref, atol=2e-3, rtol=2e-3)


def test_vae_gets_a_contiguous_nchw_batch_as_the_bare_benchmark_does():
    """A permuted HWC batch is channels_last in memory and the first convolution hands that layout
    on to the whole encoder; the pipeline must run the layout the bare model is measured in."""
    embedder = encoders.ImageEmbedder({"random": "tiny"}, "cpu", "fp32", "fp32", seed=0)
    seen = {}

    def note(module, args):
        seen["contiguous"] = args[0].is_contiguous()
        seen["channels_last"] = args[0].is_contiguous(memory_format=torch.channels_last)

    hook = embedder.model.encoder.conv_in.register_forward_pre_hook(note)
    try:
        pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
        out = embedder.compute(pixels)
    finally:
        hook.remove()
    assert seen == {"contiguous": True, "channels_last": False}
    x = (pixels.permute(0, 3, 1, 2).float() / 127.5 - 1).contiguous()
    with torch.inference_mode():
        ref = embedder.model.encode(x).latent_dist.mean
    assert torch.equal(out["latent_mean"], ref)


def test_text_loader_reports_truncation_and_mask():
    items = [TextItem(7, 0, "a photo of a cat"), TextItem(7, 1, " ".join(["word"] * 100))]
    prepared = encoders.TextLoader(ClipTokenizer())(items)
    ids = prepared.inputs
    assert ids.shape == (2, CONTEXT_LENGTH) and ids.dtype == torch.int64
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (ids[0, 7:] == END_OF_TEXT).all()
    assert prepared.columns["mask"].dtype == torch.int8
    assert prepared.columns["mask"][0].sum() == 7 and prepared.columns["mask"][1].sum() == CONTEXT_LENGTH
    assert prepared.columns["truncated"].tolist() == [False, True]
    assert prepared.truncated == [[7, 1, 102]]


def test_text_embedder_hidden_pooled_shapes():
    embedder = encoders.TextEmbedder({"random": "tiny"}, "cpu", "fp32", "fp32", seed=0)
    prepared = encoders.TextLoader(ClipTokenizer())([TextItem(1, 0, "two dogs"), TextItem(2, 0, "a red bus")])
    out = embedder.compute(prepared.inputs)
    assert out["hidden"].shape == (2, 77, 32) and out["pooled"].shape == (2, 32)
    # pooled is the end-of-text token's final state
    eot = (prepared.inputs == END_OF_TEXT).int().argmax(dim=1)
    torch.testing.assert_close(out["pooled"], out["hidden"][torch.arange(2), eot])


def test_embedder_is_built_once_per_process():
    a = encoders.embedder("text", {"random": "tiny"}, "cpu", "fp32", "fp32", 0)
    b = encoders.embedder("text", {"random": "tiny"}, "cpu", "fp32", "fp32", 0)
    assert a is b
