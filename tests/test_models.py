"""The model factory: presets match the published architectures; tiny models run; real loading
code is exercised on folders the tests write."""

from __future__ import annotations

import pytest
import torch

from diffscale import models
from diffscale.errors import ModelSpecError

# Published parameter counts (from the models' own configs on the hub).
PUBLISHED = {
    ("text_encoder", "clip-vit-large-patch14"): 123_060_480,
    ("unet", "sd15"): 859_520_964,
    ("ddpm_unet", "ddpm-cifar10-32"): 35_746_307,
    ("flux_t5", "t5-v1_1-xxl"): 4_762_310_656,
    ("vae", "sd-vae-ft-mse"): 83_653_863,
}


@pytest.mark.parametrize(("role", "preset"), sorted(PUBLISHED))
def test_full_presets_match_published_counts(role, preset):
    assert models.count_parameters(role, {"random": preset}) == PUBLISHED[(role, preset)]


def test_sd_vae_encoder_and_flux_transformer_sizes():
    with torch.device("meta"):
        vae = models._from_config(models.ROLES["vae"], models.SD_VAE_FT_MSE)
    encoder = sum(p.numel() for p in vae.encoder.parameters())
    assert round(encoder / 1e6, 1) == 34.2
    flux = models.count_parameters("flux_transformer", {"random": "flux.1-schnell"})
    assert round(flux / 1e9, 1) == 11.9  # computed on the meta device: nothing allocated
    assert flux == 11_891_178_560  # FLUX.1-dev's 11.90B includes the guidance embedder schnell lacks


def test_tiny_models_forward_shapes():
    from diffscale.bench.models import example_inputs, forward_fn

    expected = {
        "vae": (2, 4, 8, 8),
        "text_encoder": (2, 77, 32),
        "unet": (2, 4, 8, 8),
        "ddpm_unet": (2, 3, 32, 32),
        "flux_transformer": (2, 16, 16),
        "flux_vae": (2, 4, 8, 8),
        "flux_clip": (2, 77, 32),
        "flux_t5": (2, 256, 32),
    }
    for role, shape in expected.items():
        model = models.build(role, {"random": "tiny"})
        args, kwargs = example_inputs(role, model, batch=2, resolution=64)
        with torch.no_grad():
            out = forward_fn(role, model)(*args, **kwargs)
        tensor = out if isinstance(out, torch.Tensor) else out[0]
        assert tuple(tensor.shape) == shape, role
        assert torch.isfinite(tensor).all(), role


def test_tiny_text_encoder_matches_tiny_unet():
    text = models.preset_config(models.parse_spec("text_encoder", {"random": "tiny"}))
    unet = models.preset_config(models.parse_spec("unet", {"random": "tiny"}))
    assert text["hidden_size"] == unet["cross_attention_dim"]


def test_random_build_is_seeded():
    a = models.build("vae", {"random": "tiny"}, seed=3)
    b = models.build("vae", {"random": "tiny"}, seed=3)
    c = models.build("vae", {"random": "tiny"}, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_overrides_replace_preset_fields():
    spec = models.parse_spec("unet", {"random": "small", "overrides": {"sample_size": 16}})
    assert models.preset_config(spec)["sample_size"] == 16
    assert spec.describe() == {"role": "unet", "random": "small", "overrides": {"sample_size": 16}}


@pytest.mark.parametrize("role", ["vae", "text_encoder", "ddpm_unet"])
def test_pretrained_loading_roundtrip(tmp_path, role):
    """The real loading path: save_pretrained folders load back with identical weights."""
    original = models.build(role, {"random": "tiny"}, seed=1)
    original.save_pretrained(tmp_path / "model")
    loaded = models.build(role, {"pretrained": str(tmp_path / "model")})
    assert type(loaded) is type(original)
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    # parameter counting reads the folder's config.json without loading weights
    assert models.count_parameters(role, {"pretrained": str(tmp_path / "model")}) == sum(
        p.numel() for p in original.parameters())


def test_pretrained_t5_in_fp16_keeps_its_fp32_modules(tmp_path):
    """from_pretrained's dtype, not a blanket cast: T5 v1.1 overflows in fp16 without `wo` in fp32."""
    import torch

    models.build("flux_t5", {"random": "tiny"}).save_pretrained(tmp_path / "t5")
    model = models.build("flux_t5", {"pretrained": str(tmp_path / "t5")}, dtype=torch.float16)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if ".wo." in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if ".wo." not in n} == {torch.float16}
    assert not model.training


def test_pretrained_subfolder(tmp_path):
    models.build("text_encoder", {"random": "tiny"}).save_pretrained(tmp_path / "pipe" / "text_encoder")
    model = models.build("text_encoder", {"pretrained": str(tmp_path / "pipe"), "subfolder": "text_encoder"})
    assert model.config.hidden_size == 32


def test_missing_pretrained_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSpecError) as info:
        models.build("vae", {"pretrained": str(tmp_path / "nowhere")})
    assert str(info.value) == f"models.vae.pretrained: {tmp_path / 'nowhere'} does not exist or is not a directory"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match="has no config.json"):
        models.build("vae", {"pretrained": str(tmp_path / "empty")})


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match=r"^models.vae.pretrained: cannot load 'nobody/no-such-model': .* \(a hub id: it "
                                             r"needs the network or the local hub cache; else name a save_pretrained folder\)$"):
        models.build("vae", {"pretrained": "nobody/no-such-model"})


def test_spec_errors_name_the_field():
    with pytest.raises(ModelSpecError, match=r"models.unet.random: unknown preset 'huge' for unet \(known: sd15, small, tiny\)"):
        models.parse_spec("unet", {"random": "huge"})
    with pytest.raises(ModelSpecError, match="models.vae: give exactly one of"):
        models.parse_spec("vae", {})


def test_inventory_rows():
    rows = models.inventory({"vae": {"random": "tiny"}, "ddpm_unet": {"random": "ddpm-cifar10-32"}})
    assert rows == [
        {"role": "vae", "spec": "random:tiny", "kind": "random", "class": "AutoencoderKL", "params": 1_028_935},
        {"role": "ddpm_unet", "spec": "random:ddpm-cifar10-32", "kind": "random", "class": "UNet2DModel",
         "params": 35_746_307},
    ]


def test_random_weights_come_from_the_spec_seed():
    """Frozen encoders rebuilt by another stage from the same spec are the same model."""
    default = models.build("text_encoder", {"random": "tiny"})
    again = models.build("text_encoder", {"random": "tiny", "seed": 0})
    other = models.build("text_encoder", {"random": "tiny", "seed": 5})
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), again.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(default.parameters(), other.parameters()))
    assert models.parse_spec("text_encoder", {"random": "tiny", "seed": 5}).describe()["seed"] == 5
    with pytest.raises(ModelSpecError, match=r"models.vae.seed: a non-negative integer, and only with 'random:'"):
        models.parse_spec("vae", {"pretrained": "/x", "seed": 1})


@pytest.mark.parametrize("role, overrides, message", [
    ("unet", {"sample_size": 16, "bogus_arg": 3},
     "models.unet.overrides: unknown key 'bogus_arg' for UNet2DConditionModel (a typo? see its config fields)"),
    ("text_encoder", {"hidden_sise": 64},
     "models.text_encoder.overrides: unknown key 'hidden_sise' for CLIPTextModel (a typo? see its config fields)"),
    ("unet", {"block_out_channels": "abc"}, "models.unet.overrides: the tiny preset does not build with "
     "{'block_out_channels': 'abc'}: ValueError: Must provide the same number of `block_out_channels`"),
])
def test_an_override_the_model_does_not_take_is_one_line_naming_it(role, overrides, message):
    """diffusers and transformers only warn that they ignore an unknown config field."""
    spec = {"random": "tiny", "overrides": overrides}
    for make in (models.build, models.count_parameters):
        with pytest.raises(ModelSpecError) as caught:
            make(role, spec)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_overrides_the_model_takes_build():
    unet = models.build("unet", {"random": "tiny", "overrides": {"sample_size": 16}})
    assert unet.config.sample_size == 16
    t5 = models.build("flux_t5", {"random": "tiny", "overrides": {"num_hidden_layers": 1}})  # T5's alias of num_layers
    assert t5.config.num_layers == 1


def test_running_out_of_memory_while_building_is_not_blamed_on_the_overrides():
    spec = models.parse_spec("unet", {"random": "tiny", "overrides": {"sample_size": 16}})
    with pytest.raises(torch.OutOfMemoryError):
        with models._overrides_named(spec):  # noqa: SLF001 - the wrapper every build goes through
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
