#!/usr/bin/env python
"""Generate images from prompts with a trained U-Net run (classifier-free guidance, VAE decode).

  python scripts/generate.py --prompt "a man riding a wave on a surfboard" \\
      --model-path results/train/unet/local/fp32-g1 --guidance-scale 2.0 --num-inference-steps 50 \\
      --seed 0 --out samples/
  python scripts/generate.py --prompts prompts.txt --model-path DIR --out DIR [--scheduler ddpm|ddim|euler]

--prompt may be given several times; a prompt file has one prompt per line (# comments allowed).
Writes NNN-<prompt>.png (prompt and settings in the PNG metadata), samples.json and run.json into
--out.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffscale.cli import argument_parser, out_folder, run_cli  # noqa: E402
from diffscale.train.diffusion import SAMPLERS  # noqa: E402


def main() -> int:
    parser = argument_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable)")
    source.add_argument("--prompts", type=Path, metavar="FILE", help="a file with one prompt per line")
    parser.add_argument("--model-path", type=Path, required=True, metavar="DIR",
                        help="a training run directory (checkpoint.pt + config.json)")
    parser.add_argument("--guidance-scale", type=float, default=2.0, metavar="G",
                        help="classifier-free guidance scale; 1.0 is the conditional model alone (default 2.0)")
    parser.add_argument("--num-inference-steps", type=int, default=50, metavar="N",
                        help="denoising steps, at most the training schedule's (default 50)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="image n's noise is seeded by (S, n), whatever the batch (default 0)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help=out_folder("samples gallery"))
    parser.add_argument("--scheduler", choices=SAMPLERS, default="ddim", help="the sampler (default ddim)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="B", help="prompts per forward pass")
    parser.add_argument("--weights", choices=["ema", "model"], default="ema",
                        help="the EMA weights (default) or the raw trained weights")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    args = parser.parse_args()

    from diffscale.train.generate import Settings, choose_device, generate, read_prompts

    settings = Settings(args.guidance_scale, args.num_inference_steps, args.seed, args.scheduler, args.weights,
                        args.batch_size).check()
    prompts = read_prompts(args.prompts) if args.prompts else args.prompt
    for path in generate(prompts, args.model_path, args.out, settings, device=choose_device(args.device)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
