"""Run the workflow in a scratch copy of the checkout, as a user's clone would."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

COPIED = ["Snakefile", "rules", "scripts", "diffscale", "envs", "config", "config.yaml", "profiles"]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def clone_workflow(root: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1500) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """{rule: count} from a dry run's job table; {} when there is nothing to do."""
    proc = snakemake(workdir, "-n", "--cores", "2", *args)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            jobs[match.group(1)] = int(match.group(2))
    return jobs
