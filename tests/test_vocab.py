"""One owner per vocabulary (diffscale.vocab): the schema, the CLIs and the workflow agree with it."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diffscale import vocab
from diffscale.config import schema
from diffscale.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def props(*path: str) -> dict:
    node = schema()["properties"]
    for key in path:
        node = node[key]
        node = node.get("properties", node)
    return node


@pytest.mark.parametrize("where, owner", [
    (("embed", "backends"), vocab.BACKENDS),
    (("embed", "policies"), vocab.POLICIES),
])
def test_schema_list_enums_are_the_vocabulary(where, owner):
    assert props(*where[:-1])[where[-1]]["items"]["enum"] == list(owner)


def test_schema_dtype_and_precision_enums_are_the_vocabulary():
    embed = props("embed")
    assert embed["dtype"]["enum"] == embed["cpu_dtype"]["enum"] == list(vocab.DTYPES)
    matrix = schema()["properties"]["train"]["properties"]["matrix"]["items"]["properties"]
    assert matrix["precision"]["items"]["enum"] == list(vocab.PRECISIONS)


def test_run_names_and_directories():
    assert vocab.embed_run_name("dask", "naive", 4) == "dask-naive-w4"
    assert vocab.embed_run_dir("text", "serial", "pinned", 1) == "results/embed/text/serial-pinned-w1"
    from diffscale.experiments import EmbedRun

    assert EmbedRun("joblib", "pinned", 2, "local").name == "joblib-pinned-w2"


def test_wildcard_constraints_match_exactly_the_vocabulary():
    constraints = vocab.wildcard_constraints()
    for name, values in (("backend", vocab.BACKENDS), ("policy", vocab.POLICIES),
                         ("precision", vocab.PRECISIONS), ("modality", vocab.MODALITIES)):
        assert all(re.fullmatch(constraints[name], v) for v in values), name
        assert not re.fullmatch(constraints[name], values[0] + "x"), name
    common = (ROOT / "rules" / "common.smk").read_text()
    assert "vocab.wildcard_constraints()" in common
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        for name in ("backend", "policy", "precision", "modality"):
            assert not re.search(rf"^\s+{name}=\"", text, re.M), f"{smk.name} constrains {{{name}}} itself"


def test_the_hardware_error_is_written_once():
    cfg = {"hardware": {"cpu": {}, "a100": {}}}
    with pytest.raises(ConfigError, match=r"^hardware key 'h100' is not in the config's hardware table \(a100, cpu\)$"):
        vocab.hardware_entry(cfg, "h100")
    with pytest.raises(ConfigError, match=r"^embed: hardware key 'h100' is not in the hardware table \(a100, cpu\)$"):
        vocab.hardware_entry(cfg, "h100", "embed")
    package = ROOT / "diffscale"
    writers = [p.relative_to(ROOT) for p in package.rglob("*.py") if "is not in the" in p.read_text()
               and "hardware table" in p.read_text()]
    assert writers == [Path("diffscale/vocab.py")]


def test_cli_choices_come_from_the_vocabulary():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "embed.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "{" + ",".join(vocab.BACKENDS) + "}" in out and "{" + ",".join(vocab.POLICIES) + "}" in out
    from diffscale.bench import train as bench_train

    parser = argparse.ArgumentParser()
    bench_train.add_arguments(parser)
    (precision,) = [a for a in parser._actions if a.dest == "precision"]
    assert tuple(precision.choices) == vocab.PRECISIONS
