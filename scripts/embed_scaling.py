#!/usr/bin/env python
"""Build the embedding study's scaling table and figure from the runs' timing.json files.

  python scripts/embed_scaling.py --timings results/embed/*/*/timing.json \\
      --out results/bench/embed_scaling.csv --figure results/bench/embed_scaling.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--timings", nargs="+", required=True, type=Path,
                        help="the runs' timing.json files (embed.py writes one per run)")
    parser.add_argument("--out", required=True, type=Path, help="the scaling table (CSV)")
    parser.add_argument("--figure", required=True, type=Path, help="its speedup figure (PNG)")
    args = parser.parse_args()

    from diffscale import atomic
    from diffscale.embed import scaling

    rows = scaling.scaling_rows(scaling.load_timings(args.timings))
    with atomic.all_or_none([args.out, args.figure]):  # the table and its figure: both or neither
        scaling.write_table(rows, args.out)
        scaling.write_figure(rows, args.figure)
    for r in rows:
        print(f"{r['modality']:6} {r['backend']:15} {r['policy']:7} w{r['workers']}: {r['wall_s']:.2f} s "
              f"(start-up {r['startup_s']:.2f} s), speedup {r['speedup']:.2f}, efficiency {r['efficiency']:.2f}, "
              f"steady speedup {r['steady_speedup']:.2f}, {r['processes']} x {r['threads_per_worker']} threads"
              f"{' OVERSUBSCRIBED' if r['oversubscribed'] else ''}, {r['bytes_per_item']:.0f} B/item")
    for line in scaling.findings(rows):
        print(f"finding: {line}")
    print(f"wrote {args.out} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
