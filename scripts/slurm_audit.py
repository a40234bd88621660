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
      the partition and ended; the embeddings equal the reference run's bitwise, item by item
--records: sacct (cluster with accounting) or scontrol (without; finished jobs are kept MinJobAge).
Exit 1 with one line per problem.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="audit a run's jobs")
    run.add_argument("--log", required=True, type=Path, help="Snakemake's output of the run")
    run.add_argument("--configfile", required=True, nargs="+", help="the run's config files, in order")
    run.add_argument("--results", type=Path, help="check the run.json files under this folder")
    run.add_argument("--save-ids", type=Path, help="write every SLURM job id known now (for `rerun`)")
    rerun = sub.add_parser("rerun", help="check that a second run submitted nothing")
    rerun.add_argument("--log", required=True, type=Path, help="Snakemake's output of the second run")
    rerun.add_argument("--known-ids", required=True, type=Path, help="ids saved by `run --save-ids`")
    dask = sub.add_parser("dask", help="audit the worker jobs of a dask-on-SLURM embedding run")
    dask.add_argument("--run-dir", required=True, type=Path, help="the run's directory (timing.json, index.json)")
    dask.add_argument("--partition", required=True, help="the partition its worker jobs must have run in")
    dask.add_argument("--reference", type=Path,
                      help="a run whose embeddings it must equal bitwise, item by item (serial-pinned-w1)")
    for p in (run, rerun, dask):
        p.add_argument("--records", choices=["sacct", "scontrol"], default="sacct",
                       help="sacct (a cluster with accounting) or scontrol (without; default sacct)")
    args = parser.parse_args()

    from diffscale import slurm_audit as audit

    if args.what == "dask":
        verdict = audit.audit_dask_verdict(args.run_dir, args.partition, args.records, args.reference)
    elif args.what == "run":
        verdict = audit.audit_run_log(args.log, args.configfile, args.records, args.results, args.save_ids)
    else:
        verdict = audit.audit_rerun_log(args.log, args.known_ids, args.records)
    for line in verdict.lines:
        print(line)
    for problem in verdict.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if verdict.problems:
        return 1
    print(verdict.ok)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
