# Config validation, the experiment matrix as target paths, resource functions, wildcard
# constraints. The logic lives in the diffscale package (tested there); this file adapts it.
import json
import sys

sys.path.insert(0, workflow.basedir)

from diffscale import experiments, resources as hwres
from diffscale.config import validate_config
from diffscale.errors import UserError
from diffscale.workflow import put_interpreter_on_path


# One-line errors naming the key, before any job starts. (snakemake.utils.validate would print the
# whole schema; diffscale.config uses the same JSON schema and is shared with the CLIs.)
try:
    validate_config(config, source="config")
except UserError as exc:
    raise WorkflowError(str(exc)) from None


# Rules call plain `python`: the rule's conda env, or the interpreter running Snakemake.
put_interpreter_on_path(workflow.deployment_settings.deployment_method)
DATA = config["data"]
SYNTHETIC = DATA.get("synthetic")


wildcard_constraints:
    hw="[a-z][a-z0-9_]*",
    gpus=r"\d+",
    workers=r"\d+",
    precision="fp32|bf16|fp16",


def res(hw, gpus=0, workers=1):
    """Resources of a job on hardware key `hw` (see diffscale.resources)."""
    return hwres.job_resources(config, hw, int(gpus), int(workers))


RESOURCE_KEYS = ["slurm_partition", "cpus_per_task", "mem_mb", "runtime", "gres", "gpu", "gpu_model"]


def resources_for(hw=None, gpus=0, workers=1):
    """Resources as callables of the wildcards, for `resources: **resources_for()`.

    `hw`, `gpus` and `workers` come from the wildcards of the same name when present,
    else from the arguments (a fixed hardware key for rules without a {hw} wildcard)."""

    def one(key):
        def fn(wildcards):
            w = dict(wildcards)
            return res(w.get("hw", hw), w.get("gpus", gpus), w.get("workers", workers))[key]

        return fn

    return {key: one(key) for key in RESOURCE_KEYS}


def cpu_resources():
    """Resources of the light CPU rules (data, report): the embedding stage's CPU hardware."""
    return resources_for(hw=config["embed"]["hardware"])


def report_inputs():
    """Everything the report reads: the bench tables of every study the config enables."""
    return ["results/bench/models.csv", "results/data/summary.json"] + train_report_inputs()


# --- study 1, stage 3: U-Net training (rules/train.smk) ----------------------------------------
import os

from diffscale.train import config as train_config

try:
    train_config.validate_train(config)
except UserError as exc:
    raise WorkflowError(str(exc)) from None

TRAIN_RUN = "results/train/unet/{hw}/{precision}-g{gpus}"
TRAIN_SAMPLES = "results/train/samples/{hw}/{precision}-g{gpus}"


def train_run_wildcards():
    """The training matrix as zipped wildcard lists, for expand(..., zip, **train_run_wildcards())."""
    runs = experiments.train_runs(config)
    return {"hw": [r.hw for r in runs], "precision": [r.precision for r in runs], "gpus": [r.gpus for r in runs]}


def train_embeddings():
    """The embedding runs the training reads (embed.train_source): their index.json files."""
    source = config["embed"]["train_source"]
    return {"images": f"results/embed/images/{source}/index.json", "text": f"results/embed/text/{source}/index.json"}


def train_run_config(wildcards):
    """Exactly what one training job reads, as JSON: an edit of it re-runs the job, nothing else does."""
    run = train_config.run_config(config, wildcards.hw, wildcards.precision, int(wildcards.gpus))
    return json.dumps(run, sort_keys=True)


def train_threads(wildcards):
    """All the CPUs the job asks SLURM for, so a local run never times two trainings at once."""
    return hwres.job_resources(config, wildcards.hw, int(wildcards.gpus))["cpus_per_task"]


def sampling_resources():
    """Sampling runs on the CPU hardware, whichever hardware trained the model."""
    return hwres.job_resources(config, config["embed"]["hardware"])


def train_prompt_flags():
    import shlex

    return " ".join(f"--prompt {shlex.quote(p)}" for p in config["train"]["prompts"])


def train_report_inputs():
    targets = ["results/bench/train_unet.csv", "results/bench/train_unet_loss.png"]
    if config["train"]["prompts"]:
        targets.append("results/bench/train_unet_samples.png")
    return targets
