#!/usr/bin/env python
"""Write the table of configured models (role, spec, class, parameter count) as CSV.

  python scripts/model_inventory.py --models '{"vae": {"random": "tiny"}, ...}' --out models.csv
  python scripts/model_inventory.py --config config.yaml --out models.csv
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, json_flag, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", help="the config's models: section as JSON")
    source.add_argument("--config", type=Path, help="a config file (its models: section is used)")
    parser.add_argument("--out", required=True, type=Path, help="the CSV to write")
    args = parser.parse_args()

    from diffscale import models
    from diffscale.config import load_config

    if args.config:
        rows = models.write_inventory(load_config(args.config)["models"], args.out)
    else:
        rows = models.write_inventory(json_flag("--models", args.models), args.out, source="--models")
    for row in rows:
        print(f"{row['role']:<18} {row['spec']:<48} {row['kind']:<10} {row['class']:<28} {row['params']:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
