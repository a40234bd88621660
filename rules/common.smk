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


# ---- study 1, stage 1: COCO people-centric filtering (rules/data.smk: coco_manifest) ----
from diffscale.data import demographics as coco_demographics

COCO_DIR = "results/data/coco"
COCO_FILTER_TABLE = "results/bench/coco_filter.csv"
COCO_FILTER_FIGURES = [str(p) for p in coco_demographics.figure_paths("results/bench")]


def coco_inputs():
    """The COCO captions json, and the image folder and instances json when the config names them."""
    coco = DATA["coco"]
    found = {"captions": coco["captions"]}
    for key in ("images", "instances"):
        if coco.get(key):
            found[key] = coco[key]
    return found


def report_inputs():
    """Everything the report reads: the bench tables of every study the config enables."""
    return ["results/bench/models.csv", "results/data/summary.json", COCO_FILTER_TABLE, *COCO_FILTER_FIGURES]

