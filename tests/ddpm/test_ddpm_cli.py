"""scripts/ddpm_run.py and the run config it builds: a bad variant, hardware key or run config is one
line naming the key, the value and what is allowed, exit 2, before any training starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from diffscale.ddpm import sweeps
from diffscale.errors import ConfigError


def run(repo_root, *args):
    return subprocess.run([sys.executable, "scripts/ddpm_run.py", *args], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_workflow_values_are_typed(ddpm_config):
    rc = sweeps.run_config(ddpm_config, "batch", "local", batch="8", gpus="2")  # wildcards are strings
    assert rc["variant"] == {"batch": 8, "gpus": 2, "precision": "fp32", "workers": 0, "compile": "off"}
    assert sweeps.run_config(ddpm_config, "compile", "local", compile="max-autotune")["variant"]["compile"] == \
        "max-autotune"
    assert sweeps.run_config(ddpm_config, "workers", "local", workers="0")["variant"]["workers"] == 0


@pytest.mark.parametrize("variant, message", [
    ({"precision": "fp8"}, "ddpm run: precision: 'fp8' is not one of fp32, tf32, bf16, fp16"),
    ({"compile": "turbo"}, "ddpm run: compile: 'turbo' is not one of off, default, max-autotune, reduce-overhead"),
    ({"bogus": "1"}, "ddpm run: 'bogus' is not a coordinate of a run (allowed: batch, gpus, precision, workers, "
                     "compile)"),
    ({"batch": "0"}, "ddpm run: batch: '0' is not a positive integer"),
    ({"batch": "abc"}, "ddpm run: batch: 'abc' is not a positive integer"),
    ({"gpus": "0"}, "ddpm run: gpus: '0' is not a positive integer"),
    ({"gpus": 1.5}, "ddpm run: gpus: 1.5 is not a positive integer"),
    ({"workers": "-1"}, "ddpm run: workers: '-1' is not a non-negative integer"),
])
def test_bad_variant_is_one_line(ddpm_config, variant, message):
    with pytest.raises(ConfigError) as info:
        sweeps.run_config(ddpm_config, "amp", "local", **variant)
    assert str(info.value) == message


def test_unknown_hardware_key(ddpm_config):
    with pytest.raises(ConfigError, match=r"^ddpm run: hw: hardware key 'nosuch' is not in the hardware table "
                                          r"\(local\)$"):
        sweeps.run_config(ddpm_config, "amp", "nosuch")


def test_cli_rejects_a_bad_precision_before_training(repo_root, tmp_path):
    proc = run(repo_root, "--config", "config.yaml", "--stage", "amp", "--hw", "local", "--set", "precision=fp8",
               "--cache", str(tmp_path / "none.npy"), "--out", str(tmp_path / "run"))
    assert one_line_error(proc) == "error: ddpm run: precision: 'fp8' is not one of fp32, tf32, bf16, fp16"
    assert not (tmp_path / "run").exists()


def test_cli_run_config_missing_keys(repo_root, ddpm_config, tmp_path):
    def error(rc) -> str:
        text = rc if isinstance(rc, str) else json.dumps(rc)
        return one_line_error(run(repo_root, "--run-config", text, "--cache", str(tmp_path / "none.npy"),
                                  "--out", str(tmp_path / "run")))

    assert error("{}") == "error: --run-config: missing key 'stage'"
    assert error("[]") == "error: --run-config: expected a JSON object"
    good = sweeps.run_config(ddpm_config, "amp", "local", precision="bf16")
    del good["variant"]["gpus"]
    assert error(good) == "error: --run-config: variant.gpus is missing"
    good["variant"].update(gpus=1, precision="fp8")
    assert error(good) == "error: --run-config: variant: precision: 'fp8' is not one of fp32, tf32, bf16, fp16"
    assert not (tmp_path / "run").exists()
