"""The report's two CLIs: a user's mistake is one line on stderr and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


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
    assert "Not run: " in (tmp_path / "r.html").read_text()


def test_browser_check_of_a_missing_report_is_one_line(repo_root, tmp_path):
    proc = run(repo_root, "scripts/check_report_browser.py", str(tmp_path / "none.html"))
    assert proc.returncode == 2
    assert "none.html: no such report" in proc.stderr
    (tmp_path / "r.html").write_text("<html><head></head><body>ok</body></html>")
    for flags, message in ((["--width", "0"], "--width: 0 px is narrower than Chromium's smallest window, 500 px"),
                           (["--screenshot", str(tmp_path / "s.txt")], f"--screenshot {tmp_path / 's.txt'}: expected "
                                                                        "a .png file path"),
                           (["--screenshot", str(tmp_path)], f"--screenshot {tmp_path}: expected a .png file path")):
        proc = run(repo_root, "scripts/check_report_browser.py", str(tmp_path / "r.html"), *flags)
        assert (proc.returncode, proc.stderr) == (2, f"error: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


@pytest.mark.parametrize("table, message", [
    ("[1]", "error: --hardware: expected a mapping of hardware keys to entries, not list"),
    ('{"local": 5}', "error: --hardware: hardware.local: 5 is not of type 'object'"),
    ('{"local": {"price_per_hour": "x"}}', "error: --hardware: hardware.local.price_per_hour: 'x' is not of type 'number'"),
    ('{"local": {"device": "cpu"}}', "error: --hardware: hardware.local: 'partition' is a required property"),
])
def test_bad_hardware_table_is_one_line(repo_root, tmp_path, table, message):
    proc = run(repo_root, "scripts/report.py", "--results", str(tmp_path), "--out", str(tmp_path / "r.html"),
               "--hardware", table)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "r.html").exists()


def test_missing_results_folder_is_one_line(repo_root, tmp_path):
    proc = run(repo_root, "scripts/report.py", "--results", str(tmp_path / "typo"), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --results: {tmp_path / 'typo'}: no such folder (expected the results folder of a workflow run)"]
    assert not (tmp_path / "r.html").exists()


def test_prices_of_a_bad_hardware_table_name_their_source():
    from diffscale.errors import ConfigError
    from diffscale.report.cost import Prices

    with pytest.raises(ConfigError) as err:
        Prices({"local": {"device": "cpu"}}, "config.yaml")
    assert str(err.value) == "config.yaml: hardware.local: 'partition' is a required property"
