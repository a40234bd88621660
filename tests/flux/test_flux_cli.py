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


def test_a_stopped_run_says_how_to_continue_and_a_resumed_one_finishes(repo_root, tmp_path, prepared, make_run_config):
    import json
    import os

    dataset, cache = prepared
    out = tmp_path / "run"
    cmd = [sys.executable, "scripts/flux_lora.py", "--run-config", json.dumps(make_run_config(steps=2)),
           "--cache", str(cache), "--dataset", str(dataset), "--out", str(out), "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stopped = subprocess.run([*cmd, "--stop-after", "1"], cwd=repo_root, capture_output=True, text=True, timeout=600,
                             env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == ("stopped after step 1, checkpointed; the same command with "
                                                        "--resume continues the run")
    assert not (out / "run.json").exists()
    done = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0 and "stopped after" not in done.stderr and (out / "run.json").exists()
