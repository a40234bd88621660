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


def res(hw, gpus=0, workers=1):
    """Resources of a job on hardware key `hw` (see diffscale.resources)."""
    return hwres.job_resources(config, hw, int(gpus), int(workers))


RESOURCE_KEYS = ["slurm_partition", "cpus_per_task", "mem_mb", "runtime", "gres", "gpu", "gpu_model"]


def resources_for(hw=None, gpus=0, workers=1):
    """Resources as callables of the wildcards, for `resources: **resources_for()`.

    `hw`, `gpus` and `workers` come from the wildcards of the same name when present,
    else from the arguments (a fixed hardware key for rules without a {hw} wildcard, or a
    function of the wildcards where it depends on another one)."""

    def one(key):
        def fn(wildcards):
            w = dict(wildcards)

            def pick(name, default):
                value = w.get(name, default)
                return value(wildcards) if callable(value) else value

            return res(pick("hw", hw), pick("gpus", gpus), pick("workers", workers))[key]

        return fn

    return {key: one(key) for key in RESOURCE_KEYS}


def cpu_resources():
    """Resources of the light CPU rules (data, report): the embedding stage's CPU hardware."""
    return resources_for(hw=config["embed"]["hardware"])


def report_inputs():
    """Everything the report reads: the bench tables of every study the config enables."""
    return ["results/bench/models.csv", "results/data/summary.json", "results/bench/embed_scaling.csv"]


# --- embedding (study 1, stage 2) ---
from diffscale.embed.settings import settings_for as _embed_settings_for


def embed_settings(modality, backend):
    """The config slice one embedding run depends on, as the JSON its script reads."""
    return json.dumps(_embed_settings_for(config, modality, backend), sort_keys=True)


def embed_hw(wildcards):
    """The gpu backend runs on embed.gpu_hardware, the CPU backends on embed.hardware."""
    return config["embed"]["gpu_hardware"] if wildcards.backend == "gpu" else config["embed"]["hardware"]


def embed_gpus(wildcards):
    return int(wildcards.workers) if wildcards.backend == "gpu" else 0


def embed_threads(wildcards):
    """All the CPUs the job asks SLURM for: locally this also keeps embedding jobs from sharing
    cores with each other (Snakemake caps it at --cores), so their timings stay honest."""
    return res(embed_hw(wildcards), embed_gpus(wildcards), wildcards.workers)["cpus_per_task"]


def embed_train_source():
    """index.json of the embedding run the training stage reads (embed.train_source), per modality."""
    run = config["embed"]["train_source"]
    return {modality: f"results/embed/{modality}/{run}/index.json" for modality in ("images", "text")}


def embed_timings():
    """timing.json of every embedding run the config asks for, both modalities."""
    return [f"results/embed/{modality}/{run.name}/timing.json"
            for modality in ("images", "text") for run in experiments.embed_runs(config)]
