"""Fixtures of the report tests, on report_data's results and page parser. (The data lives in a
module of its own: `from conftest import` resolves to whichever test folder's conftest came first.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from diffscale.report.html import build_report
from report_data import HARDWARE, Page, write_results


@pytest.fixture
def results(tmp_path) -> Path:
    return write_results(tmp_path)


@pytest.fixture
def build(tmp_path):
    """build(results) -> Page of the report built from `results` with the fixture prices; plots
    are left out unless draw=True (matplotlib is most of a build's time)."""

    def make(results: Path, **kwargs) -> Page:
        kwargs.setdefault("draw", False)
        out = tmp_path / "out" / "report.html"
        build_report(results, out, hardware=kwargs.pop("hardware", HARDWARE), **kwargs)
        return Page(out.read_text())

    return make


@pytest.fixture
def copy_results(tmp_path):
    def make(results: Path, name: str) -> Path:
        dest = tmp_path / name / "results"
        shutil.copytree(results, dest)
        return dest

    return make
