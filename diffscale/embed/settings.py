"""What one embedding run depends on, as a JSON-able slice of the config.

The rules pass exactly this slice as a `params:` value, so editing the image size re-runs the image
runs and nothing else, and a dask setting re-runs only the dask runs. The CLI builds the same
slice from a config file when run by hand (`--config`), so both paths agree by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diffscale import models, vocab
from diffscale.errors import ConfigError
from diffscale.vocab import BACKENDS, MODALITIES, POLICIES, one_of  # noqa: F401 - the owner is diffscale.vocab

MODEL_ROLE = {"images": "vae", "text": "text_encoder"}
TEXT_STORAGE = vocab.TEXT_STORAGE
TORCH_DTYPES = vocab.DTYPES
HARDWARE_KEYS = ("partition", "device", "gpu_model", "gpus_per_node")


@dataclass(frozen=True)
class EmbedSettings:
    modality: str
    model: dict  # the factory spec of models.vae or models.text_encoder
    batch_size: int
    dtype: str  # storage dtype of the shards; also the compute dtype on GPUs
    cpu_dtype: str  # compute dtype on CPUs (bf16 is slow on CPUs without AMX)
    shard_size: int  # items per shard, rounded down to whole batches
    seed: int  # random-weight models are built from it, identically in every worker
    hw: str
    hardware: dict  # the hardware table entry of `hw`
    image_size: int | None = None
    loader_workers: int = 0  # loader processes per GPU (0: stage.loader_workers decides)
    dask: dict = field(default_factory=dict)
    text_storage: str = "ragged"  # text only: ragged (real tokens) or full (all 77 positions)
    max_images: int | None = None  # the first N usable images only (CPU scaling runs: embed.scaling_images)

    @property
    def role(self) -> str:
        return MODEL_ROLE[self.modality]

    def compute_dtype(self, device: str) -> str:
        return self.dtype if device.startswith("cuda") else self.cpu_dtype

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "EmbedSettings":
        try:
            settings = cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"embed settings: {exc}") from None
        one_of(settings.modality, MODALITIES, "embed settings: modality")
        for key in ("dtype", "cpu_dtype"):
            one_of(getattr(settings, key), TORCH_DTYPES, f"embed.{key}")
        one_of(settings.text_storage, TEXT_STORAGE, "embed.text_storage")
        if settings.modality == "images" and not settings.image_size:
            raise ConfigError("embed.image_size: required for the images modality")
        return settings


def settings_for(cfg: dict, modality: str, backend: str) -> dict:
    """The config slice one `{modality}` run of `backend` depends on (validated config in)."""
    one_of(modality, MODALITIES, "embed: modality")
    one_of(backend, BACKENDS, "embed: backend")
    embed = cfg["embed"]
    if backend == "gpu" and not embed.get("gpu_hardware"):
        raise ConfigError("embed.gpu_hardware: required for the gpu backend (the hardware key its runs use)")
    hw = embed["gpu_hardware"] if backend == "gpu" else embed["hardware"]
    vocab.hardware_entry(cfg, hw, "embed")
    out: dict[str, Any] = dict(
        modality=modality,
        model=cfg["models"][MODEL_ROLE[modality]],
        batch_size=embed["batch_size"] if modality == "images" else embed["text_batch_size"],
        dtype=embed["dtype"],
        cpu_dtype=embed["cpu_dtype"],
        shard_size=embed["shard_size"],
        # random weights come from the spec's own seed, so the training and generate.py rebuild
        # exactly the encoder that made these embeddings, whatever the run's seed
        seed=models.parse_spec(MODEL_ROLE[modality], cfg["models"][MODEL_ROLE[modality]]).seed,
        hw=hw,
        # what decides where the run computes; a price or a run-time limit does not re-run it
        hardware={k: v for k, v in cfg["hardware"][hw].items() if k in HARDWARE_KEYS},
    )
    if modality == "images":
        out["image_size"] = embed["image_size"]
    else:
        out["text_storage"] = embed.get("text_storage", "ragged")
    if backend == "gpu":
        out["loader_workers"] = embed["loader_workers"]
    elif embed.get("scaling_images"):
        out["max_images"] = embed["scaling_images"]
    if backend == "dask":
        out["dask"] = embed["dask"]
    return out
