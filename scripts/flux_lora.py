#!/usr/bin/env python
"""Train one FLUX LoRA run on the cached dataset (study 2).

As the workflow runs it (the run config is JSON built by diffscale.flux.settings.run_config):
  python scripts/flux_lora.py --run-config '{...}' --cache results/flux/cache \\
      --dataset results/flux/dataset --out results/flux/local/g1-s8 --resume
By hand, from a config file:
  python scripts/flux_lora.py --config config.yaml --hw local --gpus 1 --steps 8 \\
      --out results/flux/local/g1-s8 --resume
With gpus > 1 the script spawns one process per device; under torchrun
(torchrun --nproc-per-node N scripts/flux_lora.py ...) it uses the processes torchrun started.
Writes lora.safetensors, metrics.csv, quality.csv, timing.json and run.json into --out; the LoRA of
every checkpoint goes to --out/lora/, samples to --out/samples/, the resumable state to
--out/resume/last.pt, which becomes --out/checkpoint.pt when the run finishes.
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
    source.add_argument("--config", type=Path, help="a pipeline config file; needs --hw, --gpus, --steps")
    parser.add_argument("--hw", help="hardware key (with --config)")
    parser.add_argument("--gpus", type=int, help="devices, or gloo processes on a CPU hardware key (with --config)")
    parser.add_argument("--steps", type=int, help="training steps (with --config)")
    parser.add_argument("--cache", type=Path, default=Path(vocab.FLUX_CACHE), help="the flux_cache output")
    parser.add_argument("--dataset", type=Path, default=Path(vocab.FLUX_DATASET), help="the flux_dataset output")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --out/resume/last.pt when it was made with the same settings")
    parser.add_argument("--stop-after", type=int, metavar="STEP",
                        help="end after this step, checkpointed (time-limited jobs; a later --resume continues)")
    args = parser.parse_args()

    from diffscale.config import load_config
    from diffscale.flux.loop import train
    from diffscale.train.core import launch
    from diffscale.flux.settings import run_config

    at_least_one("--stop-after", args.stop_after, launch.STOP_AFTER_MEANING)
    if args.config:
        needs("--config", {"--hw": args.hw, "--gpus": args.gpus, "--steps": args.steps})
        at_least_one("--gpus", args.gpus, launch.GPUS_MEANING)
        at_least_one("--steps", args.steps, "training steps")
        run_cfg = run_config(load_config(args.config), args.hw, args.gpus, args.steps)
    else:
        only_with("--config", {"--hw": args.hw, "--gpus": args.gpus, "--steps": args.steps}, "--run-config")
        run_cfg = json_flag("--run-config", args.run_config)
    # each try records the time it holds the hardware (rank 0 of torchrun's): a retried or resumed
    # run is billed for every invocation of the same run config; a --stop-after invocation keeps
    # the records for the next
    with launch.recorded_try(args.out, run_cfg) as this:
        this.finished = train(run_cfg, args.cache, args.dataset, args.out, resume=args.resume,
                              stop_after=args.stop_after, earlier_tries=this.earlier) is not None
    if not this.finished:
        print(launch.stopped_note(args.stop_after), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
