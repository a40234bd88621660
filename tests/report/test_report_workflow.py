"""The report in the workflow: its figures are marked so `snakemake --report` builds, and the page
passes a real browser's check."""

from __future__ import annotations

import shutil
import tempfile
import zipfile

import pytest

from report_data import HARDWARE, write_results
from diffscale.report import browser
from diffscale.report.html import build_report
from workflow_helpers import clone_workflow, snakemake

def test_snakemake_report_zip_builds_with_the_captions(repo_root, tmp_path):
    work = clone_workflow(repo_root, tmp_path / "wf")
    shutil.copytree(repo_root / "report", work / "report")
    results = write_results(tmp_path / "fixture")
    shutil.copytree(results, work / "results")
    build_report(work / "results", work / "results" / "report.html", hardware=HARDWARE,
                 figures_dir=work / "results" / "report")
    snakemake(work, "--report", "report.zip")
    with zipfile.ZipFile(work / "report.zip") as archive:
        names = archive.namelist()
        page = next(archive.read(n) for n in names if n.endswith("report/report.html")).decode()
    for figure in ("speedup-images.png", "throughput.png", "psnr.png", "compile.png", "profile-device.png"):
        assert any(n.endswith(figure) for n in names), figure
    assert "Study 3, CIFAR-10 DDPM training optimisations" in page  # a caption, rendered
    assert "FLUX.1-schnell LoRA across hardware" in page and "DDPM training optimisations" in page  # categories


def _chromium():
    try:
        browser.find_browser()
    except browser.BrowserError:
        pytest.skip("no chromium on this machine (.ci/run installs it)")


def test_the_report_passes_the_browser_check(results, tmp_path, monkeypatch):
    _chromium()
    page = build_report(results, tmp_path / "report.html", hardware=HARDWARE)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    verdict = browser.check(page, tmp_path / "shot.png")
    assert list(scratch.iterdir()) == []  # the browser's profiles and the probe's copy are gone
    assert verdict.failures == []
    assert verdict.images >= 20 and verdict.viewport == browser.WIDTH
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".shot.png.*"))  # written under a temporary .png name, then renamed


def test_the_browser_check_catches_what_a_reader_would_see(tmp_path):
    _chromium()
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                   "<img alt='gone' src='data:image/png;base64,AAAA'>"
                   "<table style='width:2400px'><tr><td>wide</td></tr></table>"
                   "<script>console.error('boom')</script></body></html>")
    failures = browser.check(bad).failures
    assert any("console.error: boom" in f for f in failures)
    assert any("broken image: gone" in f for f in failures)
    assert any("<table> reaches" in f for f in failures)
    assert any("scrolls sideways" in f for f in failures)
