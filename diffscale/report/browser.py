"""Open the report in a real headless Chromium and check what a reader would see.

`check(report, screenshot)` loads a copy of the page with a small probe injected first in <head>
(it records console errors, script errors and failed resources, then, after load, broken or
external images and every element that reaches past the viewport, with the <details> closed and
open), reads the probe's verdict from `--dump-dom`, and takes a full-page screenshot of the
unmodified page at the same width. Elements inside a `.scroll` box (the full tables) may be wider:
they scroll in their box, the page does not.

Needs the `chromium` binary (Debian's package; .ci/run installs it when absent).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from diffscale import atomic
from diffscale.errors import UserError
from diffscale.io import read_text

WIDTH = 1400
MIN_WIDTH = 500  # Chromium's smallest window: a narrower --window-size runs at 500 px all the same
MAX_HEIGHT = 16000
BINARIES = ("chromium", "chromium-browser", "google-chrome")
PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  if (t && t !== window && t.tagName) {
    window.__problems.push('failed to load ' + t.tagName.toLowerCase() + ' ' + String(t.src || t.href || '').slice(0, 80));
  } else {
    window.__problems.push('script error: ' + e.message);
  }
}, true);
window.addEventListener('unhandledrejection', function (e) { window.__problems.push('unhandled rejection: ' + e.reason); });
(function () {
  var original = console.error.bind(console);
  console.error = function () {
    window.__problems.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    original.apply(null, arguments);
  };
})();
window.addEventListener('load', function () { setTimeout(function () {
  var width = document.documentElement.clientWidth;
  var out = {viewport: width, problems: window.__problems, broken: [], external: [], wide: [], scroll_width: 0, images: 0};
  Array.prototype.forEach.call(document.images, function (img) {
    out.images += 1;
    if (!img.complete || img.naturalWidth === 0) out.broken.push(img.alt || String(img.src).slice(0, 60));
    if (String(img.getAttribute('src') || '').indexOf('data:') !== 0) out.external.push(String(img.getAttribute('src')).slice(0, 80));
  });
  function measure(state) {
    out.scroll_width = Math.max(out.scroll_width, document.documentElement.scrollWidth);
    Array.prototype.forEach.call(document.body.querySelectorAll('*'), function (el) {
      if (el.closest('.scroll')) return;
      var r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > width + 1) {
        out.wide.push(state + ': <' + el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                      (typeof el.className === 'string' && el.className ? '.' + el.className : '') + '> reaches ' + Math.round(r.right) + ' px');
      }
    });
  }
  measure('details closed');
  Array.prototype.forEach.call(document.querySelectorAll('details'), function (d) { d.open = true; });
  measure('details open');
  Array.prototype.forEach.call(document.querySelectorAll('details'), function (d) { d.open = false; });
  out.height = document.documentElement.scrollHeight;
  var pre = document.createElement('pre');
  pre.id = '__report_check__';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 200); });
</script>"""


class BrowserError(UserError):
    """No browser, or the browser could not load the page."""


@dataclass
class Verdict:
    viewport: int
    images: int
    height: int
    problems: list[str] = field(default_factory=list)  # console errors, script errors, failed loads
    broken: list[str] = field(default_factory=list)  # images that did not decode
    external: list[str] = field(default_factory=list)  # images not embedded as data URIs
    wide: list[str] = field(default_factory=list)  # elements reaching past the viewport
    scroll_width: int = 0

    @property
    def failures(self) -> list[str]:
        found = [f"console/script: {p}" for p in self.problems]
        found += [f"broken image: {b}" for b in self.broken]
        found += [f"external image: {e}" for e in self.external]
        found += [f"wider than the {self.viewport} px viewport: {w}" for w in self.wide[:20]]
        if self.scroll_width > self.viewport + 1:
            found.append(f"page scrolls sideways: {self.scroll_width} px wide in a {self.viewport} px viewport")
        return found


def find_browser() -> str:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("no chromium found on PATH (Debian: apt-get install -y chromium)")


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    """Headless Chromium with `args`, in a fresh profile that is removed afterwards (2–3 MB a run)."""
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        base = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}"]
        return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)


def probe(report: Path, width: int = WIDTH) -> Verdict:
    page = read_text(report, what="report")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "probe.html"
        copy.write_text(page.replace("<head>", "<head>" + PROBE, 1) if "<head>" in page else PROBE + page)
        proc = _run([f"--window-size={width},1000", "--virtual-time-budget=15000", "--dump-dom", copy.as_uri()])
    match = re.search(r'<pre id="__report_check__">(.*?)</pre>', proc.stdout, re.S)
    if not match:
        raise BrowserError(f"{report}: the browser gave no verdict (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return Verdict(**json.loads(html.unescape(match.group(1))))


def screenshot(report: Path, out: Path, height: int, width: int = WIDTH) -> Path:
    """A full-page PNG of `report` at `out`, written whole (a temporary name, then renamed)."""
    height = max(600, min(height, MAX_HEIGHT))
    with atomic.atomic_path(out, suffix=".png") as tmp:  # Chromium picks the format by the extension
        proc = _run([f"--window-size={width},{height}", "--virtual-time-budget=15000",
                     f"--screenshot={tmp.resolve()}", report.resolve().as_uri()])
        if not tmp.is_file():
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1][-200:]
            raise BrowserError(f"--screenshot {out}: Chromium wrote none (exit {proc.returncode}: {last})")
    return out


def check(report: str | Path, shot: str | Path | None = None, width: int = WIDTH) -> Verdict:
    """The browser's verdict on `report`; with `shot`, a full-page screenshot there."""
    report = Path(report)
    if not report.is_file():
        raise BrowserError(f"{report}: no such report")
    if shot is not None and (Path(shot).suffix.lower() != ".png" or Path(shot).is_dir()):
        raise BrowserError(f"--screenshot {shot}: expected a .png file path")
    verdict = probe(report, width)
    if shot is not None:
        screenshot(report, Path(shot), verdict.height, width)
    return verdict
