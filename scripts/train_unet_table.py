#!/usr/bin/env python
"""The U-Net training study's table (one row per run) and loss-curve figure, from the run directories.

  python scripts/train_unet_table.py --runs results/train/unet/local/fp32-g1 results/train/unet/local/bf16-g1 \\
      --table results/bench/train_unet.csv --loss-figure results/bench/train_unet_loss.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="training run directories")
    parser.add_argument("--table", type=Path, required=True, help="CSV to write")
    parser.add_argument("--loss-figure", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()

    from diffscale.train.summary import write_study

    print(f"wrote {write_study(args.runs, args.table, args.loss_figure)} and {args.loss_figure}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
