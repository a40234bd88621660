# Config validation (one pass), input functions, resource functions, wildcard constraints. The
# logic lives in the diffscale package (tested there); this file adapts it.
import json
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from diffscale import experiments, resources as hwres, vocab
from diffscale.config import validate_config
from diffscale.data import demographics as coco_demographics
from diffscale.ddpm import data as ddpm_data, sweeps as ddpm_sweeps
from diffscale.embed.settings import settings_for as _embed_settings_for
from diffscale.errors import UserError
from diffscale.flux import settings as flux_settings
from diffscale.report.contract import TITLES as REPORT_TITLES
from diffscale.hardware import demand as hardware_demand
from diffscale.train import config as train_config
from diffscale.workflow import overlay_note, put_interpreter_on_path, read_command_line_values


# One-line errors naming the key, before any job starts, in one pass over every study's checks.
# (snakemake.utils.validate would print the whole schema; diffscale.config uses the same JSON
# schema and is shared with the CLIs.) Printed and exit 2, as the CLIs do: a WorkflowError would
# wrap the line in Snakemake's frame of this file and line. First, --config's nested values and
# true/false, which Snakemake reads as text, become the numbers and booleans the schema wants.
read_command_line_values(config, workflow.config_settings.config)


def config_sources():
    """Where this run's config came from, as its errors and the report name it: the config files
    read (--configfile's values over config.yaml's) and --config's values, when given."""
    files = [str(workflow_relative(f)) for f in workflow.configfiles]
    return " + ".join(files + (["--config"] if workflow.config_settings.config else [])) or "the config"


def workflow_relative(path):
    """`path` relative to the workflow's folder when it lies inside it; else as it is."""
    path = Path(path).resolve()
    return path.relative_to(workflow.basedir) if path.is_relative_to(workflow.basedir) else path


try:
    validate_config(config, source=config_sources())
except UserError as exc:
    print(f"error: {exc}{overlay_note(workflow.config_settings.overwrite_config)}", file=sys.stderr)
    sys.exit(2)


# Rules call plain `python`: the rule's conda env, or the interpreter running Snakemake.
put_interpreter_on_path(workflow.deployment_settings.deployment_method)
DATA = config["data"]
SYNTHETIC = DATA.get("synthetic")
# `--config partial_report=true`: build the report from the runs that have finished (a run that
# failed for good no longer blocks it); the others are left out, named in the report, and not run.
PARTIAL = config["partial_report"]


def finished(paths):
    """`paths` (each a run's last output), or under partial_report those that exist now."""
    return [p for p in paths if not PARTIAL or os.path.exists(p)]


def unfinished_runs():
    """Under partial_report: the folders of the runs the config asks for that have not finished."""
    if not PARTIAL:
        return []
    markers = [*all_embed_timings(), *all_train_markers(), *all_flux_markers(), *all_ddpm_markers(),
               *hardware_checks()]
    return list(dict.fromkeys(os.path.dirname(p) for p in markers if not os.path.exists(p)))


# Every wildcard's regex comes from diffscale.vocab, the one owner of the vocabularies.
wildcard_constraints:
    **vocab.wildcard_constraints(),


def resources_for(hw=None, gpus=0, workers=1, cpus=None):
    """Resources as callables of the wildcards, for `resources: **resources_for()`.

    `hw`, `gpus` and `workers` are the arguments where they are functions of the wildcards (a
    value that depends on another wildcard), else the wildcards of the same name when present,
    else the argument values (a fixed hardware key for rules without {hw}; none: the CPU
    hardware). `cpus` (a function of the wildcards, None: none) asks for exactly that many CPUs (a
    scaling run w{N}). A retry gets a longer time limit (diffscale.resources.rule_resources). A
    hardware key missing from the table stops the DAG build with a message naming it."""

    def resource(key):
        return lambda wildcards, attempt: hwres.rule_resources(config, wildcards, attempt, hw, gpus, workers,
                                                               cpus)[key]

    return {key: resource(key) for key in hwres.RESOURCE_KEYS}


def cpu_resources():
    """Resources of the light CPU rules (data, report): the CPU hardware's (embed.hardware)."""
    return resources_for()


def conda_env_for(family, hw=None):
    """The `conda:` env of a job of the `family` rules (data, embed, train, ...), chosen per job -
    envs/<family>.yaml, unless the job's hardware entry (its {hw} wildcard, else `hw`) names its
    own `conda_env` (the K80's older PyTorch)."""

    def env(wildcards):
        name = hwres.conda_env(config, dict(wildcards).get("hw", hw), family)
        return os.path.join(workflow.basedir, "envs", f"{name}.yaml")

    return env


def hardware_entry_json(wildcards):
    """The job's hardware entry as params: editing it re-runs the check on that hardware; its price
    is only the report's."""
    entry = hwres.hardware_entry(config, wildcards.hw)
    return json.dumps({k: v for k, v in entry.items() if k != "price_per_hour"}, sort_keys=True)


def hardware_checks():
    """One preflight job per hardware key the studies use, with the most devices a job there asks."""
    return [f"results/hardware/check/{hw}/g{count}/run.json" for hw, count in hardware_demand(config).items()]


# ---- study 1, stage 1: COCO people-centric filtering (rules/data.smk: coco_manifest) ----
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


# Snakemake report categories: the sections' titles (no colon: the category becomes an rst link target)
REPORT_STUDIES = {key: title.replace(" · ", " – ") for key, title in REPORT_TITLES.items()}


def report_unfinished(wildcards):
    """The report's --unfinished flag and the runs it names (partial_report), or ''."""
    runs = unfinished_runs()
    return " ".join(["--unfinished", *runs]) if runs else ""


def report_inputs():
    """Everything the report reads: the bench tables of every study the config enables (under
    partial_report, of the studies with a finished run)."""
    return ["results/bench/models.csv", "results/data/summary.json", COCO_FILTER_TABLE, *COCO_FILTER_FIGURES,
            *finished(hardware_checks()), *(["results/bench/embed_scaling.csv"] if embed_timings() else []),
            *train_report_inputs(), *flux_report_inputs(), *ddpm_report_inputs()]



# --- embedding (study 1, stage 2) ---

def embed_settings(modality, backend):
    """The config slice one embedding run depends on, as the JSON its script reads."""
    return json.dumps(_embed_settings_for(config, modality, backend), sort_keys=True)


def embed_hw(wildcards):
    """The gpu backend runs on embed.gpu_hardware, the CPU backends on embed.hardware."""
    return config["embed"]["gpu_hardware"] if wildcards.backend == "gpu" else config["embed"]["hardware"]


def embed_gpus(wildcards):
    return int(wildcards.workers) if wildcards.backend == "gpu" else 0


def embed_cpus(wildcards):
    """A CPU scaling run w{N} asks SLURM for exactly N CPUs (the gpu backend: cpus_per_gpu each;
    dask with workers as SLURM jobs: 1, the workers' jobs have theirs)."""
    return hwres.scaling_cpus(wildcards.backend, wildcards.workers, config["embed"]["dask"]["cluster"])


def embed_threads(wildcards):
    """At least the hardware entry's CPUs: locally an embedding job holds all the cores Snakemake
    gives it (capped at --cores), so runs never share cores and pin themselves to N of them; on
    SLURM the request is the job's cpus_per_task (embed_cpus), not this."""
    found = hwres.job_resources(config, embed_hw(wildcards), embed_gpus(wildcards), int(wildcards.workers))
    return found["cpus_per_task"]


def embed_train_source():
    """index.json of the embedding run the training stage reads (embed.train_source), per modality."""
    run = config["embed"]["train_source"]
    return {modality: f"{vocab.embed_dir(modality, run)}/index.json" for modality in vocab.MODALITIES}


def all_embed_timings():
    """timing.json of every embedding run the config asks for, both modalities."""
    return [f"{vocab.embed_dir(modality, run.name)}/timing.json"
            for modality in vocab.MODALITIES for run in experiments.embed_runs(config)]


def embed_timings():
    return finished(all_embed_timings())


# --- study 1, stage 3: U-Net training (rules/train.smk) ----------------------------------------
TRAIN_RUN = vocab.TRAIN_RUN
# A sampling job's {run_gpus} is its training run's {gpus}: it samples on one device, so it asks
# for one GPU (the {gpus} wildcard would make it ask for the run's whole allocation).
TRAIN_SAMPLES = "results/train/samples/{hw}/{precision}-g{run_gpus}"


def _train_marker(run):
    return f"{TRAIN_RUN.format(hw=run.hw, precision=run.precision, gpus=run.gpus)}/run.json"


def all_train_markers():
    return [_train_marker(r) for r in experiments.train_runs(config)]


def train_runs_reported():
    """The training runs the table reads: all of them, or under partial_report the finished ones."""
    return [r for r in experiments.train_runs(config) if finished([_train_marker(r)])]


def train_run_wildcards():
    """The training matrix as zipped wildcard lists, for expand(..., zip, **train_run_wildcards())."""
    runs = train_runs_reported()
    return {"hw": [r.hw for r in runs], "precision": [r.precision for r in runs], "gpus": [r.gpus for r in runs]}


def train_samples():
    """The sample folder of every training run the table reads."""
    return [TRAIN_SAMPLES.format(hw=r.hw, precision=r.precision, run_gpus=r.gpus) for r in train_runs_reported()]


def sampled_run(wildcards):
    """The training run a sampling job reads."""
    return TRAIN_RUN.format(hw=wildcards.hw, precision=wildcards.precision, gpus=wildcards.run_gpus)


def train_run_config(wildcards):
    """Exactly what one training job reads, as JSON: an edit of it re-runs the job, nothing else does."""
    run = train_config.run_config(config, wildcards.hw, wildcards.precision, int(wildcards.gpus))
    return json.dumps(run, sort_keys=True)


def train_processes(wildcards):
    """A training job's processes: one per device (or gloo process), each with train.loader_workers."""
    return hwres.training_processes(int(wildcards.gpus), config["train"]["loader_workers"])


def train_threads(wildcards):
    """All the CPUs the job asks SLURM for, so a local run never times two trainings at once."""
    return hwres.rule_resources(config, wildcards, workers=train_processes)["cpus_per_task"]


def train_sampling_flags():
    """generate.py's flags for the config's sampling settings (train_config.sampling_config)."""
    return train_config.sampling_flags(train_config.sampling_config(config))


def train_report_inputs():
    if not train_runs_reported():
        return []
    targets = ["results/bench/train_unet.csv", "results/bench/train_unet_loss.png"]
    if config["train"]["prompts"]:
        targets.append("results/bench/train_unet_samples.png")
    return targets


# --- study 2: FLUX.1-schnell LoRA (rules/flux.smk) ----------------------------------------------

FLUX_DATASET = vocab.FLUX_DATASET
FLUX_CACHE = vocab.FLUX_CACHE
FLUX_RUN = vocab.FLUX_RUN
FLUX_INFER = "results/flux/infer/{hw}"
FLUX_TABLES = [f"results/bench/flux_{name}.csv" for name in ("train", "loss", "quality", "infer")]
FLUX_GRID = "results/bench/flux_samples.png"
FLUX_CACHE_HW = experiments.flux_runs(config)[0].hw  # the cache is made once, on the study's first hardware


def _flux_marker(run):
    return f"{FLUX_RUN.format(hw=run.hw, gpus=run.gpus, steps=run.steps)}/run.json"


def _flux_infer_marker(hw):
    return f"{FLUX_INFER.format(hw=hw)}/infer.csv"


def all_flux_markers():
    hws = dict.fromkeys(r.hw for r in experiments.flux_runs(config))
    return [*(_flux_marker(r) for r in experiments.flux_runs(config)), *(_flux_infer_marker(hw) for hw in hws)]


def flux_run_wildcards():
    """The FLUX matrix as zipped wildcard lists, for expand(..., zip, **flux_run_wildcards()) (under
    partial_report, its finished runs)."""
    runs = [r for r in experiments.flux_runs(config) if finished([_flux_marker(r)])]
    return {"hw": [r.hw for r in runs], "gpus": [r.gpus for r in runs], "steps": [r.steps for r in runs]}


def flux_run_config(wildcards):
    """Exactly what one LoRA run reads, as JSON: an edit of it re-runs the job, nothing else does."""
    run = flux_settings.run_config(config, wildcards.hw, int(wildcards.gpus), int(wildcards.steps))
    return json.dumps(run, sort_keys=True)


def flux_threads(wildcards):
    return hwres.job_resources(config, wildcards.hw, int(wildcards.gpus))["cpus_per_task"]


def flux_infer_threads(wildcards):
    """An inference job's CPUs: one device of its hardware key."""
    return hwres.job_resources(config, wildcards.hw, 1)["cpus_per_task"]


def flux_dtype(hw):
    """The compute dtype of FLUX jobs on `hw`: flux.dtype on GPUs, flux.cpu_dtype on CPUs."""
    return config["flux"]["dtype"] if hwres.compute_device(config, hw) == "cuda" else config["flux"]["cpu_dtype"]


def flux_infer_hardware():
    hws = dict.fromkeys(r.hw for r in experiments.flux_runs(config))
    return [hw for hw in hws if finished([_flux_infer_marker(hw)])]


def flux_infer_lora(wildcards):
    """The LoRA inference is timed with: the smallest run (fewest GPUs, then steps) on that hardware."""
    run = min((r for r in experiments.flux_runs(config) if r.hw == wildcards.hw), key=lambda r: (r.gpus, r.steps))
    return os.path.join(FLUX_RUN.format(hw=run.hw, gpus=run.gpus, steps=run.steps), "lora.safetensors")


def flux_report_inputs():
    """The study's contract tables and sample grid: what the report reads of study 2."""
    return [*FLUX_TABLES, FLUX_GRID] if flux_run_wildcards()["hw"] else []


# --- study 3: the CIFAR-10 DDPM training-optimisation study (rules/ddpm.smk) ----------------------

DDPM = config["ddpm"]
DDPM_CACHE = "results/ddpm/data/cifar-uint8.npy"
DDPM_CACHE_INFO = str(ddpm_data.info_path(DDPM_CACHE))
# One run directory per job: results/ddpm/<stage>/<hw>/<variant>.
DDPM_RUN = {
    "profile": "results/ddpm/profile/{hw}",
    "batch": "results/ddpm/batch/{hw}/b{batch}-g{gpus}",
    "amp": "results/ddpm/amp/{hw}/{precision}",
    "workers": "results/ddpm/workers/{hw}/w{workers}",
    "compile": "results/ddpm/compile/{hw}/{compile}",
    "peer": "results/ddpm/peer/{hw}/{precision}-{compile}",
}
DDPM_PRECISION_RE = "|".join(experiments.DDPM_PRECISIONS)
DDPM_COMPILE_RE = "|".join(experiments.DDPM_COMPILE_MODES)
DDPM_BASE = experiments.ddpm_baseline(config)
DDPM_BASE_GPUS = DDPM_BASE["gpus"]


def ddpm_run_config(stage):
    """Exactly what one job of `stage` reads, as JSON (an edit of it re-runs that job only)."""

    def run_config(wildcards):
        coords = dict(wildcards)
        hw = coords.pop("hw")
        return json.dumps(ddpm_sweeps.run_config(config, stage, hw, **coords), sort_keys=True)

    return run_config


def ddpm_processes(gpus=None):
    """The processes of a DDPM window job, as a function of its wildcards: the training process of
    each GPU ({gpus}, else `gpus`, else the baseline's) with its DataLoader workers ({workers}, else
    the baseline's), a CPU each: w8 on 1 GPU asks for 9."""

    def processes(wildcards):
        w = dict(wildcards)
        count = int(w.get("gpus", gpus or DDPM_BASE_GPUS))
        return hwres.training_processes(count, int(w.get("workers", DDPM_BASE["workers"])))

    return processes


def ddpm_resources(gpus=None):
    """`resources:` of a DDPM window job (GPUs: {gpus}, else `gpus`, else the baseline's)."""
    return resources_for(gpus=gpus or DDPM_BASE_GPUS, workers=ddpm_processes(gpus))


def ddpm_threads(gpus=None):
    """threads: all the CPUs the job asks SLURM for, so a local run never times two windows at once."""
    return lambda wildcards: hwres.rule_resources(config, wildcards, gpus=gpus or DDPM_BASE_GPUS,
                                                  workers=ddpm_processes(gpus))["cpus_per_task"]


def ddpm_step_images():
    """The image folder a window decodes every step under ddpm.decode_each_step (an input then, so
    replacing it re-runs the windows), else nothing: the windows read the decoded cache."""
    return [DATA["cifar"]] if DDPM["decode_each_step"] else []


def ddpm_source_flag():
    """--source for ddpm.decode_each_step (the loader then decodes the image files every step)."""
    return " ".join(f"--source {path}" for path in ddpm_step_images())


def ddpm_stage_runs(stage):
    """run.json of every job of a stage the config asks for (under partial_report, that finished)."""
    return finished(_ddpm_stage_markers(stage))


def ddpm_inception_flag():
    """The table's --inception-weights flag, quoted, or '' when ddpm.fid.inception_weights is unset."""
    weights = DDPM["fid"]["inception_weights"]
    return f"--inception-weights {shlex.quote(str(weights))}" if weights else ""


def ddpm_table_stages():
    """The stages with a table: the profile, the sweeps, and the peer's only when ddpm.peer.enabled."""
    return [stage for stage in experiments.DDPM_TABLES if stage != "peer" or DDPM["peer"]["enabled"]]


def all_ddpm_markers():
    return [p for stage in ddpm_table_stages() for p in _ddpm_stage_markers(stage)]


def _ddpm_stage_markers(stage):
    if stage == "profile":
        return [f"results/ddpm/profile/{hw}/run.json" for hw in DDPM["hardware"]]
    if stage == "peer":
        return [os.path.join(DDPM_RUN["peer"].format(hw=hw, **v), "run.json")
                for hw in DDPM["hardware"] for v in DDPM["peer"]["variants"]]
    owners = experiments.ddpm_owners(config)  # a point two sweeps share (the baseline) runs once
    return [os.path.join(DDPM_RUN[owner.stage].format(**vars(owner)), "run.json")
            for run, owner in owners.items() if run.stage == stage]


def ddpm_table_inputs(wildcards):
    return ddpm_stage_runs(wildcards.stage)


def ddpm_report_inputs():
    """The study's tables (results/bench/ddpm_*.csv, the contract the report reads), of the stages
    with a run (under partial_report, a finished one)."""
    return [f"results/bench/ddpm_{stage}.csv" for stage in ddpm_table_stages() if ddpm_stage_runs(stage)]
