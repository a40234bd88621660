#!/usr/bin/env python
"""One table of the DDPM study (results/bench/ddpm_<stage>.csv) from its run directories.

  python scripts/ddpm_table.py --stage compile --runs results/ddpm/batch/local/b4-g1 \\
      results/ddpm/compile/local/default --out results/bench/ddpm_compile.csv --train-steps 700000
(the eager reference of every sweep is the baseline point, which the batch sweep runs once)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale import experiments  # noqa: E402
from diffscale.cli import argument_parser, positive_int, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--stage", required=True, choices=experiments.DDPM_TABLES,
                        help="the table to build: the sweep whose runs --runs names")
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run directories")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    parser.add_argument("--train-steps", type=positive_int,
                        help="length of a real training run, for compile's break-even (default: the config's "
                             "default ddpm.train_steps)")
    parser.add_argument("--inception-weights", default="", help="ddpm.fid.inception_weights (FID's status)")
    args = parser.parse_args()

    from diffscale.ddpm.sweeps import write_table

    path = write_table(args.stage, args.runs, args.out, args.train_steps, args.inception_weights or None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
