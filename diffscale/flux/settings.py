"""What each FLUX stage reads, as a config slice built in one place.

A rule passes its slice to its script as JSON in `params`, so Snakemake re-runs a job exactly when
something it reads changes: editing `flux.lr` re-runs the trainings but not the cache, editing
`flux.infer` re-runs only the inference timing. Vocabularies (dtypes, SDPA kernels) live here.
"""

from __future__ import annotations

import copy

from diffscale.config import check_flux_batches, check_run_slice
from diffscale.errors import ConfigError
from diffscale.experiments import FluxRun, flux_infer
from diffscale.vocab import DTYPES, job_hardware  # noqa: F401 - DTYPES: the flux modules import it from here

SDPA_KERNELS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH",
                "cudnn": "CUDNN_ATTENTION"}
# What a cache folder holds, as a number in its config slice: a cache made under an older layout is
# rebuilt by Snakemake (its params changed). 2: the empty caption's embeddings (caption dropout).
CACHE_LAYOUT = 2
# Keys of the flux section the training loop reads. `steps`, `checkpoint_every` and `log_every`
# change how a run is carried out, not the weights at a given step: a checkpoint made under other
# values still resumes (a longer run continues a shorter one).
TRAIN_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "caption_dropout", "lr", "weight_decay",
              "grad_clip", "optimizer", "batch_size", "grad_checkpointing", "timestep_sampling", "logit_mean",
              "logit_std", "timestep_shift", "dtype", "cpu_dtype", "sdpa_kernels", "training_adapter",
              "inference_steps", "quality_images", "log_every", "checkpoint_every")
LOGISTICS_KEYS = ("steps", "log_every", "checkpoint_every", "quality_images", "inference_steps")


def substitute(text: str, trigger: str) -> str:
    from diffscale.folders import TRIGGER

    return text.replace(TRIGGER, trigger)


CACHE_ROLES = ("flux_vae", "flux_clip", "flux_t5")
INFER_ROLES = ("flux_transformer", *CACHE_ROLES)


def check_cache_config(settings, source: str = "--settings") -> dict:
    """A cache slice read back from JSON has what build_cache reads (cache_config's keys)."""
    return check_run_slice(settings, source, ("layout", "seed", "max_sequence_length", "sample_prompts", "models"),
                           {"models": CACHE_ROLES})


def check_infer_config(settings, source: str = "--settings") -> dict:
    """An inference slice read back from JSON has what run_infer reads (infer_config's keys)."""
    return check_run_slice(settings, source, ("hw", "seed", "hardware", "models", "prompt", "resolution",
                                              "inference_steps", "max_sequence_length", "cpu_dtype", "dtypes",
                                              "batch_sizes", "repeats"), {"models": INFER_ROLES}, hw="hw")


def cache_config(cfg: dict) -> dict:
    flux = cfg["flux"]
    trigger = cfg["data"]["subject"]["trigger"]
    return {"layout": CACHE_LAYOUT, "seed": cfg["seed"], "max_sequence_length": flux["max_sequence_length"],
            "sample_prompts": [substitute(p, trigger) for p in flux["sample_prompts"]],
            "models": {role: copy.deepcopy(cfg["models"][role]) for role in CACHE_ROLES}}


def run_config(cfg: dict, hw: str, gpus: int, steps: int) -> dict:
    """Everything one LoRA training run reads, and nothing else."""
    flux = cfg["flux"]
    check_flux_batches(cfg, runs=[FluxRun(hw, int(gpus), int(steps))])
    return {
        "run": {"hw": hw, "gpus": int(gpus), "steps": int(steps)},
        "seed": cfg["seed"],
        "hardware": {hw: job_hardware(cfg, hw)},
        "models": {role: copy.deepcopy(cfg["models"][role]) for role in ("flux_transformer", "flux_vae")},
        "flux": {k: copy.deepcopy(flux[k]) for k in TRAIN_KEYS},
    }


def infer_config(cfg: dict, hw: str) -> dict:
    flux = cfg["flux"]
    return {"hw": hw, "seed": cfg["seed"], "hardware": {hw: job_hardware(cfg, hw)},
            "models": {role: copy.deepcopy(cfg["models"][role]) for role in INFER_ROLES},
            "prompt": substitute(flux["sample_prompts"][0] if flux["sample_prompts"] else "a photo of [trigger]",
                                 cfg["data"]["subject"]["trigger"]),
            "resolution": flux["resolution"], "inference_steps": flux["inference_steps"],
            "max_sequence_length": flux["max_sequence_length"], "cpu_dtype": flux["cpu_dtype"],
            **flux_infer(cfg, hw)}


def trajectory(run_cfg: dict) -> dict:
    """The part of a run config that decides the weights at each step (resume compatibility)."""
    out = copy.deepcopy(run_cfg)
    out["run"].pop("steps", None)
    for key in LOGISTICS_KEYS:
        out["flux"].pop(key, None)
    return out


def compute_dtype(run_flux: dict, device: str) -> str:
    """The dtype name (fp32/bf16/fp16) of the frozen weights and activations on `device`."""
    return run_flux["dtype"] if device.startswith("cuda") else run_flux["cpu_dtype"]


def check_run_config(run_cfg, source: str = "--run-config") -> dict:
    check_run_slice(run_cfg, source, ("run", "seed", "hardware", "models", "flux"),
                    {"run": ("hw", "gpus", "steps"), "flux": TRAIN_KEYS}, positive=("run.gpus", "run.steps"))
    if run_cfg["flux"]["batch_size"] % int(run_cfg["run"]["gpus"]):
        raise ConfigError(f"{source}: flux.batch_size {run_cfg['flux']['batch_size']} does not split over "
                          f"{run_cfg['run']['gpus']} processes")
    return run_cfg
