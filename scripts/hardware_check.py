#!/usr/bin/env python
"""Preflight check of one hardware key: resolve the device placement, run a kernel on every
device, record where it ran (SLURM job, partition, node, GPUs, PyTorch build) in run.json.

  python scripts/hardware_check.py --hw a100 --gpus 4 --hardware '{"partition": "a100", "device": "cuda", ...}' \\
      --out results/hardware/check/a100/g4/run.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, at_least_one, json_flag, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--hw", required=True, help="hardware key")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs (cuda) or processes (cpu) to check")
    parser.add_argument("--hardware", required=True, help="the key's hardware entry as JSON")
    parser.add_argument("--out", required=True, type=Path, help="the run.json to write (placement, devices, SLURM job)")
    args = parser.parse_args()

    from diffscale import hardware, provenance

    entry = json_flag("--hardware", args.hardware)
    hardware.check_entry(entry, args.hw, source="--hardware")
    at_least_one("--gpus", args.gpus, "GPUs on cuda, processes on cpu")
    cfg = {"hardware": {args.hw: entry}}
    record = hardware.check(cfg, args.hw, args.gpus)
    provenance.write_run_json(args.out, config_slice=cfg, hw=args.hw, check=record)
    print(f"hardware.{args.hw}: {record['placement']} on {[d['device'] for d in record['devices']]}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
