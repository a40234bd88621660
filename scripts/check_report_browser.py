#!/usr/bin/env python
"""Open the report in headless Chromium at 1400 px: fail on console errors, broken or external
images, or content wider than the window; keep a full-page screenshot.

  python scripts/check_report_browser.py results/report.html --screenshot results/report-1400.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("report", type=Path, nargs="?", default=Path("results/report.html"),
                        help="the report to open (default results/report.html)")
    parser.add_argument("--screenshot", type=Path, default=Path("results/report-1400.png"),
                        help="the full-page PNG to write (default results/report-1400.png)")
    parser.add_argument("--width", type=int, default=1400,
                        help="window width in px, at least 500, Chromium's smallest (default 1400)")
    args = parser.parse_args()

    from diffscale.errors import ConfigError
    from diffscale.report.browser import MIN_WIDTH, check

    if args.width < MIN_WIDTH:
        raise ConfigError(f"--width: {args.width} px is narrower than Chromium's smallest window, {MIN_WIDTH} px")

    verdict = check(args.report, args.screenshot, args.width)
    print(f"{args.report}: {verdict.images} images, {verdict.height} px tall at {verdict.viewport} px; "
          f"screenshot {args.screenshot}")
    for failure in verdict.failures:
        print(f"FAIL {failure}")
    return 1 if verdict.failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
