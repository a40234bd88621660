"""What one training run reads: its run config, built from the pipeline config in one place.

The rule passes the run config to the script as JSON in its `params`, so Snakemake re-runs a
training job exactly when something the job reads changes: editing `train.lr` re-runs every
training job, editing `train.prompts` or adding a run to `train.matrix` re-runs none (the
sampling keys go to the sampling rule instead). The same JSON is saved as `config.json` in the run
directory, and `generate.py` builds its models from it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from diffscale import experiments, vocab
from diffscale.config import check_run_slice, check_train_batches, config_hash
from diffscale.errors import ConfigError

# Keys of the train section that only the sampling rule reads, or that describe which runs exist.
SAMPLING_KEYS = ("prompts", "guidance_scale", "inference_steps", "scheduler")
NOT_PER_RUN = ("matrix", *SAMPLING_KEYS)
# Keys that change how a run is carried out but not the weights it ends with: a checkpoint made
# under other values of these still resumes (a longer `steps` continues a shorter run).
LOGISTICS_KEYS = ("steps", "checkpoint_every", "log_every", "loader_workers")
PRECISIONS = vocab.PRECISIONS
# the train keys a training run reads: a run config without one is refused (check_run_config)
RUN_TRAIN_KEYS = ("steps", "batch_size", "grad_accum", "lr", "weight_decay", "warmup_steps", "ema_decay", "grad_clip",
                  "caption_dropout", "tf32", "loader_workers", "log_every", "checkpoint_every")


def validate_train(cfg: dict, source: str = "config") -> None:
    """The training checks the schema cannot express (part of diffscale.config.validate_config)."""
    check_train_batches(cfg, source)


def run_config(cfg: dict, hw: str, precision: str, gpus: int) -> dict:
    """Everything one training run reads, and nothing else."""
    vocab.one_of(precision, PRECISIONS, "precision")
    hardware = vocab.job_hardware(cfg, hw)
    validate_train(cfg)
    train = {k: copy.deepcopy(v) for k, v in cfg["train"].items() if k not in NOT_PER_RUN}
    train["grad_accum"] = experiments.train_run(cfg, hw, precision, gpus).grad_accum
    return {
        "run": {"hw": hw, "precision": precision, "gpus": int(gpus)},
        "seed": cfg["seed"],
        "hardware": {hw: hardware},
        "models": {role: copy.deepcopy(cfg["models"][role]) for role in ("unet", "text_encoder", "vae")},
        "embed": {"train_source": cfg["embed"]["train_source"]},
        "train": train,
    }


def sampling_config(cfg: dict) -> dict:
    """What the sampling rule reads: the prompts and sampler settings, and the seed."""
    return {"seed": cfg["seed"], **{k: copy.deepcopy(cfg["train"][k]) for k in SAMPLING_KEYS}}


SAMPLING_FLAGS = {"guidance_scale": "--guidance-scale", "inference_steps": "--num-inference-steps",
                  "scheduler": "--scheduler", "seed": "--seed"}


def sampling_flags(sampling: dict) -> str:
    """scripts/generate.py's flags for a `sampling_config`, shell-quoted: one --prompt per prompt."""
    import shlex

    flags = [f"--prompt {shlex.quote(p)}" for p in sampling["prompts"]]
    flags += [f"{flag} {shlex.quote(str(sampling[key]))}" for key, flag in SAMPLING_FLAGS.items()]
    return " ".join(flags)


def job_inputs(config_file, hw: str, precision: str, gpus: int, images=None, text=None) -> tuple[dict, Path, Path]:
    """A training job from a pipeline config file (scripts/train_unet.py --config): its run config and
    the embedding runs it reads (default: embed.train_source of the config)."""
    from diffscale.config import load_config

    cfg = load_config(config_file)
    # checked here so that a mistake names the flags given, not the --run-config they were turned into
    run_cfg = check_run_config(run_config(cfg, hw, precision, gpus),
                               f"{config_file} with --hw {hw} --precision {precision} --gpus {gpus}")
    source = cfg["embed"]["train_source"]
    return (run_cfg, Path(images or vocab.embed_dir("images", source)),
            Path(text or vocab.embed_dir("text", source)))


def check_run_config(run_cfg: Any, source: str = "--run-config") -> dict:
    """A run config read from JSON: the sections and keys the training needs are there."""
    check_run_slice(run_cfg, source, ("run", "seed", "hardware", "models", "embed", "train"),
                    {"run": ("hw", "precision", "gpus"), "train": RUN_TRAIN_KEYS}, positive=("run.gpus",))
    run = run_cfg["run"]
    vocab.one_of(run["precision"], PRECISIONS, f"{source}: run.precision")
    parts = int(run["gpus"]) * run_cfg["train"]["grad_accum"]
    if run_cfg["train"]["batch_size"] % parts:
        raise ConfigError(f"{source}: train.batch_size {run_cfg['train']['batch_size']} does not split into "
                          f"{run['gpus']} processes x grad_accum {run_cfg['train']['grad_accum']}")
    return run_cfg


def micro_batch(run_cfg: dict) -> int:
    """Samples per forward pass on one process."""
    train = run_cfg["train"]
    return train["batch_size"] // (int(run_cfg["run"]["gpus"]) * train["grad_accum"])


def trajectory(run_cfg: dict) -> dict:
    """The part of a run config that decides the weights a run ends with."""
    out = copy.deepcopy(run_cfg)
    for key in LOGISTICS_KEYS:
        out["train"].pop(key, None)
    return out


def trajectory_hash(run_cfg: dict) -> str:
    return config_hash(trajectory(run_cfg))


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two configs differ (for messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            out += differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if a == b else [prefix or "(top level)"]
