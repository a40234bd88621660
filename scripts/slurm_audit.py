#!/usr/bin/env python
"""Audit a workflow run through the SLURM executor from SLURM's own records.

  python scripts/slurm_audit.py run --log run.log --configfile config.yaml config/slurm-test.yaml \\
      --records sacct --results results --save-ids slurm-ids.txt
      every job asked for what the hardware table says, and SLURM ran it there (partition, node,
      GPUs by model, COMPLETED); each partition of a hardware key in use got a job; run.json agrees
  python scripts/slurm_audit.py rerun --log run2.log --known-ids slurm-ids.txt --records sacct
      a second run submitted nothing
  python scripts/slurm_audit.py dask --run-dir results/embed/images/dask-pinned-w2 --partition cpu \
      --reference results/embed/images/serial-pinned-w1 --records sacct
      every worker of a dask-on-SLURM embedding run reported from its own SLURM job, which ran in
      the partition and ended; the shards equal the reference run's bitwise
--records: sacct (cluster with accounting) or scontrol (without; finished jobs are kept MinJobAge).
Exit 1 with one line per problem.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import run_cli  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="audit a run's jobs")
    run.add_argument("--log", required=True, type=Path, help="Snakemake's output of the run")
    run.add_argument("--configfile", required=True, nargs="+", help="the run's config files, in order")
    run.add_argument("--results", type=Path, help="check the run.json files under this folder")
    run.add_argument("--save-ids", type=Path, help="write every SLURM job id known now (for `rerun`)")
    rerun = sub.add_parser("rerun", help="check that a second run submitted nothing")
    rerun.add_argument("--log", required=True, type=Path)
    rerun.add_argument("--known-ids", required=True, type=Path, help="ids saved by `run --save-ids`")
    dask = sub.add_parser("dask", help="audit the worker jobs of a dask-on-SLURM embedding run")
    dask.add_argument("--run-dir", required=True, type=Path, help="the run's directory (timing.json, index.json)")
    dask.add_argument("--partition", required=True, help="the partition its worker jobs must have run in")
    dask.add_argument("--reference", type=Path, help="a run whose shards it must equal bitwise (serial-pinned-w1)")
    for p in (run, rerun, dask):
        p.add_argument("--records", choices=["sacct", "scontrol"], default="sacct")
    args = parser.parse_args()

    from diffscale import slurm_audit as audit

    if args.what == "dask":
        result = audit.audit_dask_run(args.run_dir, args.partition, args.records, args.reference)
        for row in result.rows:
            print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, (10, 8, 10, 12, 10))))
        problems = result.problems
        ok = (f"{len(result.rows)} dask worker jobs ran in partition {args.partition} and ended"
              + ("; the shards equal the reference run's bitwise" if args.reference else ""))
    elif args.what == "run":
        text = args.log.read_text()
        cfg = audit.merged_config(args.configfile)
        ids = [i for job in audit.parse_run_log(text) for i in job.slurm_ids]
        result = audit.audit_run(text, cfg, audit.slurm_records(args.records, ids or None),
                                 audit.partition_nodes(), args.results)
        for row in result.rows:
            print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, (44, 6, 6, 10, 10))))
        problems = result.problems
        if args.save_ids:
            args.save_ids.write_text("\n".join(sorted(audit.slurm_records(args.records), key=int)) + "\n")
        ok = f"{len(result.rows)} SLURM jobs ran where the hardware table says"
    else:
        known = set(args.known_ids.read_text().split())
        problems = audit.idle_rerun_problems(args.log.read_text(), known, audit.slurm_records(args.records))
        ok = "the second run submitted nothing"
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(ok)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
