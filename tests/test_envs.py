"""The pinned conda envs (envs/*.yaml): each parses and pins exact versions, and agrees with
pyproject.toml's pins — except an env a hardware entry names as its override (the K80's), which
pins what its older PyTorch needs but still provides every package of the env it replaces."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
CONFIGS = [ROOT / "config.yaml", *sorted((ROOT / "config").glob("*.yaml"))]
CONDA_PIN = re.compile(r"^([A-Za-z0-9_.-]+)=(\d[\w.]*)$")  # name=1.2.3, no ranges or wildcards
PIP_PIN = re.compile(r"^([A-Za-z0-9_.\[\]-]+)==(\d[\w.+]*)$")
# conda package names that differ from the Python distribution's
CONDA_TO_PYPI = {"pytorch": "torch"}
# not Python distributions of the project: the interpreter, its installer, the CUDA runtime,
# and the BLAS PyTorch's conda build links
NON_PROJECT = {"python", "pip", "pytorch-cuda", "mkl"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()


def pins(env_path: Path) -> dict[str, str]:
    """{normalized package name: version} of an env file; fails on anything not pinned exactly."""
    env = yaml.safe_load(env_path.read_text())
    found = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep["pip"]:
                match = PIP_PIN.match(spec)
                assert match, f"{env_path.name}: pip requirement {spec!r} is not pinned as name==version"
                found[normalize(match.group(1))] = match.group(2)
            continue
        match = CONDA_PIN.match(dep)
        assert match, f"{env_path.name}: conda requirement {dep!r} is not pinned as name=version"
        name = CONDA_TO_PYPI.get(match.group(1), match.group(1))
        found[normalize(name)] = match.group(2)
    return found


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for spec in project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]:
        match = PIP_PIN.match(spec.replace(" ", ""))
        assert match, f"pyproject.toml: {spec!r} is not pinned as name==version"
        found[normalize(match.group(1))] = match.group(2)
    return found


def override_envs() -> dict[str, set[str]]:
    """{env name: hardware keys naming it} over every shipped config."""
    found: dict[str, set[str]] = {}
    for path in CONFIGS:
        for hw, entry in (yaml.safe_load(path.read_text()).get("hardware") or {}).items():
            if entry.get("conda_env"):
                found.setdefault(entry["conda_env"], set()).add(f"{path.name}:{hw}")
    return found


def family_of(override: str) -> str:
    """train-k80 overrides train: the family is the name up to the first dash."""
    return override.split("-")[0]


def test_every_env_parses_and_pins_exact_versions():
    assert {p.stem for p in ENVS} >= {"data", "embed", "train", "flux", "ddpm", "report"}
    for path in ENVS:
        env = yaml.safe_load(path.read_text())
        assert env["name"] == f"diffscale-{path.stem}", path.name
        assert "nodefaults" in env["channels"], f"{path.name}: channels must not fall back to defaults"
        assert pins(path), path.name


def test_family_envs_agree_with_pyproject_pins():
    project = pyproject_pins()
    overrides = override_envs()
    for path in ENVS:
        if path.stem in overrides:
            continue
        for name, version in pins(path).items():
            if name in NON_PROJECT:
                continue
            assert name in project, f"{path.name}: {name} is pinned here but not in pyproject.toml"
            assert version == project[name], f"{path.name}: {name}=={version}, pyproject.toml pins {project[name]}"


def test_family_envs_use_the_python_pyproject_requires():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = tuple(int(x) for x in project["requires-python"].removeprefix(">=").split("."))
    for path in ENVS:
        if path.stem not in override_envs():
            assert tuple(int(x) for x in pins(path)["python"].split(".")) >= minimum, path.name


def test_every_env_a_hardware_entry_names_exists_and_covers_the_env_it_replaces():
    overrides = override_envs()
    assert "train-k80" in overrides, "config/full.yaml's k80 entry names the train-k80 env"
    for name, users in overrides.items():
        path = ROOT / "envs" / f"{name}.yaml"
        assert path.is_file(), f"{sorted(users)} name conda_env {name!r} but envs/{name}.yaml is missing"
        family = ROOT / "envs" / f"{family_of(name)}.yaml"
        assert family.is_file(), f"envs/{name}.yaml overrides no family env ({family.name} missing)"
        missing = set(pins(family)) - set(pins(path)) - NON_PROJECT
        assert not missing, f"envs/{name}.yaml lacks {sorted(missing)} that {family.name} provides"


def test_the_k80_env_has_a_pytorch_with_sm_37_kernels():
    k80 = pins(ROOT / "envs" / "train-k80.yaml")
    assert k80["torch"] == "1.13.1"  # the newest release whose builds carry sm_37
    assert k80["pytorch-cuda"] == "11.7"
    assert k80["numpy"].startswith("1.")  # torch 1.13 is built against the NumPy 1 ABI


def test_the_package_parses_as_python_3_10_for_the_k80_env():
    # envs/train-k80.yaml runs Python 3.10: the code its jobs import must not need 3.11 syntax.
    for path in [*(ROOT / "diffscale").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]:
        try:
            ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
        except SyntaxError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}:{exc.lineno}: not Python 3.10 syntax ({exc.msg})")
