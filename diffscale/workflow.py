"""Glue between the Snakefile and the package, kept here so it is tested like the rest."""

from __future__ import annotations

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


def is_complete_config(cfg: dict) -> bool:
    """Whether `cfg` (the configs given on the command line, merged) has every section the schema
    requires: then it is the whole config and replaces the demo's config.yaml; otherwise it is an
    overlay merged onto config.yaml, as usual in Snakemake."""
    return set(schema()["required"]) <= set(cfg or {})
