"""Every rule of the workflow, as Snakemake loads it: a pinned env from envs/ (the hardware entry's
own env where it names one), resources from the hardware table, a log. Holds for rules added later."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffscale.resources import RESOURCE_KEYS

ROOT = Path(__file__).resolve().parents[1]


def inventory(*configfiles: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "rule_inventory.py"), *configfiles],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["config.yaml", "config/full.yaml"])
def rules(request) -> tuple[str, dict]:
    return request.param, inventory(request.param)


def job_rules(found: dict) -> list[dict]:
    """Rules that run something (not target-only rules such as `all`)."""
    return [r for r in found["rules"] if r["has_shell"]]


def test_every_rule_runs_in_an_existing_pinned_env(rules):
    _, found = rules
    assert job_rules(found)
    for rule in job_rules(found):
        for hw, env in rule["envs"].items():
            assert env, f"rule {rule['name']} has no conda: directive"
            path = ROOT / env
            assert path.parent == ROOT / "envs" and path.is_file(), f"rule {rule['name']} ({hw}): {env} is not in envs/"
            assert yaml.safe_load(path.read_text())["dependencies"], env


def test_rules_with_a_hardware_wildcard_honour_the_entrys_own_env(rules):
    config, found = rules
    hardware = yaml.safe_load((ROOT / config).read_text())["hardware"]
    for rule in job_rules(found):
        if "hw" not in rule["wildcards"]:
            continue
        for hw, entry in hardware.items():
            if entry.get("conda_env"):
                assert rule["envs"][hw] == f"envs/{entry['conda_env']}.yaml", (
                    f"rule {rule['name']} ignores hardware.{hw}.conda_env: use conda: conda_env_for(<family>)")
        family_envs = {env for hw, env in rule["envs"].items() if not hardware[hw].get("conda_env")}
        assert len(family_envs) == 1, f"rule {rule['name']}: one family env expected, got {family_envs}"


def test_every_rule_takes_its_resources_from_the_hardware_table(rules):
    _, found = rules
    for rule in job_rules(found):
        missing = set(RESOURCE_KEYS) - set(rule["resources"])
        assert not missing, f"rule {rule['name']} lacks {sorted(missing)}: use resources: **resources_for()"
        assert rule["log"], f"rule {rule['name']} has no log:"


def test_only_the_light_summary_rules_run_where_snakemake_runs(rules):
    # On SLURM a local rule is not submitted: the tables, the sample grid and the report (seconds of
    # reading small files) skip the queue; every rule that computes on a hardware key is a cluster job.
    _, found = rules
    local = {rule["name"] for rule in job_rules(found) if rule["local"]}
    assert local == {"embed_scaling", "train_unet_table", "samples", "flux_tables", "ddpm_table", "report"}
    assert not [rule["name"] for rule in found["rules"] if rule["local"] and "hw" in rule["wildcards"]]


def test_the_k80_entry_of_the_full_study_gets_the_k80_env():
    found = inventory("config/full.yaml")
    check = next(r for r in found["rules"] if r["name"] == "hardware_check")
    assert check["envs"] == {"a100": "envs/train.yaml", "a40": "envs/train.yaml", "cpu": "envs/train.yaml",
                             "cpu_large": "envs/train.yaml", "k80": "envs/train-k80.yaml"}


def test_ddpm_windows_declare_the_image_folder_they_decode_each_step(tmp_path):
    """Under ddpm.decode_each_step every window reads data.cifar itself, so it is their input; else only the cache."""
    windows = {"ddpm_batch", "ddpm_amp", "ddpm_workers", "ddpm_compile", "ddpm_profile", "ddpm_peer"}
    folder = yaml.safe_load((ROOT / "config.yaml").read_text())["data"]["cifar"]
    overlay = tmp_path / "decode.yaml"
    overlay.write_text(yaml.safe_dump({"ddpm": {"decode_each_step": True}}))
    for configfiles, declared in [(["config.yaml"], False), (["config.yaml", str(overlay)], True)]:
        found = {r["name"]: r for r in inventory(*configfiles)["rules"]}
        assert windows <= set(found)
        for name in windows:
            assert (folder in found[name]["inputs"]) is declared, (name, configfiles, found[name]["inputs"])


def test_preflight_asks_for_every_hardware_check_and_nothing_else():
    """`snakemake preflight`: the checks alone, one per hardware key with its most GPUs, before a first submission."""
    from diffscale.config import load_config
    from diffscale.hardware import demand

    found = {r["name"]: r for r in inventory("config/full.yaml")["rules"]}
    want = {f"results/hardware/check/{hw}/g{n}/run.json" for hw, n in demand(load_config(ROOT / "config/full.yaml")).items()}
    assert set(found["preflight"]["inputs"]) == want and len(want) == 5
    assert found["preflight"]["local"] and not found["preflight"]["has_shell"]
