#!/usr/bin/env python
"""Make the embedded demo's synthetic data, or summarise the inputs the studies will read.

  python scripts/make_demo_data.py coco --captions C.json --images DIR [--n 24] [--seed 0]
  python scripts/make_demo_data.py cifar --out DIR [--per-class 6]
  python scripts/make_demo_data.py subject --out DIR [--n 6]
  python scripts/make_demo_data.py summary --captions C.json --images DIR --cifar DIR --subject DIR --out S.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, fraction, out_folder, positive_int, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("coco", help="COCO-format captions json + JPEG images")
    p.add_argument("--captions", required=True, type=Path, help="the captions json to write")
    p.add_argument("--images", required=True, type=Path, help=out_folder("demo COCO images"))
    p.add_argument("--n", type=positive_int, default=24, help="images (default 24)")
    p.add_argument("--people-fraction", type=fraction, default=0.6, help="0 to 1 (default 0.6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p = sub.add_parser("cifar", help="CIFAR-like class folders of 32x32 JPEGs")
    p.add_argument("--out", required=True, type=Path, help=out_folder("demo CIFAR"))
    p.add_argument("--per-class", type=positive_int, default=6, help="images per class (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p = sub.add_parser("subject", help="custom subject images with same-name .txt captions")
    p.add_argument("--out", required=True, type=Path, help=out_folder("demo subject"))
    p.add_argument("--n", type=positive_int, default=6, help="captioned images (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p = sub.add_parser("summary", help="count and check the inputs of every study")
    p.add_argument("--captions", required=True, type=Path, help="the COCO captions json")
    p.add_argument("--images", default="", help="COCO image folder ('' to skip image checks)")
    p.add_argument("--cifar", required=True, type=Path, help="the CIFAR-10 source (data.cifar)")
    p.add_argument("--subject", required=True, type=Path, help="the custom subject's photo folder")
    p.add_argument("--out", required=True, type=Path, help="the summary JSON to write")
    args = parser.parse_args()

    from diffscale.data import summary, synthetic

    if args.what == "coco":
        data = synthetic.make_coco(args.captions, args.images, args.n, args.people_fraction, args.seed)
        print(f"wrote {len(data['images'])} images, {len(data['annotations'])} captions")
    elif args.what == "cifar":
        print(f"wrote {synthetic.make_cifar(args.out, args.per_class, args.seed)} images to {args.out}")
    elif args.what == "subject":
        print(f"wrote {synthetic.make_subject(args.out, args.n, args.seed)} captioned images to {args.out}")
    else:
        result = summary.write_summary(args.out, args.captions, args.images or None, args.cifar, args.subject)
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
