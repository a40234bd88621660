"""U-Net training: samples/s of the full loop against the bare forward+backward+step of the same model.

The full loop (diffscale.train.unet) reads shards, draws noise, clips gradients, updates the EMA
and logs; the bare step is the model's forward, loss, backward and AdamW step on tensors already
on the device. `ratio` = loop / bare, each the best of alternating rounds; the target is >= 0.9
(loading and bookkeeping hidden); `loop_spread` and `bare_spread` say how far each side's rounds
disagree, and `note` says when that makes the ratio suspect. MFU is reported where a GPU with a
known peak runs it (FLOPs from a counted forward, see flops.py).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from diffscale import models, vocab
from diffscale.timing import measure
from diffscale.train.core import compat
from diffscale.train.core.precision import Precision
from diffscale.train.unet import train

TEXT_ENCODER_FOR_WIDTH = {32: {"random": "tiny"}, 768: {"random": "clip-vit-large-patch14"}}
NOISY = 0.10  # rounds of one side further apart than this: the machine was busy, the ratio is suspect


def spread(rates: list[float]) -> float | None:
    """How far a side's rounds disagree (fastest ÷ slowest − 1); None for one round."""
    return max(rates) / min(rates) - 1 if len(rates) > 1 and min(rates) > 0 else None


def noise_note(loop_rates: list[float], bare_rates: list[float]) -> str:
    """Why the ratio may not be trusted, or '': one round corrects nothing; rounds that disagree
    by more than NOISY mean something else ran on the machine."""
    if len(loop_rates) < 2:
        return "one round: a burst of load on either side goes uncorrected and unseen; use --rounds 3 or more"
    noisy = {side: s for side, s in (("loop", spread(loop_rates)), ("bare", spread(bare_rates)))
             if s is not None and s > NOISY}
    if not noisy:
        return ""
    return ("rounds disagree (" + ", ".join(f"{side} by {s:.0%}" for side, s in noisy.items())
            + f", more than {NOISY:.0%}): the machine was busy; rerun on an idle one before trusting the ratio")


def run_config(args: argparse.Namespace, cross_attention_dim: int) -> dict:
    return {
        "run": {"hw": "bench", "precision": args.precision, "gpus": 1},
        "seed": 0,
        "hardware": {"bench": {"partition": "bench", "device": "cuda" if args.device.startswith("cuda") else "cpu"}},
        "models": {"unet": {"random": args.preset}, "text_encoder": TEXT_ENCODER_FOR_WIDTH[cross_attention_dim],
                   "vae": {"random": "tiny"}},
        "embed": {"train_source": "bench"},
        "train": {"steps": args.steps, "batch_size": args.batch, "grad_accum": 1, "lr": 1e-4, "weight_decay": 0.0,
                  "warmup_steps": 0, "ema_decay": 0.999, "grad_clip": 1.0, "caption_dropout": 0.1, "tf32": True,
                  "loader_workers": args.loader_workers, "log_every": args.log_every,
                  "checkpoint_every": args.steps},
    }


def bare_step_rate(args: argparse.Namespace, latent_shape: tuple, text_shape: tuple, device: str) -> float:
    """Samples/s of forward + loss + backward + AdamW step alone, on resident tensors."""
    import torch
    import torch.nn.functional as F

    unet = models.build("unet", {"random": args.preset}, device=device)
    unet.train()
    optimizer = compat.adamw(unet.parameters(), 1e-4, 0.0, fused=device.startswith("cuda"))
    prec = Precision(args.precision, "cuda" if device.startswith("cuda") else "cpu")
    latents = torch.randn(args.batch, *latent_shape, device=device)
    noise = torch.randn_like(latents)
    hidden = torch.randn(args.batch, *text_shape, device=device)
    timesteps = torch.randint(0, 1000, (args.batch,), device=device)

    def step() -> None:
        with prec.autocast():
            prediction = unet(latents, timesteps, encoder_hidden_states=hidden).sample
        prec.backward(F.mse_loss(prediction.float(), noise))
        prec.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    timing = measure(step, repeats=args.steps, warmup=3, device=device)
    return args.batch / timing["median_s"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", choices=sorted(models.ROLES["unet"].presets),
                        help="U-Net preset (random weights; default tiny)")
    parser.add_argument("--batch", type=int, default=8, help="samples per step (default 8)")
    parser.add_argument("--latent-size", type=int, default=16, help="latent height and width (default 16)")
    parser.add_argument("--precision", default="fp32", choices=vocab.PRECISIONS, help="training precision (default fp32)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each (default 30)")
    parser.add_argument("--log-every", type=int, default=5, help="loop steps per metrics row (default 5)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="DataLoader worker processes (default 0: batches made in the loop's process)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/loop rounds, best of each (default 3)")


def run(args: argparse.Namespace) -> list[dict]:
    from diffscale.train.synthetic import write_embedding_runs

    arch = models.preset_config(models.parse_spec("unet", {"random": args.preset}))
    width = arch["cross_attention_dim"]
    latent_shape = (arch["in_channels"], args.latent_size, args.latent_size)
    loops, bare_rates = [], []
    with tempfile.TemporaryDirectory(prefix="diffscale-bench-train-") as tmp:
        images, text = write_embedding_runs(Path(tmp) / "embed", images=max(64, 2 * args.batch), captions_per_image=2,
                                            latent_shape=latent_shape, hidden_dim=width, shard_items=64)
        # alternating rounds, best of each: a burst of load from other processes biases neither side
        for number in range(args.rounds):
            bare_rates.append(bare_step_rate(args, latent_shape, (77, width), args.device))
            loops.append(train(run_config(args, width), images, text, Path(tmp) / f"run{number}"))
    loop = max(loops, key=lambda summary: summary["samples_per_s"])
    bare = max(bare_rates)
    loop_rates = [summary["samples_per_s"] for summary in loops]
    note = noise_note(loop_rates, bare_rates)
    if note:
        print(f"bench train: {note}", flush=True)
    return [{
        "preset": args.preset,
        "params": loop["params"],
        "batch": args.batch,
        "latent": f"{latent_shape[0]}x{args.latent_size}x{args.latent_size}",
        "precision": args.precision,
        "device": loop["device"],
        "loader_workers": args.loader_workers,
        "rounds": args.rounds,
        "loop_spread": spread(loop_rates),
        "bare_spread": spread(bare_rates),
        "loop_samples_per_s": loop["samples_per_s"],
        "bare_samples_per_s": bare,
        "ratio": loop["samples_per_s"] / bare,
        "gflops_per_sample": loop["flops_per_sample"] / 1e9 if loop["flops_per_sample"] else None,
        "loop_tflops": loop["tflops"],
        "mfu": loop["mfu"],
        "note": note,
    }]
