#!/usr/bin/env python
"""Write the table of configured models (role, spec, class, parameter count) as CSV.

  python scripts/model_inventory.py --models '{"vae": {"random": "tiny"}, ...}' --out models.csv
  python scripts/model_inventory.py --config config.yaml --out models.csv
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import json_flag, run_cli  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", help="the config's models: section as JSON")
    source.add_argument("--config", type=Path, help="a config file (its models: section is used)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    import pandas as pd

    from diffscale import atomic, models
    from diffscale.config import load_config
    from diffscale.errors import ConfigError

    if args.config:
        models_cfg = load_config(args.config)["models"]
    else:
        models_cfg = json_flag("--models", args.models)
        if not isinstance(models_cfg, dict):
            raise ConfigError(f"--models: expected a JSON object of role: spec (the config's models: section), "
                              f"not {type(models_cfg).__name__}")
    table = pd.DataFrame(models.inventory(models_cfg))
    with atomic.atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
