"""Prompts -> images with a trained run directory (results/train/unet/{hw}/{variant}/).

The run directory's config.json names the text encoder and VAE the model was trained with
(models.text_encoder, models.vae); prompts are encoded by that text encoder exactly as training
encoded the empty prompt (text.py), sampled with classifier-free guidance from the EMA weights,
decoded by the VAE and written as PNGs carrying the prompt and every setting in their metadata,
with samples.json (the images and settings) and run.json (provenance and timings) beside them.

Each image's noise comes from its own generator seeded by (seed, prompt number), so an image
depends on its prompt, the seed and the settings, not on the batch it was generated in.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from diffscale import atomic, hardware, io, models, provenance
from diffscale.errors import ConfigError, DataError, ModelSpecError
from diffscale.train import checkpoint as ckpt_io
from diffscale.train.diffusion import SAMPLERS, predict_noise, sampler
from diffscale.train.text import PromptEncoder, as_stored

MANIFEST = "samples.json"


@dataclass(frozen=True)
class Settings:
    guidance_scale: float = 2.0
    num_inference_steps: int = 50
    seed: int = 0
    scheduler: str = "ddim"
    weights: str = "ema"  # ema | model
    batch_size: int = 4

    def check(self) -> "Settings":
        """ConfigError naming the flag of the first setting out of range (the CLI's flags)."""
        for flag, value, least in (("--num-inference-steps", self.num_inference_steps, 1),
                                   ("--batch-size", self.batch_size, 1), ("--seed", self.seed, 0)):
            if value < least:
                raise ConfigError(f"{flag}: must be at least {least}")
        if not self.guidance_scale >= 0 or self.guidance_scale == float("inf"):  # NaN fails >=: black images
            raise ConfigError(f"--guidance-scale: expected a finite number, at least 0, not {self.guidance_scale}")
        return self


def choose_device(device: str = "auto") -> str:
    """`auto`: cuda when a GPU is usable, else cpu. An explicit cuda device without a usable GPU is a
    HardwareError: the workflow passes its hardware's device, and never falls back silently."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    hardware.check_device(device, "--device")
    return device


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    lines = io.read_text(path, "prompt file not found", "prompt").splitlines()
    prompts = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not prompts:
        raise DataError(f"{path}: no prompts (one per line; blank lines and # comments are skipped)")
    return prompts


class TrainedModel:
    """A run directory's U-Net (EMA or raw weights), text encoder, VAE and training facts."""

    def __init__(self, model_path: str | Path, device: str = "cpu", weights: str = "ema"):
        import torch
        from diffusers import UNet2DConditionModel

        self.path = Path(model_path)
        if not self.path.is_dir():
            raise DataError(f"--model-path {self.path}: no such directory (expected a results/train/unet/<hw>/<run> "
                            "directory)")
        config_file, ckpt_file = self.path / "config.json", self.path / ckpt_io.FINAL_FILE
        for needed in (config_file, ckpt_file):
            if not needed.is_file():
                raise DataError(f"--model-path {self.path}: no {needed.name}; not a finished training run "
                                "(expected checkpoint.pt and config.json)")
        try:
            self.config = json.loads(config_file.read_text())
            model_specs = self.config["models"]
        except (ValueError, KeyError, TypeError):
            model_specs = None
        if not isinstance(model_specs, dict):
            raise DataError(f"{config_file}: not a training run's config (no models section)")
        ckpt = ckpt_io.load(ckpt_file)
        if weights not in ("ema", "model"):
            raise ValueError(f"weights must be 'ema' or 'model', not {weights!r}")

        unet_spec = models.parse_spec("unet", model_specs["unet"], where=f"{config_file}: models.unet")
        arch = {k: v for k, v in models.architecture_config(unet_spec).items() if not k.startswith("_")}
        self.unet = UNet2DConditionModel.from_config(arch)
        ckpt_io.check_weights(ckpt[weights], self.unet, str(ckpt_file), f"models.unet ({unet_spec.label}) in {config_file}")
        self.unet.load_state_dict(ckpt[weights])
        self.unet.to(device).eval()

        self.device = device
        self.step = ckpt["step"]
        self.noise_schedule = dict(ckpt["noise_schedule"])
        self.latent_shape = tuple(ckpt["latent_shape"])
        self.scaling_factor = float(ckpt["scaling_factor"])
        self.encoder = PromptEncoder(model_specs["text_encoder"], device=device)
        self.text_dtype = ckpt.get("text_dtype", "float32")  # the captions' precision in training
        self.null = as_stored(self.encoder.null_embedding(), self.text_dtype)
        trained_null = ckpt["null_embedding"].to(device=device, dtype=self.null.dtype)
        if trained_null.shape != self.null.shape or not torch.allclose(trained_null, self.null, atol=1e-3, rtol=1e-3):
            raise ModelSpecError(
                f"{config_file}: models.text_encoder ({self.encoder.spec.label}) does not encode the empty prompt "
                f"as the one the model was trained with; it is another text encoder")
        # a model trained on ragged text attends only to real tokens: sample with the masks too
        self.text_mask = bool(ckpt.get("text_mask", False))
        self.null_mask = self.encoder.null_mask() if self.text_mask else None
        self.vae = models.build("vae", model_specs["vae"], device=device)
        self._check_vae(config_file)

    def _check_vae(self, config_file: Path) -> None:
        """The VAE must decode the latents the U-Net was trained on: their channels and scaling."""
        vae = self.vae.config
        label = models.parse_spec("vae", self.config["models"]["vae"]).label
        if vae.latent_channels != self.latent_shape[0]:
            raise ModelSpecError(f"{config_file}: models.vae ({label}) has {vae.latent_channels} latent channels, "
                                 f"the model was trained on {self.latent_shape[0]}; it is another VAE")
        if abs(float(vae.scaling_factor) - self.scaling_factor) > 1e-6 * max(1.0, abs(self.scaling_factor)):
            raise ModelSpecError(f"{config_file}: models.vae ({label}) scales latents by {vae.scaling_factor:g}, "
                                 f"the model was trained with {self.scaling_factor:g}; it is another VAE")

    def condition(self, prompts: list[str]):
        """The prompts' hidden states at the precision of the training captions, and their masks."""
        cond, mask = self.encoder.encode(prompts)
        return as_stored(cond, self.text_dtype), mask

    def generate(self, prompts: list[str], settings: Settings):
        """uint8 images [n, H, W, 3] for `prompts`, in batches of settings.batch_size."""
        import torch

        trained = self.noise_schedule["num_train_timesteps"]
        if settings.num_inference_steps > trained:  # a sampler cannot take more steps than the schedule has
            raise ConfigError(f"--num-inference-steps: {settings.num_inference_steps} is more than the {trained} "
                              f"timesteps the model was trained with")
        images = []
        for start in range(0, len(prompts), settings.batch_size):
            chunk = prompts[start:start + settings.batch_size]
            numbers = range(start, start + len(chunk))
            images.append(self._batch(chunk, numbers, settings))
        return torch.cat(images)

    def _batch(self, prompts: list[str], numbers: range, settings: Settings):
        import torch

        schedule = sampler(settings.scheduler, self.noise_schedule)
        schedule.set_timesteps(settings.num_inference_steps, device=self.device)
        generators = [torch.Generator(device=self.device).manual_seed(settings.seed * 1_000_003 + n) for n in numbers]
        latents = torch.stack([torch.randn(self.latent_shape, generator=g, device=self.device) for g in generators])
        latents = latents * schedule.init_noise_sigma
        cond, cond_mask = self.condition(prompts)
        uncond = self.null.expand(len(prompts), -1, -1)
        masks = (cond_mask, self.null_mask.expand(len(prompts), -1)) if self.text_mask else (None, None)
        with torch.inference_mode():
            for t in schedule.timesteps:
                model_input = schedule.scale_model_input(latents, t)
                eps = predict_noise(self.unet, model_input, t, cond, uncond, settings.guidance_scale, *masks)
                latents = schedule.step(eps, t, latents, generator=generators).prev_sample
            pixels = self.vae.decode(latents / self.scaling_factor).sample
        return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def write_images(images, prompts: list[str], settings: Settings, model: TrainedModel, out_dir: str | Path) -> list[Path]:
    """PNGs named NNN-<prompt>.png with prompt and settings as PNG text chunks; samples.json last."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (image, prompt) in enumerate(zip(images, prompts)):
        meta = {"prompt": prompt, **{k: str(v) for k, v in asdict(settings).items() if k != "batch_size"},
                "model_path": str(model.path), "train_step": str(model.step), "image_number": str(number),
                "seed_of_image": str(settings.seed * 1_000_003 + number)}
        info = PngInfo()
        for key, value in meta.items():
            info.add_itxt(key, value)
        info.add_itxt("parameters", f"{prompt}\nSteps: {settings.num_inference_steps}, Sampler: {settings.scheduler}, "
                                    f"CFG scale: {settings.guidance_scale}, Seed: {settings.seed}, "
                                    f"Model: {model.path}")
        path = out / f"{number:03d}-{slug(prompt)}.png"
        with atomic.atomic_path(path) as tmp:
            Image.fromarray(image.numpy()).save(tmp, format="PNG", pnginfo=info)
        written.append(path)
    atomic.write_json(out / MANIFEST, {
        "model_path": str(model.path), "train_step": model.step, "settings": asdict(settings),
        "images": [{"file": p.name, "prompt": prompt} for p, prompt in zip(written, prompts)],
    })
    return written


def generate(prompts: list[str], model_path: str | Path, out_dir: str | Path, settings: Settings,
             device: str = "cpu") -> list[Path]:
    if not prompts:
        raise DataError("no prompts given")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise DataError(f"prompt {empty[0] + 1} is empty")
    if settings.scheduler not in SAMPLERS:
        raise DataError(f"--scheduler {settings.scheduler!r}: expected one of {', '.join(SAMPLERS)}")
    atomic.check_replaceable(out_dir, MANIFEST)  # before the model loads: a wrong --out is one line, not lost work
    start = time.perf_counter()
    model = TrainedModel(model_path, device=device, weights=settings.weights)
    loaded = time.perf_counter()
    images = model.generate(prompts, settings)
    seconds = time.perf_counter() - loaded
    specs = [models.parse_spec(role, model.config["models"][role]).describe() for role in ("unet", "text_encoder", "vae")]
    with atomic.atomic_dir(out_dir, MANIFEST) as folder:  # the images, samples.json and run.json appear together
        written = write_images(images, prompts, settings, model, folder)
        provenance.write_run_json(folder / "run.json", config_slice={**asdict(settings), "prompts": prompts},
                                  models=specs, model_path=str(model.path), train_step=model.step, device=device,
                                  timings={"load_s": loaded - start, "generate_s": seconds,
                                           "images_per_s": len(prompts) / seconds})
    return [Path(out_dir) / path.name for path in written]
