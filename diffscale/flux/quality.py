"""Image quality of a LoRA checkpoint against its training images: PSNR and SSIM, and sample grids.

Protocol (what flux_quality.csv reports). At every checkpoint (and at step 0, the base model),
for each training image: generate an image from that image's own caption (its cached T5 and CLIP
embeddings), at that image's bucket size, with `flux.inference_steps` Euler steps (schnell,
guidance off) from a fixed seed per image (`seed * 1000 + index`, the same at every checkpoint),
decode it, and compare it with the training image as prepared (bucket-cropped), both RGB in
[0, 1]. PSNR = 10 log10(1 / MSE); SSIM with the standard settings of Wang et al. 2004 (as
scikit-image and torchmetrics use them): Gaussian window 11 px, sigma 1.5, K1 0.01, K2 0.03, data
range 1, computed per channel over the window positions that fit inside the image ("valid", as
scikit-image crops the border), then averaged. The table gives the mean over the training images
(the first `flux.quality_images` of them by name, when set).
A LoRA that memorises its subject scores higher with steps; with random weights (the demo) the
figures only show that the pipeline runs, and the table says `random_weights`.
"""

from __future__ import annotations

import math
from pathlib import Path

WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def psnr(a, b) -> float:
    """PSNR in dB of two images in [0, 1] ([3, H, W] or [B, 3, H, W]); inf when identical."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float):
    import torch

    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a, b) -> float:
    """Mean SSIM of two images in [0, 1] ([3, H, W] or [B, 3, H, W]), data range 1."""
    import torch.nn.functional as F

    a, b = a.double(), b.double()
    if a.dim() == 3:
        a, b = a[None], b[None]
    channels = a.shape[1]
    size = min(WINDOW, a.shape[-1], a.shape[-2])
    window = _gaussian_window(size, SIGMA).to(a.device)[None, None].expand(channels, 1, size, size)

    def blur(x):
        return F.conv2d(x, window, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = K1 ** 2, K2 ** 2
    # weighted (population) moments, as torchmetrics and scikit-image (gaussian_weights=True,
    # use_sample_covariance=False) compute them for Wang et al.'s settings
    score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(score.mean())


def to_pil(image):
    """[3, H, W] in [0, 1] to a PIL image."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def grid(rows: list[list[str | Path | None]], tile: int | None = None):
    """A PIL image: one row per run, one column per checkpoint; None leaves a cell blank.

    Tiles are resized to `tile` px (default: the first image's height)."""
    from PIL import Image

    paths = [p for row in rows for p in row if p]
    if not paths:
        raise ValueError("no sample images for the grid")
    with Image.open(paths[0]) as first:
        tile = tile or first.height
    cols = max(len(row) for row in rows)
    canvas = Image.new("RGB", (cols * tile, len(rows) * tile), "white")
    for r, row in enumerate(rows):
        for c, path in enumerate(row):
            if path:
                with Image.open(path) as img:
                    canvas.paste(img.convert("RGB").resize((tile, tile)), (c * tile, r * tile))
    return canvas
