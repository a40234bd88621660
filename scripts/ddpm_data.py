#!/usr/bin/env python
"""Decode CIFAR-10 once into the uint8 array the DDPM study reads (study 3).

  python scripts/ddpm_data.py --source cifar-10-python.tar.gz --out results/ddpm/data/cifar-uint8.npy
--source: the python batches archive, its extracted cifar-10-batches-py folder, or an image folder
(train/*.png, train/<class>/*.png, or <class>/*.png). Writes the .npy and a .json beside it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--source", type=Path, required=True, help="CIFAR-10 archive, batch folder or image folder")
    parser.add_argument("--out", type=Path, required=True, help=".npy file to write")
    args = parser.parse_args()

    from diffscale.ddpm.data import prepare

    info = prepare(args.source, args.out)
    print(f"decoded {info['images']} images from {args.source} into {args.out} ({info['bytes'] / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
