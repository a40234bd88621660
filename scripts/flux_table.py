#!/usr/bin/env python
"""The FLUX study's tables and sample grid, from the training and inference run folders (study 2).

  python scripts/flux_table.py --runs results/flux/local/g1-s4 results/flux/local/g1-s8 \\
      --infer results/flux/infer/local --out-dir results/bench --grid results/bench/flux_samples.png

Writes flux_train.csv, flux_loss.csv, flux_quality.csv and flux_infer.csv into --out-dir.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="training run folders")
    parser.add_argument("--infer", nargs="*", type=Path, default=[], help="inference folders (one per hardware)")
    parser.add_argument("--out-dir", type=Path, required=True, help="where the flux_*.csv tables go")
    parser.add_argument("--grid", type=Path, required=True, help="sample grid PNG")
    args = parser.parse_args()

    from diffscale.flux.table import write_tables

    for path in write_tables(args.runs, args.infer, args.out_dir, args.grid):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
