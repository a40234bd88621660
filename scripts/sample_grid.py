#!/usr/bin/env python
"""One image grid of generate.py outputs: a row per run, a column per prompt.

  python scripts/sample_grid.py --samples results/train/samples/local/fp32-g1 results/train/samples/local/bf16-g1 \\
      --out results/bench/train_unet_samples.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--samples", nargs="+", type=Path, required=True, help="generate.py output directories")
    parser.add_argument("--labels", nargs="+", help="row labels (default: <hw> <run> from the paths)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()

    from diffscale.errors import ConfigError
    from diffscale.train.summary import write_sample_grid

    if args.labels and len(args.labels) != len(args.samples):
        raise ConfigError(f"--labels: {len(args.labels)} labels for {len(args.samples)} sample directories")
    print(f"wrote {write_sample_grid(args.samples, args.out, args.labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
