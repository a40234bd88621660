"""Load and validate the configuration; shared by the Snakefile and every CLI.

Validation happens in two layers, both before any job starts:
1. the JSON schema (`schemas/config.schema.yaml`): types, ranges, unknown keys;
2. cross-references the schema cannot express: every hardware key named by an experiment exists
   in the `hardware:` table, GPU entries say which GPU model they request, and so on.
Every error is one line naming the key, e.g. ``config.yaml: embed.workers[0]: 0 is less than the
minimum of 1``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from diffscale import experiments, io, models, resources as hwres, vocab
from diffscale.errors import ConfigError, DataError, ModelSpecError

SCHEMA_RESOURCE = "schemas/config.schema.yaml"


@lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files("diffscale").joinpath(SCHEMA_RESOURCE).read_text()
    return yaml.safe_load(text)


def schema_entry(*keys: str) -> dict:
    """The schema's entry for a key path ("flux", "resolution"): the one owner of what a value may
    be and of its default, for a script's flag as for the config."""
    root = node = schema()
    for key in keys:
        node = resolved(resolved(node, root)["properties"][key], root)
    return node


def checked_flag(flag: str, value, *keys: str):
    """A by-hand flag's value checked against the schema entry at `keys` (None: the entry's
    default), else a ConfigError naming the flag and what the config would say."""
    entry = schema_entry(*keys)
    value = entry["default"] if value is None and "default" in entry else value
    try:
        jsonschema.validate(value, entry)
    except jsonschema.ValidationError as exc:
        raise ConfigError(f"{flag}: {exc.message}") from None
    return value


def load_config(path: str | Path) -> dict:
    """Read a YAML config, fill schema defaults, validate; raise ConfigError naming the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(io.read_text(path, "config file not found", "YAML config"))
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return validate_config(raw, source=str(path))


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Validate `cfg` in place (defaults filled) and return it."""
    _check_schema(cfg, source)
    fill_defaults(cfg, schema(), schema())
    _check_references(cfg, source)
    check_model_specs(cfg, source)
    check_people(cfg, source)
    check_dask_address(cfg, source)
    check_train_batches(cfg, source)
    check_flux_batches(cfg, source)
    check_flux_infer(cfg, source)
    check_flux_adapter(cfg, source)
    check_ddpm_window(cfg, source)
    check_synthetic_paths(cfg, source)
    return cfg


def _path_of(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _check_schema(cfg: dict, source: str) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), e.path))
    if not errors:
        return
    # The deepest, most specific error is the one a person can act on.
    error = max(errors, key=lambda e: len(list(e.absolute_path)))
    if error.validator == "oneOf" and error.schema.get("oneOf") and "pretrained" in str(error.schema):
        message = "give exactly one of 'pretrained: <hub id or dir>' or 'random: <preset>'"
    elif error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        message = f"unknown key {extra[0]!r} (allowed: {allowed})" if extra else error.message
        path = _path_of(error)
        key = f"{path}.{extra[0]}" if extra and path != "(top level)" else (extra[0] if extra else path)
        raise ConfigError(f"{source}: {key}: {message}")
    else:
        message = error.message
    raise ConfigError(f"{source}: {_path_of(error)}: {message}")


def fill_defaults(node: Any, node_schema: dict, root: dict) -> None:
    """Insert `default:` values of the schema into `node` where keys are missing."""
    node_schema = resolved(node_schema, root)
    if not isinstance(node, dict):
        if isinstance(node, list) and isinstance(node_schema.get("items"), dict):
            for item in node:
                fill_defaults(item, node_schema["items"], root)
        return
    for key, sub in node_schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            fill_defaults(node[key], sub, root)
    extra = node_schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(node) - set(node_schema.get("properties", {})):
            fill_defaults(node[key], extra, root)


def resolved(node_schema: dict, root: dict) -> dict:
    """A schema node with its `$ref`s followed (a ref may point at a node that is a ref itself)."""
    while "$ref" in node_schema:
        node = root
        for part in node_schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        node_schema = node
    return node_schema


def _check_references(cfg: dict, source: str) -> None:
    hardware = cfg["hardware"]

    def need_hw(key: str, where: str) -> None:
        if key not in hardware:
            raise vocab.unknown_hardware(key, hardware, f"{source}: {where}")

    for name, entry in hardware.items():
        if entry.get("gpus_per_node", 0) > 0 and "gpu_model" not in entry:
            raise ConfigError(f"{source}: hardware.{name}.gpu_model: required when gpus_per_node > 0")
        if entry["device"] == "cuda" and entry.get("gpus_per_node", 0) == 0:
            raise ConfigError(f"{source}: hardware.{name}.gpus_per_node: device cuda needs at least 1 GPU")
        flag = hwres.managed_flag(entry.get("slurm_extra", ""))
        if flag:
            raise ConfigError(f"{source}: hardware.{name}.slurm_extra: {flag} is set from the hardware table or by "
                              "Snakemake's SLURM plugin (use partition, cpus, mem_mb, runtime_min, constraint, qos)")
        if entry.get("max_runtime_min", entry["runtime_min"]) < entry["runtime_min"]:
            raise ConfigError(f"{source}: hardware.{name}.max_runtime_min: {entry['max_runtime_min']} is less than "
                              f"runtime_min {entry['runtime_min']}")

    def need_gpus(hw: str, gpus: int, where: str) -> None:
        entry = hardware[hw]
        limit = entry.get("gpus_per_node", 0)
        if limit and gpus > limit:
            raise ConfigError(f"{source}: {where}: {gpus} GPUs asked but hardware.{hw}.gpus_per_node is {limit}")

    embed = cfg["embed"]
    need_hw(embed["hardware"], "embed.hardware")
    if "gpu" in embed["backends"]:
        if "gpu_hardware" not in embed:
            raise ConfigError(f"{source}: embed.gpu_hardware: required when backends include 'gpu'")
        need_hw(embed["gpu_hardware"], "embed.gpu_hardware")
        if not embed.get("gpus"):
            raise ConfigError(f"{source}: embed.gpus: list the GPU counts for the 'gpu' backend")
        for i, n in enumerate(embed["gpus"]):
            need_gpus(embed["gpu_hardware"], n, f"embed.gpus[{i}]")
    runs = {run.name: run for run in experiments.embed_runs(cfg)}
    names = list(runs)
    if embed["train_source"] not in names:
        raise ConfigError(
            f"{source}: embed.train_source: {embed['train_source']!r} is not one of the embed runs "
            f"({', '.join(names)})"
        )
    if embed.get("scaling_images") and runs[embed["train_source"]].backend != "gpu":
        raise ConfigError(
            f"{source}: embed.train_source: {embed['train_source']!r} embeds only the first "
            f"embed.scaling_images ({embed['scaling_images']}) images; train from a gpu run, or set "
            "scaling_images: null")
    for study in ("train", "flux"):
        for i, entry in enumerate(cfg[study]["matrix"]):
            for hw in entry["hw"]:
                need_hw(hw, f"{study}.matrix[{i}].hw")
                for n in entry["gpus"]:
                    need_gpus(hw, n, f"{study}.matrix[{i}].gpus")
    for i, hw in enumerate(cfg["ddpm"]["hardware"]):
        need_hw(hw, f"ddpm.hardware[{i}]")
        for n in cfg["ddpm"]["gpus"]:
            need_gpus(hw, n, "ddpm.gpus")


def check_train_batches(cfg: dict, source: str = "config") -> None:
    """The global training batch splits evenly over every training run's processes and accumulation."""
    train = cfg["train"]
    try:
        runs = experiments.train_runs(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for run in runs:
        parts = run.gpus * run.grad_accum
        if train["batch_size"] % parts:
            raise ConfigError(
                f"{source}: train.batch_size: {train['batch_size']} does not split into {run.gpus} GPUs x "
                f"grad_accum {run.grad_accum} equal micro-batches (run {run.hw}/{run.variant}); "
                f"use a multiple of {parts}")


def check_flux_batches(cfg: dict, source: str = "config", runs=None) -> None:
    """flux.batch_size (the global batch) splits evenly over the processes of every FLUX run: the
    matrix's, or `runs` (diffscale.flux.settings.run_config checks the one run it builds)."""
    batch = cfg["flux"]["batch_size"]
    for run in experiments.flux_runs(cfg) if runs is None else runs:
        if batch % run.gpus:
            raise ConfigError(
                f"{source}: flux.batch_size: {batch} does not split over {run.gpus} GPUs "
                f"(run {run.hw}/{run.variant}); use a multiple of {run.gpus}")


def check_flux_infer(cfg: dict, source: str = "config") -> None:
    """Every hardware key of the FLUX matrix has one set of inference settings (experiments.flux_infer)."""
    for hw in dict.fromkeys(run.hw for run in experiments.flux_runs(cfg)):
        try:
            experiments.flux_infer(cfg, hw)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def check_flux_adapter(cfg: dict, source: str = "config") -> None:
    """flux.training_adapter, when given, is a file now, not only when a LoRA job loads it."""
    path = cfg["flux"].get("training_adapter")
    if path and not os.path.isfile(path):
        raise ConfigError(f"{source}: flux.training_adapter: {path} is not an existing file "
                          f"(expected a LoRA .safetensors file, or null for none)")


def check_model_specs(cfg: dict, source: str = "config") -> None:
    """Every model spec is one diffscale.models can build (a preset of its role, and so on):
    diffscale.models.parse_spec, the owner of the presets and of the message, decides."""
    for role, raw in cfg["models"].items():
        try:
            models.parse_spec(role, raw, where=f"{source}: models.{role}")
        except ModelSpecError as exc:
            raise ConfigError(str(exc)) from None


def check_people(cfg: dict, source: str = "config") -> None:
    """data.people asks a person in k of every n captions with k <= n."""
    check_person_captions(cfg["data"]["people"], f"{source}: data.people")


def check_dask_address(cfg: dict, source: str = "config") -> None:
    """An address is only used with cluster: address; without it the runs would quietly start a
    LocalCluster on the job's own node."""
    dask = cfg["embed"]["dask"]
    if dask.get("address") and dask["cluster"] != "address":
        raise ConfigError(f"{source}: embed.dask.address: {dask['address']!r} is set, but embed.dask.cluster is "
                          f"{dask['cluster']!r}; the address is used with cluster: address")


def check_person_captions(people: dict, where: str = "data.people") -> None:
    """The k-of-n rule of a `data.people` slice (defaults filled); also diffscale.data.coco's check."""
    k, n = people["min_person_captions"], people["per_captions"]
    if k > n:
        raise ConfigError(f"{where}.min_person_captions: {k} is more than per_captions ({n}); "
                          f"a person in k of every n captions needs k <= n")


SYNTHETIC_ROOT = "results/"  # where the demo's data rules may write
DATA_PATHS = (("coco", "captions"), ("coco", "images"), ("cifar",), ("subject", "dir"))


def check_synthetic_paths(cfg: dict, source: str = "config") -> None:
    """With data.synthetic, rules write demo data at the data paths: they must lie under results/,
    so a real dataset's path (e.g. an overlay of real paths on the demo) is never overwritten."""
    data = cfg["data"]
    if not data.get("synthetic"):
        return
    for keys in DATA_PATHS:
        value = data
        for key in keys:
            value = value[key]
        if not os.path.normpath(str(value)).startswith(SYNTHETIC_ROOT):
            raise ConfigError(
                f"{source}: data.{'.'.join(keys)}: {value} is outside {SYNTHETIC_ROOT}, but data.synthetic "
                f"would write demo data there; to read real data, leave data.synthetic out "
                f"(in an overlay on the demo: data: {{synthetic: null}})")


def check_ddpm_window(cfg: dict, source: str = "config") -> None:
    """The timed steps of a DDPM window split into `repeats` equal blocks (diffscale.ddpm.loop.Window
    times steps // repeats per block, so a remainder would silently go untimed)."""
    steps, repeats = cfg["ddpm"]["steps"], cfg["ddpm"]["repeats"]
    if steps % repeats:
        raise ConfigError(
            f"{source}: ddpm.steps: {steps} is not a multiple of ddpm.repeats {repeats} (each of the {repeats} "
            f"timed blocks has the same number of steps); use a multiple of {repeats}")


def check_run_slice(obj: Any, source: str, sections=(), keys: dict | None = None, positive=(),
                    hw: str = "run.hw") -> dict:
    """A run config read back from JSON (a rule's params, or a file a person passes) has what the
    run reads: the `sections`, each section's `keys`, `positive` ("run.gpus") integers of at least
    1, and, with a `hardware` section, the entry its `hw` key ("run.hw", or "hw") names; else one
    ConfigError naming the first that is missing or wrong."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    for section in sections:
        if section not in obj:
            raise ConfigError(f"{source}: missing section {section!r}")
    for section, names in (keys or {}).items():
        missing = [name for name in names if name not in obj[section]]
        if missing:
            raise ConfigError(f"{source}: {section}.{missing[0]} is missing")
    for dotted in positive:
        section, key = dotted.split(".")
        value = obj[section][key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{source}: {dotted}: {value!r} is not a positive integer")
    if "hardware" in sections:
        *section, key = hw.split(".")
        named = (obj[section[0]] if section else obj).get(key)
        if named not in obj["hardware"]:
            raise ConfigError(f"{source}: hardware.{named}: missing ({hw} names it; the table has "
                              f"{', '.join(map(str, obj['hardware'])) or 'no entry'})")
    return obj


def config_hash(obj: Any) -> str:
    """A short, stable hash of a (slice of a) config, recorded in every result."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
