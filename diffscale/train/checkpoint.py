"""The U-Net's checkpoints: the shared format (diffscale.train.core.checkpoint) plus what is U-Net's own.

A checkpoint holds the model, its EMA, the optimizer, the grad scaler, the learning-rate
schedule, the step, every process's RNG states, the run config, and what sampling needs (the
U-Net's architecture config, the noise schedule, the unconditional embedding, the latent shape
and scaling factor), plus the metrics rows so far, so a resumed run writes a complete metrics.csv.
A run directory `results/train/unet/{hw}/{precision}-g{gpus}/` declares checkpoint.pt; the loop
checkpoints to `resume/last.pt` inside it (see the core module for why).
"""

from __future__ import annotations

from pathlib import Path

from diffscale.errors import ModelSpecError
from diffscale.train.core import checkpoint as core
from diffscale.train.core.checkpoint import FINAL_FILE, RESUME_DIR, RESUME_FILE, resume_path  # noqa: F401

FORMAT = "diffscale-unet-checkpoint"
VERSION = 1
KIND = "diffscale U-Net"


def save(path: str | Path, checkpoint: dict) -> Path:
    return core.save(path, checkpoint, FORMAT, VERSION)


def load(path: str | Path) -> dict:
    """Read a checkpoint on the CPU; a missing, truncated or foreign file is a DataError naming it."""
    return core.load(path, FORMAT, VERSION, KIND)


def check_weights(state: dict, model, where: str, expected: str) -> None:
    """Raise ModelSpecError naming the first tensor whose name or shape the model does not share."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise ModelSpecError(f"{where}: holds no {name!r}; it is not a checkpoint of {expected}")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ModelSpecError(
                f"{where}: a U-Net of another size than {expected}: {name} is {list(state[name].shape)} "
                f"in the checkpoint, {list(tensor.shape)} in the model")
    extra = sorted(set(state) - set(own))
    if extra:
        raise ModelSpecError(f"{where}: has {extra[0]!r}, which {expected} lacks; it is another architecture")


def full_unet_config(arch: dict) -> dict:
    """An architecture config with the class defaults filled in, as a built model's `config` is."""
    import torch
    from diffusers import UNet2DConditionModel

    if hasattr(torch, "get_default_device"):  # the meta device as a context: nothing is allocated
        with torch.device("meta"):
            return dict(UNet2DConditionModel.from_config(arch).config)
    return dict(UNet2DConditionModel.from_config(arch).config)


def architecture_differences(saved: dict, current: dict) -> list[str]:
    """Keys of two full architecture configs whose values differ (private `_` keys ignored)."""
    keys = {k for k in set(saved) | set(current) if not str(k).startswith("_")}
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return sorted(k for k in keys if norm(saved.get(k)) != norm(current.get(k)))

