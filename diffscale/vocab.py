"""The project's vocabularies, each owned here once: what a value may be, and how names are built.

Part of the ground layer (imports only diffscale.errors). The config schema's enums are checked
against these tuples by tests/test_vocab.py; argparse `choices`, the settings checks and the
workflow's wildcard constraints (rules/common.smk) are derived from them.

  BACKENDS, POLICIES, MODALITIES   the embedding stage's parallel backends, thread policies, inputs
  ITEMS                            what one item of each modality is called (images, captions)
  EMBED_BASELINE                   the run every embedding speedup is against: serial on 1 CPU, 1 thread
  TEXT_STORAGE                     how text embeddings are stored (ragged, full)
  PRECISIONS                       training precisions (fp32, bf16, fp16)
  DTYPES                           storage/compute dtypes of embeddings, with their torch names
  embed_run_name(...)              "{backend}-{policy}-w{workers}", the embedding run directory name
  embed_dir(modality, run)         results/embed/{modality}/{run name} (embed_run_dir: from parts)
  EMBED_JOB, TRAIN_JOB, FLUX_JOB   a measured job's name; log_path/benchmark_path: its log and
                                   Snakemake benchmark (TRAIN_RUN, FLUX_RUN: run directories)
  hardware_entry(cfg, hw, where)   a hardware table entry, or the one "hardware key not in the
                                   table" ConfigError
  wildcard_constraints()           regexes of the wildcards, for the workflow
"""

from __future__ import annotations

import re

from diffscale.errors import ConfigError

MODALITIES = ("images", "text")
ITEMS = {"images": "images", "text": "captions"}  # what one item of each modality is called
BACKENDS = ("serial", "multiprocessing", "joblib", "dask", "gpu")
CPU_BACKENDS = tuple(b for b in BACKENDS if b != "gpu")
POLICIES = ("pinned", "naive", "intraop")  # intraop: 1 process x N threads (diffscale.embed.threads)
EMBED_BASELINE = ("serial", "pinned", 1)  # (backend, policy, workers)
TEXT_STORAGE = ("ragged", "full")  # embed.text_storage: real tokens only, or all 77 positions
PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # name -> torch dtype name

EMBED_RUN = "{backend}-{policy}-w{workers}"  # an embedding run's name (a Snakemake wildcard pattern)
EMBED_ROOT = "results/embed"


def embed_run_name(backend: str, policy: str, workers: int) -> str:
    return EMBED_RUN.format(backend=backend, policy=policy, workers=workers)


def embed_dir(modality: str, run: str) -> str:
    """results/embed/{modality}/{run name}: the directory of one embedding run."""
    return f"{EMBED_ROOT}/{modality}/{run}"


def embed_run_dir(modality: str, backend: str, policy: str, workers: int) -> str:
    return embed_dir(modality, embed_run_name(backend, policy, workers))


# A measured job's name, as a Snakemake wildcard pattern: its log is results/logs/<name>.log and
# Snakemake's benchmark of it results/benchmarks/<name>.tsv, which the report reads as the time the
# job held its hardware. The rules and the report both build these paths here, so they cannot drift.
TRAIN_VARIANT = "{precision}-g{gpus}"  # a U-Net training run under its hardware key
FLUX_VARIANT = "g{gpus}-s{steps}"  # a FLUX LoRA fine-tune under its hardware key
EMBED_JOB = "embed/{modality}/" + EMBED_RUN
TRAIN_JOB = "train/unet/{hw}/" + TRAIN_VARIANT
FLUX_JOB = "flux/lora/{hw}/" + FLUX_VARIANT
TRAIN_RUN = "results/" + TRAIN_JOB  # run directories
FLUX_RUN = "results/flux/{hw}/" + FLUX_VARIANT
FLUX_DATASET = "results/flux/dataset"  # the prepared photos (rule flux_dataset), and their cached embeddings
FLUX_CACHE = "results/flux/cache"


def log_path(job: str) -> str:
    return f"results/logs/{job}.log"


def benchmark_path(job: str, results: str = "results") -> str:
    """Snakemake's benchmark file of job `job` (a pattern or a name) under the results directory."""
    return f"{results}/benchmarks/{job}.tsv"


def one_of(value: str, allowed, what: str) -> str:
    """`value` if it is in `allowed`, else ConfigError "{what}: {value!r} is not one of a, b, c"."""
    if value not in allowed:
        raise ConfigError(f"{what}: {value!r} is not one of {', '.join(allowed)}")
    return value


def unknown_hardware(hw: str, hardware: dict, where: str | None = None) -> ConfigError:
    """The error for a hardware key the config's table lacks (naming the keys it has)."""
    known = ", ".join(sorted(hardware))
    if where:
        return ConfigError(f"{where}: hardware key {hw!r} is not in the hardware table ({known})")
    return ConfigError(f"hardware key {hw!r} is not in the config's hardware table ({known})")


def hardware_entry(cfg: dict, hw: str, where: str | None = None) -> dict:
    """cfg["hardware"][hw], or the one ConfigError naming the key and the table's keys."""
    try:
        return cfg["hardware"][hw]
    except KeyError:
        raise unknown_hardware(hw, cfg["hardware"], where) from None


# The part of a hardware entry a training job reads (where it computes, in which env): its run
# config holds only these, so editing a price, memory or time limit re-runs no job.
JOB_HARDWARE_KEYS = ("partition", "device", "conda_env")


def job_hardware(cfg: dict, hw: str, where: str | None = None) -> dict:
    entry = hardware_entry(cfg, hw, where)
    return {k: entry[k] for k in JOB_HARDWARE_KEYS if k in entry}


def alternatives(values) -> str:
    """A regex matching exactly one of `values`."""
    return "|".join(re.escape(v) for v in values)


def wildcard_constraints() -> dict[str, str]:
    """The workflow's wildcard regexes: vocabularies as alternatives, counts as digits."""
    return {
        "hw": "[a-z][a-z0-9_]*",
        "gpus": r"\d+",
        "run_gpus": r"\d+",
        "workers": r"\d+",
        "steps": r"\d+",
        "precision": alternatives(PRECISIONS),
        "backend": alternatives(BACKENDS),
        "policy": alternatives(POLICIES),
        "modality": alternatives(MODALITIES),
    }
