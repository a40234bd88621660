"""LoRA on the FLUX transformer through peft, saved in the format FluxPipeline loads.

As diffusers' train_dreambooth_lora_flux.py: the base transformer is frozen; `add_adapter` puts a
peft LoRA (rank, alpha, dropout, Gaussian init of A, zero B, so training starts from the base
model's output) on the modules named by `flux.lora_targets`; the LoRA weights train in fp32 while
the frozen base stays in its compute dtype; `save` writes them through
`FluxPipeline.save_lora_weights` (keys `transformer.<module>.lora_A.weight` / `.lora_B.weight`),
which `FluxPipeline.load_lora_weights` reads back.

The training adapter (`flux.training_adapter`, as ai-toolkit does for schnell): a LoRA file loaded
as a second, frozen adapter that is active while training and switched off for sampling, so the
trained LoRA learns the subject on a de-distilled model and is used on the 4-step one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from diffscale import atomic
from diffscale.errors import ConfigError, DataError

ADAPTER = "default"
TRAINING_ADAPTER = "training_adapter"


def add_lora(transformer, flux: dict, seed: int) -> list:
    """Freeze the transformer, add the LoRA, and return its (fp32) trainable parameters."""
    import torch
    from peft import LoraConfig

    transformer.requires_grad_(False)
    config = LoraConfig(r=flux["lora_rank"], lora_alpha=flux["lora_alpha"], lora_dropout=flux["lora_dropout"],
                        init_lora_weights="gaussian", target_modules=list(flux["lora_targets"]))
    devices = [transformer.device.index or 0] if transformer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            transformer.add_adapter(config, adapter_name=ADAPTER)
        except ValueError as exc:
            raise ConfigError(f"flux.lora_targets: {exc.args[0].splitlines()[0] if exc.args else exc}") from None
    if flux.get("training_adapter"):
        load_training_adapter(transformer, flux["training_adapter"])
    params = [p for n, p in transformer.named_parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def load_adapter(transformer, path: str | Path, name: str, what: str) -> None:
    """A LoRA .safetensors file as adapter `name`, with the adapter config the file stores (alpha:
    see `lora_metadata`; diffusers reads that config only when told the file is safetensors). A file
    that is not a LoRA of this transformer is a DataError naming `what` (the flag or key) and the file."""
    from safetensors import SafetensorError

    try:
        transformer.load_lora_adapter(str(path), adapter_name=name, prefix="transformer", use_safetensors=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what}: {path} is not a LoRA of this transformer ({first})") from None
    if name not in (getattr(transformer, "peft_config", None) or {}):  # diffusers skips a file without LoRA keys
        raise DataError(f"{what}: {path} holds no LoRA weights for this transformer "
                        f"(keys transformer.<module>.lora_A/lora_B expected)")


def check_file(path: str | Path, what: str) -> None:
    """A DataError naming `what` unless `path` is a .safetensors file with LoRA weights of a
    transformer (keys transformer.<module>.lora_A/lora_B): read from its header, before any model
    is built."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise DataError(f"{what}: {path} not found (a LoRA .safetensors file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (OSError, SafetensorError, ValueError) as exc:
        raise DataError(f"{what}: {path} is not a LoRA .safetensors file ({str(exc).strip() or type(exc).__name__})") from None
    if not any(k.startswith("transformer.") and ".lora_A." in k for k in keys):
        raise DataError(f"{what}: {path} holds no LoRA weights for a transformer "
                        f"(keys transformer.<module>.lora_A/lora_B expected)")


def load_training_adapter(transformer, path: str) -> None:
    """A frozen second adapter, active with ours while training (see `sampling`)."""
    check_file(path, "flux.training_adapter")
    load_adapter(transformer, path, TRAINING_ADAPTER, "flux.training_adapter")
    transformer.set_adapters([ADAPTER, TRAINING_ADAPTER])
    for name, param in transformer.named_parameters():
        param.requires_grad_(f".{ADAPTER}." in name)


@contextlib.contextmanager
def sampling(transformer, flux: dict):
    """Sample with our LoRA only (the training adapter, if any, switched off), in eval mode."""
    was_training = transformer.training
    transformer.eval()
    if flux.get("training_adapter"):
        transformer.set_adapters([ADAPTER])
    try:
        yield
    finally:
        if flux.get("training_adapter"):
            transformer.set_adapters([ADAPTER, TRAINING_ADAPTER])
            for name, param in transformer.named_parameters():
                param.requires_grad_(f".{ADAPTER}." in name)
        transformer.train(was_training)


def lora_state(transformer) -> dict:
    """Our LoRA's weights (peft names without the adapter name), on the CPU."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def load_lora_state(transformer, state: dict) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER)
    missing = [k for k in getattr(result, "unexpected_keys", []) or [] if "lora" in k]
    if missing:
        raise DataError(f"resume checkpoint: LoRA weight {missing[0]!r} does not fit the transformer")


def lora_metadata(transformer) -> dict:
    """Our adapter's peft config (rank, alpha, targets, ...), as diffusers' example stores it in the
    file: without it, a loader assumes alpha = rank and applies another LoRA strength."""
    return transformer.peft_config[ADAPTER].to_dict()


def save(state: dict, path: str | Path, metadata: dict) -> Path:
    """Write a LoRA state dict and its adapter config (`lora_metadata`) as
    FluxPipeline.save_lora_weights does, atomically, to `path`."""
    from diffusers import FluxPipeline

    path = Path(path)
    with atomic.atomic_path(path) as tmp:  # diffusers writes <folder>/<weight_name>: the temp name beside it
        FluxPipeline.save_lora_weights(tmp.parent, transformer_lora_layers=state, weight_name=tmp.name,
                                       transformer_lora_adapter_metadata=metadata)
    return path
