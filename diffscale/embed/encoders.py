"""The per-item work of each modality: prepare a batch on the CPU, then run the model on it.

Preparing (decode + resize + center-crop; tokenize) needs no model, so the GPU path runs it in
loader processes while the device computes (diffscale.embed.worker). Computing needs the model,
loaded once per worker process by `embedder()` from the factory (diffscale.models.build) and never
shipped through a task graph.

Images: JPEGs are decoded at the smallest DCT scale whose shorter side is still at least 90 % of
the target size (PIL draft mode: COCO's 640x480 decode at 320x240 for a 256 px crop, deterministic),
and only the center square is resampled to `image_size` (bicubic): ~4x less CPU per image than
decoding and resizing the whole picture. Pixels travel as uint8 (a quarter of the bytes of fp32
over PCIe) and become contiguous NCHW [-1, 1] floats on the compute device. The VAE's
latent distribution is stored as mean and std; the scaling factor (0.18215 for SD's VAE) comes
from the VAE config and is recorded in the index.

Text: the SD text tower's last hidden state, its pooled output (the end-of-text token's state)
and the attention mask. The model is called without the mask, as Stable Diffusion 1.x does. With
`text_storage: full` all 77 positions are stored, so padded positions carry the states SD
conditions on; with `ragged` (the default) only each caption's real tokens (start, words, end:
~15 of 77 on COCO) are kept — selected on the compute device from indices the loader computes,
so nothing waits on the device and only real tokens cross to the host — plus their count; the
reader pads back to 77 with zeros and the mask, and the U-Net attends with that mask.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from diffscale.embed.settings import MODEL_ROLE, TORCH_DTYPES

# Decode a JPEG at a reduced scale while its shorter side keeps at least this fraction of the
# target size (upsampled by at most 1/0.9 - 1 = 11%): 640x480 -> 256 px decodes at 320x240.
DRAFT_MIN = 0.9
# PIL's ways of saying "not an image I can decode": corrupt, truncated, missing, not an image, huge.
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

TENSOR_NAMES = {
    "images": ("image_id", "latent_mean", "latent_std"),
    "text": ("image_id", "caption_index", "hidden", "mask", "pooled", "truncated"),
    "text-ragged": ("image_id", "caption_index", "tokens", "lengths", "pooled", "truncated"),
}


def tensor_names(modality: str, text_storage: str = "full") -> tuple[str, ...]:
    """The tensors a worker's batches carry (ragged text: per-token `tokens` and per-item `lengths`)."""
    return TENSOR_NAMES["text-ragged" if modality == "text" and text_storage == "ragged" else modality]


def torch_dtype(name: str):
    import torch

    return getattr(torch, TORCH_DTYPES[name])


def load_image(path: str, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: the center square, resized to `size` (bicubic).

    Decodes only what is needed: JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) whose shorter
    side is still at least DRAFT_MIN of `size` (COCO's 640x480 at 320x240 for 256 px: ~5x less
    decode work), and resamples only the center square, not the whole picture."""
    with Image.open(path) as img:
        width, height = img.size
        fraction = DRAFT_MIN * size / min(width, height)
        img.draft("RGB", (math.ceil(width * fraction), math.ceil(height * fraction)))  # JPEG only
        rgb = img.convert("RGB")
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)))


def _cast(dtype):
    """The dtype to cast a freshly built model to: none for fp32, which models are built in."""
    import torch

    return None if dtype == torch.float32 else dtype


@dataclass
class Prepared:
    """One batch ready to compute: ids and inputs of the items that could be read."""

    columns: dict[str, Any]  # image_id (and caption_index, truncated, mask) as torch tensors
    inputs: Any  # uint8 pixels [n, H, W, 3], int64 token ids [n, 77], or TextInputs
    skipped: list[dict] = field(default_factory=list)
    truncated: list[list[int]] = field(default_factory=list)  # [image_id, caption_index, tokens]
    seconds: float = 0.0  # how long preparing it took (decode or tokenize)

    @property
    def size(self) -> int:
        return len(self.columns["image_id"])

    def __getstate__(self) -> dict:
        """Pickled for the trip from a loader process: torch sends a tensor as a shared-memory file
        descriptor, ~0.25 ms of the receiver's time apiece, while bytes cost ~0.5 ms per MB, so
        small tensors (ids, token ids, masks) travel as numpy bytes and large ones (pixels) shared."""
        return {**self.__dict__, "columns": {k: _small_as_numpy(v) for k, v in self.columns.items()},
                "inputs": (tuple(_small_as_numpy(t) for t in (self.inputs.input_ids, self.inputs.keep))
                           if isinstance(self.inputs, TextInputs) else _small_as_numpy(self.inputs))}

    def __setstate__(self, state: dict) -> None:
        state["columns"] = {k: _as_tensor(v) for k, v in state["columns"].items()}
        inputs = state["inputs"]
        state["inputs"] = TextInputs(*map(_as_tensor, inputs)) if isinstance(inputs, tuple) else _as_tensor(inputs)
        self.__dict__.update(state)

    def pin_memory(self) -> "Prepared":
        """The same batch with its inputs in page-locked memory, so the copy to a GPU can overlap
        compute (the GPU path's loader thread pins each batch as it arrives)."""
        inputs = self.inputs
        if isinstance(inputs, TextInputs):
            inputs = TextInputs(inputs.input_ids.pin_memory(), None if inputs.keep is None else inputs.keep.pin_memory())
        else:
            inputs = inputs.pin_memory()
        return replace(self, inputs=inputs)


SHARE_ABOVE = 1 << 20  # bytes: a larger tensor goes between processes through shared memory


def _small_as_numpy(tensor):
    if tensor is None or tensor.numel() * tensor.element_size() >= SHARE_ABOVE:
        return tensor
    return tensor.numpy()


def _as_tensor(value):
    import torch

    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


class ImageLoader:
    def __init__(self, image_size: int):
        self.image_size = image_size

    def _one(self, item):
        try:
            return load_image(item.path, self.image_size), None
        except UNREADABLE as exc:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            return None, f"unreadable: {type(exc).__name__}" + (f": {detail}" if detail else "")

    def __call__(self, items) -> Prepared:
        import torch

        start = time.perf_counter()
        results = [self._one(i) for i in items]
        ids, pixels, skipped = [], [], []
        for item, (array, error) in zip(items, results):
            if error:
                skipped.append({"image_id": item.image_id, "file_name": os.path.basename(item.path), "path": item.path,
                                "reason": error, "source": "embed"})
            else:
                ids.append(item.image_id)
                pixels.append(array)
        size = self.image_size
        batch = torch.from_numpy(np.stack(pixels)) if pixels else torch.empty(0, size, size, 3, dtype=torch.uint8)
        return Prepared({"image_id": torch.tensor(ids, dtype=torch.int64)}, batch, skipped,
                        seconds=time.perf_counter() - start)


def real_positions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths int32 [n], flat indices int64 of the real positions in [n * context]) of a mask
    whose real tokens come first (CLIP pads on the right); anything else is refused."""
    n, context = mask.shape
    lengths = mask.sum(axis=1).astype(np.int32)
    if not (mask.astype(bool) == (np.arange(context)[None, :] < lengths[:, None])).all():
        raise ValueError("ragged text storage needs right-padded token masks")
    flat = (np.arange(n)[:, None] * context + np.arange(context)[None, :])[mask.astype(bool)]
    return lengths, flat.astype(np.int64)


@dataclass
class TextInputs:
    """Token ids [n, 77] and, for ragged storage, the flat indices of the real positions."""

    input_ids: Any
    keep: Any = None

    def __len__(self) -> int:
        return len(self.input_ids)


class TextLoader:
    def __init__(self, tokenizer, ragged: bool = False):
        self.tokenizer = tokenizer
        self.ragged = ragged

    def __call__(self, items) -> Prepared:
        import torch

        start = time.perf_counter()
        tokens = self.tokenizer([item.caption for item in items])
        ids = torch.from_numpy(tokens.input_ids)
        columns = {
            "image_id": torch.tensor([i.image_id for i in items], dtype=torch.int64),
            "caption_index": torch.tensor([i.caption_index for i in items], dtype=torch.int64),
            "truncated": torch.from_numpy(tokens.truncated),
        }
        keep = None
        if self.ragged:
            lengths, flat = real_positions(tokens.attention_mask)
            columns["lengths"] = torch.from_numpy(lengths)
            keep = torch.from_numpy(flat)
        else:
            columns["mask"] = torch.from_numpy(tokens.attention_mask.astype(np.int8))
        inputs = TextInputs(ids, keep) if self.ragged else ids
        truncated = [[item.image_id, item.caption_index, int(n)]
                     for item, cut, n in zip(items, tokens.truncated, tokens.lengths) if cut]
        return Prepared(columns, inputs, [], truncated, seconds=time.perf_counter() - start)


class ImageEmbedder:
    modality = "images"

    def __init__(self, spec: dict, device: str, compute_dtype: str, store_dtype: str, seed: int):
        from diffscale import models

        self.device, self.dtype, self.store_dtype = device, torch_dtype(compute_dtype), torch_dtype(store_dtype)
        self.model = models.build(MODEL_ROLE[self.modality], spec, seed=seed, device=device,
                                  dtype=_cast(self.dtype))
        self.scaling_factor = float(self.model.config.scaling_factor)
        shift = getattr(self.model.config, "shift_factor", None)
        self.shift_factor = None if shift is None else float(shift)

    def compute(self, pixels) -> dict:
        """uint8 [n, H, W, 3] (any device) -> latent mean and std on the compute device.

        The VAE gets a contiguous NCHW batch, the layout of the bare model's benchmark and of
        every other caller: a permuted HWC batch is channels_last in memory, and a convolution
        hands that layout on to the whole encoder (the DDPM study's U-Net trained 12 % slower in
        channels_last than contiguous on an H200)."""
        import torch

        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        x = (x.to(torch.float32) / 127.5 - 1.0).to(self.dtype).contiguous()
        with torch.inference_mode():
            dist = self.model.encode(x).latent_dist
        return {"latent_mean": dist.mean.to(self.store_dtype), "latent_std": dist.std.to(self.store_dtype)}

    def meta(self) -> dict:
        return {"scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor,
                "latent_channels": int(self.model.config.latent_channels)}


class TextEmbedder:
    modality = "text"

    def __init__(self, spec: dict, device: str, compute_dtype: str, store_dtype: str, seed: int):
        from diffscale import models

        self.device, self.dtype, self.store_dtype = device, torch_dtype(compute_dtype), torch_dtype(store_dtype)
        self.model = models.build(MODEL_ROLE[self.modality], spec, seed=seed, device=device,
                                  dtype=_cast(self.dtype))

    def compute(self, inputs) -> dict:
        """Token ids (or TextInputs) -> hidden states [n, 77, D] (ragged: `tokens` [real, D]) and pooled."""
        import torch

        inputs = inputs if isinstance(inputs, TextInputs) else TextInputs(inputs)
        with torch.inference_mode():
            out = self.model(input_ids=inputs.input_ids.to(self.device, non_blocking=True))
            pooled = out.pooler_output.to(self.store_dtype)
            hidden = out.last_hidden_state
            if inputs.keep is None:
                return {"hidden": hidden.to(self.store_dtype), "pooled": pooled}
            keep = inputs.keep.to(self.device, non_blocking=True)
            tokens = hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)
        return {"tokens": tokens.to(self.store_dtype), "pooled": pooled}

    def meta(self) -> dict:
        config = self.model.config
        return {"hidden_size": int(config.hidden_size), "context_length": int(config.max_position_embeddings)}


EMBEDDERS = {"images": ImageEmbedder, "text": TextEmbedder}


def embedder(modality: str, spec: dict, device: str, compute_dtype: str, store_dtype: str, seed: int):
    """The worker process's model for this modality: built on first use, then reused."""
    return _embedder(modality, json.dumps(spec, sort_keys=True), device, compute_dtype, store_dtype, seed)


@lru_cache(maxsize=2)
def _embedder(modality: str, spec_json: str, device: str, compute_dtype: str, store_dtype: str, seed: int):
    return EMBEDDERS[modality](json.loads(spec_json), device, compute_dtype, store_dtype, seed)


def loader(modality: str, spec: dict, image_size: int | None, text_storage: str = "full"):
    """The CPU side of a batch: image decoding, or tokenizing with the text encoder's own tokenizer."""
    if modality == "images":
        return ImageLoader(image_size)
    return TextLoader(_tokenizer(json.dumps(spec, sort_keys=True)), ragged=text_storage == "ragged")


@lru_cache(maxsize=2)
def _tokenizer(spec_json: str):
    from diffscale.tokenize import tokenizer_for

    return tokenizer_for(json.loads(spec_json))
