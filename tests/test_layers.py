"""Imports flow one way (the layer order of diffscale/__init__.py): parsed with ast, not imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import diffscale

PACKAGE = Path(diffscale.__file__).resolve().parent
STUDIES = ("data", "embed", "train", "flux", "ddpm")
CORE = "train.core"
TOP = ("bench", "report")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every diffscale import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            # `from diffscale import embed` / `from diffscale.train import core`: the names may be modules
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if (PACKAGE.parent / Path(*f"{base}.{alias.name}".split("."))).exists()
                      or (PACKAGE.parent / Path(*f"{base}.{alias.name}".split("."))).with_suffix(".py").exists()]
    return [(line, name) for line, name in found if name == "diffscale" or name.startswith("diffscale.")]


def layer(module: str) -> tuple[int, str]:
    """(rank, room): 0 ground, 1 the training core, 2 a study (room = the study), 3 bench/report."""
    rest = module.split(".")[1:]
    if not rest:
        return 0, "ground"
    if ".".join(rest[:2]) == CORE:
        return 1, "core"
    if rest[0] in STUDIES:
        return 2, rest[0]
    if rest[0] in TOP:
        return 3, rest[0]
    return 0, "ground"


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        rank, room = layer(here)
        for line, target in imports_of(path):
            t_rank, t_room = layer(target)
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            if t_room == "bench" and room != "bench":
                problems.append(f"{where}: nothing imports diffscale.bench")
            elif t_rank > rank or (t_rank == rank == 2 and t_room != room):
                problems.append(f"{where}: {room} (layer {rank}) may not import {t_room} (layer {t_rank})")
    return problems


def test_imports_flow_one_way():
    assert upward_imports() == []


def ground_cycles() -> list[str]:
    """Ground modules that reach themselves through ground imports (deferred ones included): the
    ground is one flat layer (config validates with experiments, models and resources, the owners of
    what it checks), so a cycle is what would tangle it."""
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        if layer(here)[0] == 0 and here != "diffscale":
            edges[here] = {t for _, t in imports_of(path) if layer(t)[0] == 0 and t not in (here, "diffscale")}
    cycles = []
    for start in edges:
        seen, todo = set(), list(edges[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += edges.get(module, ())
        if start in seen:
            cycles.append(start)
    return cycles


def test_the_ground_has_no_import_cycle():
    assert ground_cycles() == []


def test_a_ground_cycle_is_caught(tmp_path, monkeypatch):
    fake = tmp_path / "diffscale"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "config.py").write_text("from diffscale import models\n")
    (fake / "models.py").write_text("def spec():\n    from diffscale.config import load\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert ground_cycles() == ["diffscale.config", "diffscale.models"]


def test_the_layer_order_is_stated_in_the_package_docstring():
    doc = diffscale.__doc__
    for word in ("ground", "training core", "studies", "bench", "report", "tests/test_layers.py"):
        assert word in doc, word


@pytest.mark.parametrize("source, expected", [
    ("from diffscale.bench.timing import PhaseTimer\n", "nothing imports diffscale.bench"),
    ("from diffscale.embed.shards import ShardReader\n", "train (layer 2) may not import embed (layer 2)"),
    ("from diffscale.train.unet import train\n", "core (layer 1) may not import train (layer 2)"),
])
def test_an_upward_import_is_caught(tmp_path, monkeypatch, source, expected):
    fake = tmp_path / "diffscale"
    for folder in ("bench", "embed", "train/core"):
        (fake / folder).mkdir(parents=True, exist_ok=True)
        (fake / folder / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "bench" / "timing.py").write_text("")
    (fake / "embed" / "shards.py").write_text("")
    (fake / "train" / "unet.py").write_text("")
    where = fake / ("train/core/launch.py" if "core" in expected else "train/data.py")
    where.write_text(source)
    monkeypatch.setitem(globals(), "PACKAGE", fake)  # upward_imports() reads the module global
    (problem,) = upward_imports()
    assert expected in problem
