#!/usr/bin/env python
"""Embed the COCO manifest's images (VAE latents) or captions (CLIP text) with one backend.

  python scripts/embed.py images --manifest results/data/coco/manifest.parquet \\
      --skipped results/data/coco/skipped.csv --backend multiprocessing --policy pinned --workers 2 \\
      --out-dir results/embed/images/multiprocessing-pinned-w2 --config config.yaml

Settings come from --config (a config file) or --settings (the JSON slice the rule passes).
Writes shards, timing.json, run.json and, last, index.json into --out-dir. While it runs, its
try is recorded in .attempts/<run> beside --out-dir (diffscale.attempts): a failed try's record
stays, and the next try writes it into timing.json (`earlier_tries`) for the report's cost.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale import vocab  # noqa: E402
from diffscale.cli import argument_parser, json_flag, run_cli  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("modality", choices=vocab.MODALITIES,
                        help="images: VAE latents of the manifest's images; text: CLIP embeddings of their captions")
    parser.add_argument("--manifest", required=True, type=Path,
                        help="the kept images (filter_coco.py's manifest.parquet)")
    parser.add_argument("--skipped", type=Path, help="skip list (image_id, file_name, reason)")
    parser.add_argument("--backend", required=True, choices=vocab.BACKENDS,
                        help="how the work is split: one process (serial), worker processes, or one process per GPU")
    parser.add_argument("--policy", default="pinned", choices=vocab.POLICIES,
                        help="the N CPUs: pinned, N processes x 1 thread (default); naive, N processes x the "
                        "library's default threads; intraop, 1 process x N threads (serial backend)")
    parser.add_argument("--workers", type=int, default=1, help="the run's CPUs, N of w{N} (gpu: GPUs)")
    parser.add_argument("--cpus", type=int, help="CPUs of a gpu job (default: those this process may use); a CPU run has N = --workers")
    parser.add_argument("--out-dir", required=True, type=Path,
                        help="the run's folder; an earlier run's files there are replaced, others left alone")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--settings", help="the run's config slice as JSON (diffscale.embed.settings)")
    source.add_argument("--config", type=Path, help="a config file to take the settings from")
    args = parser.parse_args()

    from diffscale.config import load_config
    from diffscale.embed.settings import EmbedSettings, settings_for
    from diffscale.embed.stage import recorded_try, run_embedding

    if args.config:
        raw = settings_for(load_config(args.config), args.modality, args.backend)
    else:
        raw = json_flag("--settings", args.settings)
    settings = EmbedSettings.from_dict(raw)
    with recorded_try(args.out_dir, settings, args.backend, args.policy, args.workers) as this:
        timing = run_embedding(args.modality, args.manifest, args.out_dir, args.backend, args.policy, args.workers,
                               settings, skip_list=args.skipped, cpus=args.cpus, earlier_tries=this.earlier)
    prepare, noun = "decode_s" if args.modality == "images" else "tokenize_s", vocab.ITEMS[args.modality]
    if timing.get("unreadable"):  # not a stop: the rest is embedded, but the user must hear of it
        print(f"warning: {args.manifest}: {timing['unreadable']} of {timing['items'] + timing['unreadable']} {noun} "
              f"could not be read and are left out (index.json's meta.skipped names them and why)", file=sys.stderr)
    print(f"{timing['run']}: {timing['items']} {noun} in {timing['wall_s']:.2f} s "
          f"({timing['items_per_s']:.1f}/s; start-up {timing['startup_s']:.2f} s, {prepare[:-2]} {timing[prepare]:.2f} s, "
          f"compute {timing['compute_s']:.2f} s, write {timing['write_s']:.2f} s per worker); "
          f"threads per worker {timing['threads_per_worker']}, skipped {timing['skipped']}, "
          f"truncated {timing['truncated']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
