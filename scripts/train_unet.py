#!/usr/bin/env python
"""Train the text-conditioned U-Net of one run on the cached embeddings (study 1, stage 3).

As the workflow runs it (the run config is JSON built by diffscale.train.config.run_config):
  python scripts/train_unet.py --run-config '{...}' --images results/embed/images/serial-pinned-w1 \\
      --text results/embed/text/serial-pinned-w1 --out results/train/unet/local/fp32-g1 --resume
By hand, from a config file:
  python scripts/train_unet.py --config config.yaml --hw local --precision bf16 --gpus 2 \\
      --out results/train/unet/local/bf16-g2 --resume
With gpus > 1 the script spawns one process per device; under torchrun
(torchrun --nproc-per-node N scripts/train_unet.py ...) it uses the processes torchrun started.
Writes checkpoint.pt, metrics.csv, config.json and run.json into --out; resumable checkpoints go
to --out/resume/ (see diffscale/train/checkpoint.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale import vocab  # noqa: E402
from diffscale.cli import argument_parser, at_least_one, json_flag, needs, only_with, run_cli  # noqa: E402
from diffscale.timing import mark_job_start  # noqa: E402


def main() -> int:
    mark_job_start()  # every invocation is billed from its process's start, imports included
    parser = argument_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-config", help="the run config as JSON (what the workflow passes)")
    source.add_argument("--config", type=Path, help="a pipeline config file; needs --hw, --precision, --gpus")
    parser.add_argument("--hw", help="hardware key (with --config)")
    parser.add_argument("--precision", choices=vocab.PRECISIONS, help="with --config")
    parser.add_argument("--gpus", type=int, help="devices, or gloo processes on a CPU hardware key (with --config)")
    parser.add_argument("--images", type=Path, help="image embedding run (default: from embed.train_source)")
    parser.add_argument("--text", type=Path, help="text embedding run (default: from embed.train_source)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --out/resume/last.pt when it was made with the same settings")
    parser.add_argument("--resume-from", type=Path, help="continue from this checkpoint (same architecture)")
    parser.add_argument("--stop-after", type=int, metavar="STEP",
                        help="end after this step, checkpointed (time-limited jobs; a later --resume continues)")
    args = parser.parse_args()

    from diffscale.train.config import job_inputs
    from diffscale.train.core import launch
    from diffscale.train.unet import train

    at_least_one("--stop-after", args.stop_after, launch.STOP_AFTER_MEANING)
    if args.config:
        needs("--config", {"--hw": args.hw, "--precision": args.precision, "--gpus": args.gpus})
        at_least_one("--gpus", args.gpus, launch.GPUS_MEANING)
        run_cfg, images, text = job_inputs(args.config, args.hw, args.precision, args.gpus, args.images, args.text)
    else:
        only_with("--config", {"--hw": args.hw, "--precision": args.precision, "--gpus": args.gpus}, "--run-config")
        run_cfg = json_flag("--run-config", args.run_config)
        needs("--run-config", {"--images": args.images, "--text": args.text})
        images, text = args.images, args.text
    # each try records the time it holds the hardware (rank 0 of torchrun's): a retried or resumed
    # run is billed for every invocation of the same run config; a --stop-after invocation keeps
    # the records for the next
    with launch.recorded_try(args.out, run_cfg) as this:
        this.finished = train(run_cfg, images, text, args.out, resume=args.resume, resume_from=args.resume_from,
                              stop_after=args.stop_after, earlier_tries=this.earlier) is not None
    if not this.finished:
        print(launch.stopped_note(args.stop_after), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
