#!/usr/bin/env python
"""Check a folder of captioned photos and prepare it for FLUX LoRA training (study 2, stage 1).

  python scripts/flux_dataset.py --images DIR --trigger WORD --out results/flux/dataset

DIR holds images with same-name .txt captions; `[trigger]` in a caption becomes WORD. A mistake
(an image without caption, a caption without image, an empty caption, an unreadable or too-small
image, fewer than --min-images images) is one line naming the file, exit 2, and no output.
Writes --out/images/ (each image cropped to its aspect-ratio bucket), dataset.json, buckets.csv.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, out_folder, run_cli  # noqa: E402


def main() -> int:
    from diffscale.config import checked_flag, schema_entry

    def default(key: str) -> str:
        return f"default {schema_entry('flux', key)['default']}: the config's flux.{key}"

    parser = argument_parser(__doc__)
    parser.add_argument("--images", type=Path, required=True, help="folder of images with same-name .txt captions")
    parser.add_argument("--trigger", required=True, help="the word that replaces [trigger] in captions")
    parser.add_argument("--out", type=Path, required=True, help=out_folder("prepared dataset"))
    parser.add_argument("--resolution", type=int, help=f"side of the square bucket, px ({default('resolution')})")
    parser.add_argument("--bucket-ratio", type=float, action="append", dest="ratios",
                        help=f"a bucket aspect ratio, width/height (repeatable; {default('bucket_ratios')})")
    parser.add_argument("--min-images", type=int, help=f"fewer images is an error ({default('min_images')})")
    args = parser.parse_args()

    from diffscale.flux.dataset import prepare

    items = prepare(args.images, args.out, checked_flag("--trigger", args.trigger, "data", "subject", "trigger"),
                    checked_flag("--resolution", args.resolution, "flux", "resolution"),
                    checked_flag("--bucket-ratio", args.ratios, "flux", "bucket_ratios"),
                    checked_flag("--min-images", args.min_images, "flux", "min_images"))
    buckets = sorted({item.bucket for item in items})
    print(f"{len(items)} images in {len(buckets)} buckets ({', '.join(f'{w}x{h}' for w, h in buckets)}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
