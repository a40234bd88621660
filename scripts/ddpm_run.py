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

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale import experiments  # noqa: E402
from diffscale.cli import json_flag, needs, run_cli  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-config", help="the run config as JSON (what the workflow passes)")
    source.add_argument("--config", type=Path, help="a pipeline config file; needs --stage and --hw")
    parser.add_argument("--stage", choices=experiments.DDPM_TABLES)
    parser.add_argument("--hw", help="hardware key (with --config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="variant coordinate: batch, gpus, precision, workers, compile (with --config)")
    parser.add_argument("--cache", type=Path, required=True, help="the uint8 CIFAR array (scripts/ddpm_data.py)")
    parser.add_argument("--source", type=Path, help="the image folder (only for ddpm.decode_each_step)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    args = parser.parse_args()

    from diffscale.config import load_config
    from diffscale.ddpm.sweeps import execute, run_config
    from diffscale.errors import ConfigError

    if args.config:
        needs("--config", {"--stage": args.stage, "--hw": args.hw})
        pairs = [item.split("=", 1) for item in args.set]
        bad = [item for item, p in zip(args.set, pairs) if len(p) != 2 or not p[0]]
        if bad:
            raise ConfigError(f"--set: expected KEY=VALUE, got {bad[0]!r}")
        rc = run_config(load_config(args.config), args.stage, args.hw, **dict(pairs))
    else:
        if args.stage or args.hw or args.set:
            raise ConfigError("--stage, --hw and --set go with --config (a --run-config already says them)")
        rc = check_run_config(json_flag("--run-config", args.run_config))
    execute(rc, args.cache, args.out, args.source)
    return 0


def check_run_config(rc, source: str = "--run-config") -> dict:
    """A run config read from JSON has what a run reads (diffscale.ddpm.sweeps.run_config builds
    it), or one ConfigError naming the missing or wrong key."""
    from dataclasses import fields

    from diffscale import experiments, vocab
    from diffscale.ddpm.sweeps import check_variant, settings_of
    from diffscale.errors import ConfigError

    if not isinstance(rc, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    for key, kind in (("stage", str), ("seed", int), ("hw", str), ("hardware", dict), ("model", dict),
                      ("ddpm", dict), ("variant", dict)):
        if key not in rc:
            raise ConfigError(f"{source}: missing key {key!r}")
        if not isinstance(rc[key], kind):
            raise ConfigError(f"{source}: {key}: expected a JSON {'object' if kind is dict else kind.__name__}")
    vocab.hardware_entry(rc, rc["hw"], f"{source}: hw")
    missing = [k for k in settings_of(rc["stage"]) if k not in rc["ddpm"]]
    if missing:
        raise ConfigError(f"{source}: ddpm.{missing[0]} is missing")
    coords = [f.name for f in fields(experiments.DdpmRun) if f.name not in ("stage", "hw")]
    missing = [k for k in coords if k not in rc["variant"]]
    if missing:
        raise ConfigError(f"{source}: variant.{missing[0]} is missing")
    rc["variant"].update(check_variant(rc["variant"], coords, f"{source}: variant"))
    return rc


if __name__ == "__main__":
    sys.exit(run_cli(main))
