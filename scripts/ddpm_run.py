#!/usr/bin/env python
"""One job of the DDPM training-optimisation study (study 3): a measured window of the loop.

As the workflow runs it (the run config is JSON built by diffscale.ddpm.sweeps.run_config; its
`stage` is batch, amp, workers, compile, profile or peer):
  python scripts/ddpm_run.py --run-config '{...}' --cache results/ddpm/data/cifar-uint8.npy \\
      --out results/ddpm/amp/local/bf16
By hand, from a config file:
  python scripts/ddpm_run.py --config config.yaml --stage amp --hw local --set precision=bf16 \\
      --cache results/ddpm/data/cifar-uint8.npy --out /tmp/ddpm-bf16
Writes run.json (provenance, results, table rows), row.csv and loss.csv into --out; the profile
stage adds ops.csv and trace.json.gz, the peer stage loss_peer.csv.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale import experiments  # noqa: E402
from diffscale.cli import argument_parser, json_flag, needs, only_with, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-config", help="the run config as JSON (what the workflow passes)")
    source.add_argument("--config", type=Path, help="a pipeline config file; needs --stage and --hw")
    parser.add_argument("--stage", choices=experiments.DDPM_TABLES, help="the sweep the run belongs to (with --config)")
    parser.add_argument("--hw", help="hardware key (with --config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="variant coordinate: batch, gpus, precision, workers, compile (with --config)")
    parser.add_argument("--cache", type=Path, required=True, help="the uint8 CIFAR array (scripts/ddpm_data.py)")
    parser.add_argument("--source", type=Path,
                        help="the image folder, only under ddpm.decode_each_step (a run that reads --cache refuses it)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    args = parser.parse_args()

    from diffscale.config import load_config
    from diffscale.ddpm.sweeps import check_run_config, execute, parse_set, run_config

    if args.config:
        needs("--config", {"--stage": args.stage, "--hw": args.hw})
        rc = run_config(load_config(args.config), args.stage, args.hw, **parse_set(args.set))
    else:
        only_with("--config", {"--stage": args.stage, "--hw": args.hw, "--set": args.set}, "--run-config")
        rc = check_run_config(json_flag("--run-config", args.run_config))
    execute(rc, args.cache, args.out, args.source)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
