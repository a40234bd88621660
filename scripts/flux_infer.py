#!/usr/bin/env python
"""Time FLUX inference on one hardware key: base model, with a LoRA, with the LoRA fused (study 2).

  python scripts/flux_infer.py --settings '{...}' --lora results/flux/local/g1-s4/lora.safetensors \\
      --out results/flux/infer/local
  python scripts/flux_infer.py --config config.yaml --hw local --lora ... --out ...

Writes infer.csv (one row per model x dtype x batch size: load, text, denoise and decode seconds,
time to first image, images/s, peak memory) and run.json into --out.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, json_flag, needs, only_with, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--settings", help="the inference config slice as JSON (what the workflow passes)")
    source.add_argument("--config", type=Path, help="a pipeline config file; needs --hw")
    parser.add_argument("--hw", help="hardware key (with --config)")
    parser.add_argument("--lora", type=Path, required=True, help="a LoRA .safetensors (FluxPipeline format)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args()

    from diffscale.errors import DataError
    from diffscale.flux.infer import run_infer
    from diffscale.flux.settings import infer_config

    if args.config:
        needs("--config", {"--hw": args.hw})
        from diffscale.config import load_config

        settings = infer_config(load_config(args.config), args.hw)
    else:
        only_with("--config", {"--hw": args.hw}, "--settings")
        settings = json_flag("--settings", args.settings)
    if not args.lora.is_file():
        raise DataError(f"{args.lora}: LoRA file not found")
    rows = run_infer(settings, args.lora, args.out)
    print(f"{len(rows)} rows; wrote {args.out / 'infer.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
