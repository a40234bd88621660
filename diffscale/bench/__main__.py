"""Entry point: python -m diffscale.bench <stage> [--out-dir DIR] [stage options] (--out-dir may
also come before <stage>).

A stage may call `args.save_partial(rows)` whenever its rows so far form a consistent table: they
are written as the final table would be (the JSON without provenance, marked `"complete": false`),
so a bench killed by a time limit (a lent GPU's, a SLURM job's) still leaves the runs it finished."""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import sys
from pathlib import Path

from diffscale import atomic, hardware, provenance
from diffscale.bench import STAGES
from diffscale.cli import OneLineParser, run_cli
from diffscale.errors import ConfigError

OUT_DIR_HELP = "where <stage>.csv and <stage>.json go (default: results/benchmarks)"
# options a stage cannot run with below 1, wherever a stage has them
# count flags of the stages (argparse dests; a list flag is checked item by item)
POSITIVE = ("batch", "text_batch", "repeats", "steps", "resolution", "images", "cpus", "sizes", "gpus", "rank",
            "naive_max_cpus", "image_size", "shard_size", "text_length", "log_every", "inference_steps", "memory_mb",
            "ema_every", "loaders", "batches", "latent_size", "rounds")
NON_NEGATIVE = ("image_files", "warmup", "workers", "loader_workers")  # 0: none
RESOLUTION_STEP = 16  # px: latents are 1/8 of the image, and FLUX packs them 2x2


def write_results(rows: list[dict], out_dir: Path, stage: str, argv: list[str],
                  complete: bool = True) -> tuple[Path, Path]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic.write_text(out_dir / f"{stage}.csv", buf.getvalue())
    json_path = out_dir / f"{stage}.json"
    if complete:
        provenance.write_run_json(json_path, stage=stage, argv=argv, complete=True, rows=rows)
    else:  # provenance (library versions, devices) once, at the end: it would initialise CUDA in this process
        atomic.write_json(json_path, {"stage": stage, "argv": argv, "complete": False, "rows": rows})
    return csv_path, json_path


def check_arguments(args: argparse.Namespace, module) -> None:
    """Every stage's bad argument is one line naming the flag, before anything runs: the positive
    counts and the device the stages share here, then the stage's own `check_arguments(args)`."""
    where = f"bench {args.stage}"
    for dests, least, expected in ((POSITIVE, 1, "a positive integer"), (NON_NEGATIVE, 0, "a whole number, 0 or more")):
        for dest in dests:
            value = getattr(args, dest, None)
            for item in value if isinstance(value, list) else [value]:
                if item is not None and item < least:
                    raise ConfigError(f"{where}: --{dest.replace('_', '-')}: expected {expected}, not {item}")
    resolution = getattr(args, "resolution", None)
    if resolution is not None and resolution % RESOLUTION_STEP:
        raise ConfigError(f"{where}: --resolution: expected a multiple of {RESOLUTION_STEP} px (latents are 1/8 "
                          f"of the image, packed 2x2 for FLUX), not {resolution}")
    if getattr(args, "device", None) is not None:
        hardware.check_device(args.device, f"{where}: --device")
    own = getattr(module, "check_arguments", None)
    if own is not None:
        own(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineParser(prog="python -m diffscale.bench", description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=Path("results/benchmarks"), help=OUT_DIR_HELP)
    sub = parser.add_subparsers(dest="stage", required=True)
    modules = {}
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        stage_parser = sub.add_parser(name, help=(module.__doc__ or "").splitlines()[0])
        # also after the stage; SUPPRESS: absent there, the one before the stage (or its default) stands
        stage_parser.add_argument("--out-dir", type=Path, default=argparse.SUPPRESS, help=OUT_DIR_HELP)
        module.add_arguments(stage_parser)
    args = parser.parse_args(argv)
    check_arguments(args, modules[args.stage])
    args.save_partial = lambda rows: write_results(rows, args.out_dir, args.stage, argv, complete=False)
    rows = modules[args.stage].run(args)
    csv_path, json_path = write_results(rows, args.out_dir, args.stage, argv)
    for row in rows:
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"wrote {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
