#!/usr/bin/env python
"""Encode a prepared FLUX dataset once: VAE latents, T5 and CLIP embeddings (study 2, stage 2).

  python scripts/flux_cache.py --dataset results/flux/dataset --settings '{...}' --out results/flux/cache
  python scripts/flux_cache.py --dataset results/flux/dataset --config config.yaml --out results/flux/cache

The settings are the JSON slice diffscale.flux.settings.cache_config builds (models, sample prompts,
T5 length). Writes latents.safetensors, text.safetensors, prompts.safetensors, cache.json, run.json.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale import vocab  # noqa: E402
from diffscale.cli import argument_parser, json_flag, out_folder, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--dataset", type=Path, required=True, help="the flux_dataset output")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--settings", help="the cache config slice as JSON (what the workflow passes)")
    source.add_argument("--config", type=Path, help="a pipeline config file")
    parser.add_argument("--out", type=Path, required=True, help=out_folder("cache"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=vocab.DTYPES, help="encoder dtype")
    args = parser.parse_args()

    from diffscale.flux.cache import build_cache
    from diffscale.flux.settings import cache_config
    from diffscale.hardware import check_device

    check_device(args.device, "--device")

    if args.config:
        from diffscale.config import load_config

        settings = cache_config(load_config(args.config))
    else:
        settings = json_flag("--settings", args.settings)
    manifest = build_cache(args.dataset, args.out, settings, device=args.device, dtype=args.dtype)
    print(f"cached {len(manifest['items'])} images and {len(manifest['sample_prompts'])} prompts "
          f"({manifest['timings']}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
