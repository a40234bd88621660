"""Shared fixtures. The repo root goes first on sys.path so a checkout's own package is tested
even when another checkout is pip-installed in editable mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip cleanly on a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a fresh clone has no shared data)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _no_job_start_left_behind():
    """A job script's main() run in-process marks the job's start in the environment
    (timing.mark_job_start); left there, every later in-process training run is billed from it."""
    import os

    from diffscale.timing import JOB_STARTED_ENV

    before = os.environ.get(JOB_STARTED_ENV)
    yield
    assert os.environ.get(JOB_STARTED_ENV) == before, f"this test left {JOB_STARTED_ENV} set"
