"""Glue between the Snakefile and the package, kept here so it is tested like the rest."""

from __future__ import annotations

import copy
import os
import sys

from diffscale.config import schema


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


def overlay_note(overlay: dict | None) -> str:
    """For a config error: where the values came from, when the command line gave an overlay."""
    if not overlay:
        return ""
    return (f" (the command line's config is an overlay on the demo's config.yaml: it has no "
            f"{', '.join(missing_sections(overlay))}; give every section for a whole config)")
