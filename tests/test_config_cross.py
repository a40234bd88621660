"""Checks that span the config and the CLIs: a user mistake is one line naming the flag or key,
before anything is written."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from diffscale.config import load_config
from diffscale.data import coco
from diffscale.errors import ConfigError
from diffscale.flux import settings as flux_settings
from diffscale.train import config as train_config


def test_flux_run_config_checks_its_own_run(repo_root):
    cfg = load_config(repo_root / "config.yaml")
    with pytest.raises(ConfigError, match=r"^config: flux\.batch_size: 2 does not split over 3 GPUs "
                                          r"\(run local/g3-s8\); use a multiple of 3$"):
        flux_settings.run_config(cfg, "local", 3, 8)


def test_people_settings_share_the_config_check():
    with pytest.raises(ConfigError, match=r"^data\.people\.min_person_captions: 6 is more than per_captions \(5\)"):
        coco.people_settings({"min_person_captions": 6})


@pytest.mark.parametrize("key, value", [("gpus", 0), ("steps", 0), ("steps", -5)])
def test_flux_run_config_json_needs_positive_gpus_and_steps(repo_root, key, value):
    run = flux_settings.run_config(load_config(repo_root / "config.yaml"), "local", 1, 8)
    bad = copy.deepcopy(run)
    bad["run"][key] = value
    with pytest.raises(ConfigError, match=rf"^--run-config: run\.{key}: {value} is not a positive integer$"):
        flux_settings.check_run_config(bad)


def test_train_run_config_json_needs_positive_gpus(repo_root):
    run = train_config.run_config(load_config(repo_root / "config.yaml"), "local", "fp32", 1)
    run["run"]["gpus"] = 0
    with pytest.raises(ConfigError, match=r"^--run-config: run\.gpus: 0 is not a positive integer$"):
        train_config.check_run_config(run)


def test_train_unet_rejects_zero_gpus_before_writing(repo_root, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "scripts/train_unet.py", "--config", "config.yaml", "--hw", "local",
                           "--precision", "fp32", "--gpus", "0", "--out", str(out)],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == "error: --gpus: 0 is not a positive integer (devices, or gloo processes)\n"
    assert not out.exists()
