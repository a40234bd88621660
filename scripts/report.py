#!/usr/bin/env python
"""Build the one-page HTML report from results/bench/*.csv, figures and run.json files.

  python scripts/report.py --results results --out results/report.html \
      [--hardware '<config hardware table as JSON>'] [--price-source config.yaml] [--demo] \
      [--figures results/report]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, json_flag, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"), help="a workflow run's results folder")
    parser.add_argument("--out", type=Path, default=Path("results/report.html"), help="the page to write")
    parser.add_argument("--hardware", default="{}", help="the config's hardware table as JSON (prices for cost)")
    parser.add_argument("--price-source", default="the config", help="where the prices come from, as shown")
    parser.add_argument("--demo", action="store_true", help="the results come from the demo (synthetic data)")
    parser.add_argument("--figures", type=Path, help="also write the figures here, one folder per study")
    parser.add_argument("--unfinished", nargs="*", default=[],
                        help="run folders the config asks for that have not finished (a partial report names them)")
    args = parser.parse_args()

    from diffscale import hardware
    from diffscale.errors import DataError
    from diffscale.report.html import build_report

    table = json_flag("--hardware", args.hardware)
    hardware.check_table(table, "--hardware")
    if not args.results.is_dir():
        raise DataError(f"--results: {args.results}: no such folder (expected the results folder of a workflow run)")
    path = build_report(args.results, args.out, hardware=table,
                        price_source=args.price_source, demo=args.demo, figures_dir=args.figures,
                        unfinished=args.unfinished)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
