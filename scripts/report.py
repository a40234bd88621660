#!/usr/bin/env python
"""Build the one-page HTML report from results/bench/*.csv, figures and run.json files.

  python scripts/report.py --results results --out results/report.html
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import run_cli  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=Path("results/report.html"))
    args = parser.parse_args()

    from diffscale.report.html import build_report

    print(f"wrote {build_report(args.results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
