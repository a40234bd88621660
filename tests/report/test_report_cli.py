"""The report's two CLIs: a user's mistake is one line on stderr and exit 2."""

from __future__ import annotations

import subprocess
import sys


def run(root, *args):
    return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, timeout=120)


def test_bad_hardware_json_is_one_line(repo_root, tmp_path):
    proc = run(repo_root, "scripts/report.py", "--results", str(tmp_path), "--out", str(tmp_path / "r.html"),
               "--hardware", "{oops")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "--hardware: not valid JSON" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_of_empty_results_builds(repo_root, tmp_path):
    (tmp_path / "results").mkdir()
    proc = run(repo_root, "scripts/report.py", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    assert "has not run" in (tmp_path / "r.html").read_text()


def test_browser_check_of_a_missing_report_is_one_line(repo_root, tmp_path):
    proc = run(repo_root, "scripts/check_report_browser.py", str(tmp_path / "none.html"))
    assert proc.returncode == 2
    assert "none.html: no such report" in proc.stderr
