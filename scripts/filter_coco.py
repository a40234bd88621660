#!/usr/bin/env python
"""Keep the people-centric images of a COCO captions file and profile them.

  python scripts/filter_coco.py --captions captions_train2014.json --images train2014 --out-dir DIR
  python scripts/filter_coco.py --captions captions_val2017.json --out-dir DIR      # labels only

Writes DIR/manifest.parquet (kept images), labels_all.parquet (every image), demographics.csv,
skipped.csv and run.json, and coco_filter.csv with its figures in --bench-dir (default DIR).
The people-centric rule and extra word lists come from --people (the config's data.people slice
as JSON) or --config (a diffscale config file); without either, the schema's defaults.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, json_flag, positive_int, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--captions", required=True, type=Path, help="COCO captions json")
    parser.add_argument("--images", default="", help="image folder ('' or omitted: label captions only)")
    parser.add_argument("--instances", default="", help="COCO instances json: check labels against person boxes")
    parser.add_argument("--out-dir", required=True, type=Path,
                        help="where the manifest, labels, demographics, skip list and run.json go")
    parser.add_argument("--bench-dir", type=Path, help="where coco_filter.csv and its figures go (default --out-dir)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--people", default="", help="the data.people config slice as JSON")
    source.add_argument("--config", type=Path, help="a diffscale config file to take data.people from")
    parser.add_argument("--threads", type=positive_int, default=8, help="threads checking image files (default 8)")
    args = parser.parse_args()

    from diffscale.config import load_config
    from diffscale.data.coco import build_manifest

    if args.config:
        people = load_config(args.config)["data"]["people"]
    elif args.people:
        people = json_flag("--people", args.people)
    else:
        people = {}
    summary = build_manifest(args.captions, args.out_dir, images=args.images or None,
                             instances=args.instances or None, people_cfg=people,
                             bench_dir=args.bench_dir, threads=args.threads)
    steps = ", ".join(f"{name}: {count}" for name, count in summary["steps"].items())
    print(f"{summary['images']} images, {summary['captions']} captions "
          f"({summary['captions_per_s']:,.0f} captions/s labelled); {steps}")
    print(f"wrote {args.out_dir}/manifest.parquet ({summary['kept']} images) and the tables beside it")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
