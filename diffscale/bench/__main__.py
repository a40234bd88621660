"""Entry point: python -m diffscale.bench <stage> [--out-dir DIR] [stage options].

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

from diffscale import atomic, provenance
from diffscale.bench import STAGES
from diffscale.cli import run_cli


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m diffscale.bench", description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=Path("results/benchmarks"),
                        help="where <stage>.csv and <stage>.json go (default: results/benchmarks)")
    sub = parser.add_subparsers(dest="stage", required=True)
    modules = {}
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").splitlines()[0]))
    args = parser.parse_args(argv)
    args.save_partial = lambda rows: write_results(rows, args.out_dir, args.stage, argv, complete=False)
    rows = modules[args.stage].run(args)
    csv_path, json_path = write_results(rows, args.out_dir, args.stage, argv)
    for row in rows:
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"wrote {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
