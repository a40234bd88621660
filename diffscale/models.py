"""The model factory: every model the pipeline uses is built here from a spec.

A spec is one of
  {pretrained: <hub id or local dir>}  real weights via diffusers/transformers `from_pretrained`;
  {random: <preset>}                   the same architecture with random weights (offline runs:
                                       timings are real, outputs are not);
  {random: tiny}                       a few-thousand-parameter version for tests and the demo.
Optional `subfolder` (for pipeline repos, e.g. text_encoder) and `overrides` (config fields).

Presets reproduce the published configs exactly, so parameter counts match the real models.
`describe()` is what every result records about the model it used.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffscale.errors import ModelSpecError

# --- presets ---------------------------------------------------------------------------------
# One place for every architecture. Keys are the `random:` names a config may use.

SD_VAE_FT_MSE = dict(  # stabilityai/sd-vae-ft-mse (= SD 1.x VAE)
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)

FLUX_VAE = dict(  # black-forest-labs/FLUX.1-schnell, subfolder vae
    SD_VAE_FT_MSE,
    latent_channels=16,
    sample_size=1024,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
)

# Four blocks like the real one, so images shrink 8x to latents exactly as in the full pipeline.
TINY_VAE = dict(
    SD_VAE_FT_MSE,
    block_out_channels=[32, 32, 64, 64],
    layers_per_block=1,
    sample_size=64,
)

CLIP_L_TEXT = dict(  # openai/clip-vit-large-patch14 text tower (SD 1.x text encoder)
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

# The tiny text tower keeps CLIP's vocabulary and context so real token ids go through it.
TINY_CLIP_TEXT = dict(CLIP_L_TEXT, hidden_size=32, intermediate_size=64, projection_dim=32,
                      num_hidden_layers=2, num_attention_heads=2)

T5_XXL_ENCODER = dict(  # google/t5-v1_1-xxl encoder (FLUX text_encoder_2)
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    is_encoder_decoder=False,
    use_cache=False,
    tie_word_embeddings=False,
)

TINY_T5_ENCODER = dict(T5_XXL_ENCODER, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2)

SD15_UNET = dict(  # runwayml/stable-diffusion-v1-5, subfolder unet
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)

# The study's default: SD's layout at a third of the width, conditioned on CLIP-L (768).
SMALL_UNET = dict(
    SD15_UNET,
    sample_size=32,
    down_block_types=["CrossAttnDownBlock2D"] * 2 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 2,
    block_out_channels=[128, 256, 512],
    attention_head_dim=8,
)

TINY_UNET = dict(
    SD15_UNET,
    sample_size=8,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[32, 64],
    layers_per_block=1,
    cross_attention_dim=TINY_CLIP_TEXT["hidden_size"],
    attention_head_dim=8,
)

FLUX_SCHNELL_TRANSFORMER = dict(  # black-forest-labs/FLUX.1-schnell, subfolder transformer
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=False,
    axes_dims_rope=[16, 56, 56],
)

TINY_FLUX_TRANSFORMER = dict(
    FLUX_SCHNELL_TRANSFORMER,
    in_channels=16,  # tiny VAE: 4 latent channels, packed 2x2
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=TINY_T5_ENCODER["d_model"],
    pooled_projection_dim=TINY_CLIP_TEXT["projection_dim"],
    axes_dims_rope=[4, 6, 6],
)

DDPM_CIFAR10_UNET = dict(  # google/ddpm-cifar10-32
    sample_size=32,
    in_channels=3,
    out_channels=3,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[128, 256, 256, 256],
    layers_per_block=2,
    act_fn="silu",
    attention_head_dim=None,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_eps=1e-6,
    norm_num_groups=32,
    center_input_sample=False,
    time_embedding_type="positional",
)

TINY_DDPM_UNET = dict(
    DDPM_CIFAR10_UNET,
    down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[32, 64],
    layers_per_block=1,
)


@dataclass(frozen=True)
class Role:
    """One kind of model the pipeline uses: its class and its presets."""

    cls: str  # "module:Class"
    presets: dict[str, dict]
    library: str  # diffusers | transformers (decides how configs are built)
    config_cls: str | None = None  # transformers config class


ROLES: dict[str, Role] = {
    "vae": Role("diffusers:AutoencoderKL", {"sd-vae-ft-mse": SD_VAE_FT_MSE, "tiny": TINY_VAE},
                "diffusers"),
    "text_encoder": Role("transformers:CLIPTextModel",
                         {"clip-vit-large-patch14": CLIP_L_TEXT, "tiny": TINY_CLIP_TEXT},
                         "transformers", "transformers:CLIPTextConfig"),
    "unet": Role("diffusers:UNet2DConditionModel",
                 {"sd15": SD15_UNET, "small": SMALL_UNET, "tiny": TINY_UNET}, "diffusers"),
    "flux_transformer": Role("diffusers:FluxTransformer2DModel",
                             {"flux.1-schnell": FLUX_SCHNELL_TRANSFORMER, "tiny": TINY_FLUX_TRANSFORMER},
                             "diffusers"),
    "flux_vae": Role("diffusers:AutoencoderKL", {"flux.1-schnell": FLUX_VAE, "tiny": TINY_VAE},
                     "diffusers"),
    "flux_clip": Role("transformers:CLIPTextModel",
                      {"clip-vit-large-patch14": CLIP_L_TEXT, "tiny": TINY_CLIP_TEXT},
                      "transformers", "transformers:CLIPTextConfig"),
    "flux_t5": Role("transformers:T5EncoderModel", {"t5-v1_1-xxl": T5_XXL_ENCODER, "tiny": TINY_T5_ENCODER},
                    "transformers", "transformers:T5Config"),
    "ddpm_unet": Role("diffusers:UNet2DModel", {"ddpm-cifar10-32": DDPM_CIFAR10_UNET, "tiny": TINY_DDPM_UNET},
                      "diffusers"),
}


def _import(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def model_class(role: str) -> Any:
    """The class a role builds (importing its library: the larger part of a cold start)."""
    return _import(ROLES[role].cls)


@dataclass(frozen=True)
class ModelSpec:
    role: str
    pretrained: str | None = None
    random: str | None = None
    subfolder: str | None = None
    overrides: dict = field(default_factory=dict)
    seed: int = 0  # of random weights: a frozen encoder rebuilt anywhere from one spec is the same

    def describe(self) -> dict:
        """What a result records about its model."""
        out: dict[str, Any] = {"role": self.role}
        if self.pretrained:
            out["pretrained"] = self.pretrained
            if self.subfolder:
                out["subfolder"] = self.subfolder
        else:
            out["random"] = self.random
            if self.seed:
                out["seed"] = self.seed
        if self.overrides:
            out["overrides"] = dict(self.overrides)
        return out

    @property
    def label(self) -> str:
        return self.pretrained if self.pretrained else f"random:{self.random}"


def parse_spec(role: str, raw: dict | ModelSpec, where: str | None = None) -> ModelSpec:
    """Turn a config mapping into a ModelSpec, or raise ModelSpecError naming `models.<role>`."""
    if isinstance(raw, ModelSpec):
        return raw
    where = where or f"models.{role}"
    if role not in ROLES:
        raise ModelSpecError(f"{where}: unknown model role {role!r} (known: {', '.join(ROLES)})")
    if not isinstance(raw, dict) or ("pretrained" in raw) == ("random" in raw):
        raise ModelSpecError(f"{where}: give exactly one of 'pretrained: <hub id or dir>' or 'random: <preset>'")
    unknown = set(raw) - {"pretrained", "random", "subfolder", "overrides", "seed"}
    if unknown:
        raise ModelSpecError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    if "seed" in raw and ("random" not in raw or not isinstance(raw["seed"], int) or raw["seed"] < 0):
        raise ModelSpecError(f"{where}.seed: a non-negative integer, and only with 'random:' (pretrained weights have none)")
    if "random" in raw and raw["random"] not in ROLES[role].presets:
        known = ", ".join(ROLES[role].presets)
        raise ModelSpecError(f"{where}.random: unknown preset {raw['random']!r} for {role} (known: {known})")
    return ModelSpec(role, raw.get("pretrained"), raw.get("random"), raw.get("subfolder"),
                     dict(raw.get("overrides") or {}), int(raw.get("seed", 0)))


def preset_config(spec: ModelSpec) -> dict:
    """The architecture config of a random spec (preset plus overrides, checked by name)."""
    if spec.random is None:
        raise ModelSpecError(f"models.{spec.role}: a pretrained model's config comes from its files")
    check_overrides(spec)
    return {**ROLES[spec.role].presets[spec.random], **spec.overrides}


def check_overrides(spec: ModelSpec) -> None:
    """A ModelSpecError naming the first override that the model class does not take (diffusers and
    transformers would only warn that they ignore it, and build the preset without it)."""
    if not spec.overrides:
        return
    role = ROLES[spec.role]
    if role.library == "diffusers":
        import inspect

        known = set(inspect.signature(_import(role.cls).__init__).parameters) - {"self"}
    else:  # the config's fields and the aliases it maps onto them (T5's num_hidden_layers: num_layers)
        config_cls = _import(role.config_cls)
        known = set(config_cls().to_dict()) | set(getattr(config_cls, "attribute_map", {}))
    unknown = sorted(set(spec.overrides) - known)
    if unknown:
        raise ModelSpecError(f"models.{spec.role}.overrides: unknown key {unknown[0]!r} for "
                             f"{role.cls.split(':')[1]} (a typo? see its config fields)")


@contextlib.contextmanager
def _overrides_named(spec: ModelSpec):
    """A model that does not build from its preset and overrides is one line naming them."""
    try:
        yield
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError, IndexError) as exc:
        import torch

        if not spec.overrides or isinstance(exc, torch.OutOfMemoryError) or "CUDA" in str(exc):
            raise  # a preset that does not build is a bug; out of memory is the device's, said by the caller
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelSpecError(f"models.{spec.role}.overrides: the {spec.random} preset does not build with "
                             f"{spec.overrides}: {type(exc).__name__}: {first}") from None


def _from_config(role: Role, config: dict):
    cls = _import(role.cls)
    if role.library == "diffusers":
        return cls.from_config(config)
    config_obj = _import(role.config_cls)(**config)
    return cls(config_obj)


def build(role: str, raw_spec: dict | ModelSpec, *, seed: int | None = None, device: str = "cpu", dtype=None,
          on_device: bool = False):
    """Build the model a spec describes, in eval mode, on `device`.

    Random weights come from the spec's `seed` (default 0), so every stage that rebuilds a frozen
    model from the same spec gets the same weights; `seed` overrides it for models a run trains
    from scratch.

    `on_device=True` (large models): random weights are created and initialised directly on
    `device` in `dtype` (seeded there: on a GPU they differ from a CPU build of the same seed), so
    the 11.9B FLUX transformer starts in seconds instead of minutes. Pretrained weights always
    load in `dtype` (`torch_dtype`), which keeps the modules a model keeps in fp32 (a blanket
    `.to(dtype)` would put T5's `wo` in fp16, where it overflows)."""
    import torch

    spec = parse_spec(role, raw_spec)
    if spec.pretrained:  # from_pretrained casts, keeping what a model keeps in fp32 (T5's `wo` in fp16)
        model = load_pretrained(spec, dtype).eval()
        return model.to(device=device) if device != "cpu" else model
    if on_device and device != "cpu":
        with _overrides_named(spec):
            model = _build_on_device(ROLES[role], preset_config(spec), spec.seed if seed is None else seed, device,
                                     dtype)
    else:
        with torch.random.fork_rng(devices=[]), _overrides_named(spec):
            torch.manual_seed(spec.seed if seed is None else seed)
            model = _from_config(ROLES[role], preset_config(spec))
    model.eval()
    if dtype is not None or device != "cpu":
        model.to(device=device, dtype=dtype)
    return model


def _build_on_device(role: Role, config: dict, seed: int, device: str, dtype):
    """Construct under `torch.device(device)` (every parameter allocated and initialised there,
    from a generator seeded on that device) with `dtype` as the default dtype."""
    import torch

    previous = torch.get_default_dtype()
    on = torch.device(device)
    with torch.random.fork_rng(devices=[on.index or 0] if on.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            if dtype is not None and dtype.is_floating_point:
                torch.set_default_dtype(dtype)
            with torch.device(device):
                return _from_config(role, config)
        finally:
            torch.set_default_dtype(previous)


# a hub id that cannot be read is, on a cluster node or this offline machine, mostly no network
_HUB_HINT = " (a hub id: it needs the network or the local hub cache; else name a save_pretrained folder)"


def looks_like_path(ref: str) -> bool:
    """A local path (as opposed to an `org/name` hub id)."""
    return ref.startswith(("/", "./", "../", "~")) or ref.count("/") != 1 or os.path.exists(ref)


def load_pretrained(spec: ModelSpec, dtype=None):
    """Real loading: a local dir, or a hub id resolved from the local hub cache / the network.

    A local path that does not exist fails here with its name, never with a hub time-out.
    """
    role = ROLES[spec.role]
    ref = os.path.expanduser(spec.pretrained)
    kwargs: dict[str, Any] = {"torch_dtype": dtype} if dtype is not None else {}
    if spec.subfolder:
        kwargs["subfolder"] = spec.subfolder
    if looks_like_path(ref):
        folder = Path(ref) / (spec.subfolder or "")
        if not folder.is_dir():
            raise ModelSpecError(f"models.{spec.role}.pretrained: {folder} does not exist or is not a directory")
        if not (folder / "config.json").is_file():
            raise ModelSpecError(f"models.{spec.role}.pretrained: {folder} has no config.json "
                                 "(expected a save_pretrained folder)")
    elif os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        kwargs["local_files_only"] = True
    try:
        return _import(role.cls).from_pretrained(ref, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if looks_like_path(ref) else _HUB_HINT
        raise ModelSpecError(f"models.{spec.role}.pretrained: cannot load {spec.pretrained!r}: {first}{hint}") from None


def architecture_config(spec: ModelSpec) -> dict:
    """The architecture config of any spec: the preset's, or a pretrained model's config.json."""
    if spec.random is not None:
        return preset_config(spec)
    role = ROLES[spec.role]
    kwargs = {"subfolder": spec.subfolder} if spec.subfolder else {}
    if looks_like_path(spec.pretrained):
        folder = Path(spec.pretrained).expanduser() / (spec.subfolder or "")
        if not (folder / "config.json").is_file():
            raise ModelSpecError(f"models.{spec.role}.pretrained: {folder} has no config.json")
    try:
        if role.library == "diffusers":
            return dict(_import(role.cls).load_config(spec.pretrained, **kwargs))
        return _import(role.config_cls).from_pretrained(spec.pretrained, **kwargs).to_dict()
    except (OSError, ValueError) as exc:
        hint = "" if looks_like_path(spec.pretrained) else _HUB_HINT
        raise ModelSpecError(f"models.{spec.role}.pretrained: cannot read the config of {spec.pretrained!r}: "
                             f"{str(exc).strip().splitlines()[0]}{hint}") from None


def count_parameters(role: str, raw_spec: dict | ModelSpec) -> int:
    """Parameters of a spec's architecture, computed on the meta device (nothing allocated)."""
    import torch

    spec = parse_spec(role, raw_spec)
    config = {k: v for k, v in architecture_config(spec).items() if not k.startswith("_")}
    role_info = ROLES[role]
    with torch.device("meta"), _overrides_named(spec):
        if role_info.library == "diffusers":
            model = _import(role_info.cls).from_config(config)
        else:
            model = _import(role_info.cls)(_import(role_info.config_cls).from_dict(config))
    return sum(p.numel() for p in model.parameters())


def inventory(models_cfg: dict, source: str = "models") -> list[dict]:
    """One row per configured model: role, spec, parameter count (from config, no weights)."""
    if not isinstance(models_cfg, dict) or not models_cfg:
        raise ModelSpecError(f"{source}: expected a JSON object of role: spec (the config's models: section), "
                             f"not {'an empty one' if models_cfg == {} else type(models_cfg).__name__}")
    rows = []
    for role, raw in models_cfg.items():
        spec = parse_spec(role, raw)
        rows.append({"role": role, "spec": spec.label, "kind": "pretrained" if spec.pretrained else "random",
                     "class": ROLES[role].cls.split(":")[1], "params": count_parameters(role, spec)})
    return rows


def write_inventory(models_cfg: dict, out: str | Path, source: str = "models") -> list[dict]:
    """The inventory as a CSV file (written atomically); its rows."""
    import csv

    from diffscale import atomic

    rows = inventory(models_cfg, source)
    with atomic.atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["role", "spec", "kind", "class", "params"])
        writer.writeheader()
        writer.writerows(rows)
    return rows
