"""scripts/flux_lora.py: a non-positive --gpus or --steps is one line naming the flag, exit 2, and
nothing written (no resume/last.pt, no samples/)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("flag, value, what", [("--gpus", "0", "devices, or gloo processes"),
                                               ("--steps", "0", "training steps"),
                                               ("--steps", "-5", "training steps")])
def test_flux_lora_rejects_non_positive_gpus_and_steps(repo_root, tmp_path, flag, value, what):
    out = tmp_path / "run"
    args = {"--gpus": "1", "--steps": "8", flag: value}
    proc = subprocess.run([sys.executable, "scripts/flux_lora.py", "--config", "config.yaml", "--hw", "local",
                           "--gpus", args["--gpus"], "--steps", args["--steps"], "--out", str(out)],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {flag}: {value} is not a positive integer ({what})\n"
    assert not out.exists()
