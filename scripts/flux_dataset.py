#!/usr/bin/env python
"""Check a folder of captioned photos and prepare it for FLUX LoRA training (study 2, stage 1).

  python scripts/flux_dataset.py --images DIR --trigger WORD --out results/flux/dataset

DIR holds images with same-name .txt captions; `[trigger]` in a caption becomes WORD. A mistake
(an image without caption, a caption without image, an empty caption, an unreadable or too-small
image, fewer than --min-images images) is one line naming the file, exit 2, and no output.
Writes --out/images/ (each image cropped to its aspect-ratio bucket), dataset.json, buckets.csv.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import run_cli  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder of images with same-name .txt captions")
    parser.add_argument("--trigger", required=True, help="the word that replaces [trigger] in captions")
    parser.add_argument("--out", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--resolution", type=int, default=512, help="side of the square bucket, px (default 512)")
    parser.add_argument("--bucket-ratio", type=float, action="append", dest="ratios",
                        help="a bucket aspect ratio, width/height (repeatable; default 1.0 0.75 1.3333)")
    parser.add_argument("--min-images", type=int, default=5, help="fewer images is an error (default 5)")
    args = parser.parse_args()

    from diffscale.flux.dataset import prepare

    flux = schema_of("flux")["properties"]
    ratios = checked("--bucket-ratio", args.ratios or flux["bucket_ratios"]["default"], flux["bucket_ratios"])
    items = prepare(args.images, args.out, checked("--trigger", args.trigger, schema_of("data", "subject", "trigger")),
                    checked("--resolution", args.resolution, flux["resolution"]), ratios,
                    checked("--min-images", args.min_images, flux["min_images"]))
    buckets = sorted({item.bucket for item in items})
    print(f"{len(items)} images in {len(buckets)} buckets ({', '.join(f'{w}x{h}' for w, h in buckets)}); wrote {args.out}")
    return 0


def schema_of(*keys: str) -> dict:
    """The config schema's entry for a key path: the one owner of each flag's valid range."""
    from diffscale.config import schema

    node = schema()
    for key in keys:
        node = node["properties"][key]
    return node


def checked(flag: str, value, rule: dict):
    """`value` if the config schema's `rule` admits it, else a ConfigError naming the flag."""
    import jsonschema

    from diffscale.errors import ConfigError

    try:
        jsonschema.validate(value, rule)
    except jsonschema.ValidationError as exc:
        raise ConfigError(f"{flag}: {exc.message}") from None
    return value


if __name__ == "__main__":
    sys.exit(run_cli(main))
