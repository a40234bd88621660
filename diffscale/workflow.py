"""Glue between the Snakefile and the package, kept here so it is tested like the rest."""

from __future__ import annotations

import copy
import os
import sys

import yaml

from diffscale.config import resolved, schema


def put_interpreter_on_path(deployment_methods) -> bool:
    """Rules call plain `python`. Inside a rule's conda env that is the env's python; without
    conda, put the interpreter running Snakemake first on PATH, so a venv works without being
    activated. Returns whether PATH was changed."""
    if any("conda" in str(m).lower() for m in deployment_methods):
        return False
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + path
    return True


def missing_sections(cfg: dict | None) -> list[str]:
    """The top-level sections the schema requires that `cfg` lacks."""
    return [key for key in schema()["required"] if key not in (cfg or {})]


def is_complete_config(cfg: dict | None) -> bool:
    """Whether `cfg` (the configs given on the command line, merged) has every section the schema
    requires: then it is the whole config and replaces the demo's config.yaml; otherwise it is an
    overlay merged onto config.yaml, as usual in Snakemake."""
    return not missing_sections(cfg)


def replace_overlay_models(config: dict, overlay: dict | None) -> None:
    """A model spec is one value: a spec the overlay gives replaces the demo's whole, instead of
    being merged into it key by key (`pretrained:` over the demo's `random: tiny` would be both)."""
    for role, spec in ((overlay or {}).get("models") or {}).items():
        if isinstance(spec, dict) and isinstance(config.get("models"), dict):
            config["models"][role] = copy.deepcopy(spec)


def read_command_line_values(config: dict, given) -> None:
    """Snakemake's `--config` reads a nested value (`train={steps: 3}`) and true/false as text. Where
    the schema does not take text at that key and YAML reads the text as a number, a boolean or
    null, `config` gets that value; anything else is left for validation to name."""
    root = schema()

    def walk(node, given_node, node_schema):
        node_schema = resolved(node_schema, root)
        if isinstance(given_node, dict) and isinstance(node, dict):
            for key, value in given_node.items():
                sub = node_schema.get("properties", {}).get(key, node_schema.get("additionalProperties"))
                if key in node and isinstance(sub, dict):
                    node[key] = walk(node[key], value, sub)
            return node
        if isinstance(given_node, list) and isinstance(node, list) and isinstance(node_schema.get("items"), dict):
            return [walk(n, g, node_schema["items"]) for n, g in zip(node, given_node)] + node[len(given_node):]
        if isinstance(node, str) and node == given_node and not _takes_text(node_schema):
            try:
                value = yaml.safe_load(node)
            except yaml.YAMLError:
                return node
            if isinstance(value, str) and "number" in _types(node_schema):  # YAML 1.1 reads 2e-4 as text
                try:
                    value = float(node)
                except ValueError:
                    return node
            return value if value is None or isinstance(value, (bool, int, float)) else node
        return node

    walk(config, dict(given or {}), root)


def _types(node_schema: dict) -> list[str]:
    types = node_schema.get("type", [])
    return types if isinstance(types, list) else [types]


def _takes_text(node_schema: dict) -> bool:
    """Whether a schema node accepts a string (a type of string, an enum with a string, or no type)."""
    if "enum" in node_schema:
        return any(isinstance(v, str) for v in node_schema["enum"])
    return "type" not in node_schema or "string" in _types(node_schema)


def overlay_note(overlay: dict | None) -> str:
    """For a config error: where the values came from, when the command line gave what looks like
    a whole config short of some sections (half of them or more); a small overlay (`--config
    seed=1`) is what it means to be, and the error alone says what is wrong; a whole config (no
    section missing) replaced config.yaml and needs no note."""
    missing = missing_sections(overlay)
    if not overlay or not missing or len(missing) > len(schema()["required"]) / 2:
        return ""
    return (f" (the command line's config is an overlay on the demo's config.yaml: it has no "
            f"{', '.join(missing)}; give every section for a whole config)")
