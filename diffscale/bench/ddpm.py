"""DDPM study: our loop against denoising-diffusion-pytorch's training step, ratio per variant.

Both sides train the same model (default: the factory's ddpm-cifar10-32, Ho et al.'s 35.7M U-Net;
`--preset peer-unet`: the peer's own Unet(dim 64, mults 1,2,4,8), also 35.7M) on the same batches,
with the same objective (epsilon), schedule (linear, 1000 steps), batch, precision, learning rate,
Adam betas, gradient clipping and EMA interval (`--ema-every`, default 10: the peer's). Ours is
the study's loop (diffscale.ddpm.loop: fused Adam on GPUs, no per-step synchronisation,
cudnn.benchmark, optional channels_last); the peer is its Trainer's step (diffscale.ddpm.peer).

A variant is a precision (fp32 = TF32 off, tf32, bf16, fp16) with optional suffixes `+compile`
(torch.compile, mode default; `+compile:max-autotune` etc.) and `+cl` (channels_last, ours only).
Each side: --warmup untimed steps, then --steps timed in --repeats blocks, device-synchronised
at block ends, median block. `ratio` = our steps/s / the peer's on the same variant (its `+cl`-less
twin for `+cl` rows). Variants run in the order given; one that would start after --budget-s
seconds is skipped and says so (a compile variant's first side reserves --compile-reserve-s);
rows so far are written to <out-dir>/ddpm.partial.csv after each side.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from diffscale import models
from diffscale.ddpm import sweeps

PEER_UNET = "peer-unet"


def parse_variant(text: str) -> dict:
    parts = text.split("+")
    out = {"name": text, "precision": parts[0], "compile": "off", "channels_last": False}
    if out["precision"] not in ("fp32", "tf32", "bf16", "fp16"):
        raise argparse.ArgumentTypeError(f"variant {text!r}: precision must be fp32, tf32, bf16 or fp16")
    for part in parts[1:]:
        if part == "cl":
            out["channels_last"] = True
        elif part.startswith("compile"):
            out["compile"] = part.partition(":")[2] or "default"
        else:
            raise argparse.ArgumentTypeError(f"variant {text!r}: unknown suffix {part!r} (+compile[:mode], +cl)")
    return out


def bench_config(args: argparse.Namespace, variant: dict) -> dict:
    from diffscale.config import fill_defaults, schema

    root = schema()
    ddpm = {"hardware": ["bench"], "steps": args.steps, "batch_sizes": [args.batch], "gpus": [1],
            "warmup_steps": args.warmup, "repeats": args.repeats, "compile_backend": args.backend,
            "channels_last": variant["channels_last"], "ema_every": args.ema_every}
    fill_defaults(ddpm, root["properties"]["ddpm"], root)
    return {
        "stage": "bench", "seed": 0, "hw": "bench",
        "hardware": {"bench": {"partition": "bench", "device": "cuda" if args.device.startswith("cuda") else "cpu"}},
        "model": {"random": "tiny" if args.preset == PEER_UNET else args.preset},
        "ddpm": {k: ddpm[k] for k in sweeps.SETTINGS},
        "variant": {"batch": args.batch, "gpus": 1, "precision": variant["precision"], "workers": args.workers,
                    "compile": variant["compile"]},
    }


def _model(args, rc: dict, impl: str):
    """None: the factory model from rc (the loop / the peer build it); or the peer's own Unet."""
    if args.preset != PEER_UNET:
        return None
    import torch

    from diffscale.ddpm.peer import peer_unet

    torch.manual_seed(0)
    model = peer_unet().to(rc["hardware"]["bench"]["device"]).train()
    if impl == "ours" and rc["ddpm"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


def one_side(args, rc: dict, impl: str, cache: Path) -> dict:
    from diffscale import hardware
    from diffscale.ddpm import data as ddata
    from diffscale.ddpm import loop, peer

    if impl == "ours":
        return loop.run(rc, cache, model=_model(args, rc, impl))
    return peer.window(rc, ddata.CachedImages(cache), hardware.resolve(rc, "bench", 1).device_for(0),
                       model=_model(args, rc, impl))


def row_of(args, variant: dict, impl: str, rc: dict, result: dict | None, status: str) -> dict:
    from diffscale.ddpm.peer import settings_text

    row = {"variant": variant["name"], "impl": impl, "preset": args.preset, "batch": args.batch,
           "precision": variant["precision"], "compile": variant["compile"], "backend": args.backend,
           "channels_last": variant["channels_last"] if impl == "ours" else False, "status": status}
    if result:
        row |= {"device": result["device"], "params": result["params"], "steps_per_s": result["steps_per_s"],
                "images_per_s": result["images_per_s"], "time_to_first_step_s": result["time_to_first_step_s"],
                "warmup_overhead_s": result["overhead_s"], "peak_mem_mb": result["peak_mem_mb"],
                "loss_end": result["loss_end"], "data_wait_frac": result["data_wait_frac"]}
    row["settings"] = settings_text(rc)
    return row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--preset", default="ddpm-cifar10-32",
                        choices=[*sorted(models.ROLES["ddpm_unet"].presets), PEER_UNET],
                        help="ddpm_unet preset, or peer-unet (the peer's own Unet)")
    parser.add_argument("--batch", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--variants", nargs="+", type=parse_variant, default=[parse_variant(v) for v in
                        ("tf32", "bf16", "bf16+compile")], help="e.g. tf32 tf32+cl bf16 bf16+compile (default)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per side and variant (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks (median; default 3)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both sides (default 2)")
    parser.add_argument("--ema-every", type=int, default=10, help="EMA update interval, both sides (default 10)")
    parser.add_argument("--backend", default="inductor",
                        help="torch.compile backend (on a CPU, aot_eager skips inductor's ~100 s cold compile)")
    parser.add_argument("--images", type=int, default=2048, help="random uint8 images in the array (default 2048)")
    parser.add_argument("--budget-s", type=float, default=125.0,
                        help="skip a side that would start after this many seconds (default 125)")
    parser.add_argument("--compile-reserve-s", type=float, default=50.0,
                        help="time the first side of a compile variant needs left in the budget (default 50)")


def _write_partial(args, rows: list[dict]) -> None:
    """Rows so far, in case the run is stopped from outside (out-dir/ddpm.partial.csv)."""
    from diffscale.ddpm.sweeps import csv_text

    columns = list(dict.fromkeys(k for r in rows for k in r))
    from diffscale import atomic

    atomic.write_text(Path(args.out_dir) / "ddpm.partial.csv", csv_text(rows, columns))


def run(args: argparse.Namespace) -> list[dict]:
    import numpy as np

    from diffscale.ddpm.peer import PeerUnavailable

    started = time.perf_counter()
    rows: list[dict] = []
    peer_rate: dict[tuple, float] = {}
    with tempfile.TemporaryDirectory(prefix="diffscale-bench-ddpm-") as tmp:
        cache = Path(tmp) / "cifar-uint8.npy"
        images = np.random.default_rng(0).integers(0, 256, size=(max(args.images, 2 * args.batch), 32, 32, 3),
                                                   dtype=np.uint8)
        np.save(cache, images)
        for variant in args.variants:
            rc = bench_config(args, variant)
            sides = ["ours"] + ([] if variant["channels_last"] else ["peer"])
            for number, impl in enumerate(sides):
                # a cold compile needs the reserve; the second side's compile of the same graph may be served by
                # Inductor's cache, so it only needs the budget not to be spent
                reserve = args.compile_reserve_s if variant["compile"] != "off" and number == 0 else 0.0
                elapsed = time.perf_counter() - started
                if elapsed + reserve > args.budget_s or (number and rows[-1]["status"].startswith("skipped")):
                    rows.append(row_of(args, variant, impl, rc, None, f"skipped: {elapsed:.0f} s of the "
                                       f"{args.budget_s:.0f} s budget used"))
                    continue
                side_rc = copy.deepcopy(rc)
                try:
                    result = one_side(args, side_rc, impl, cache)
                    status = "ok"
                except (PeerUnavailable, RuntimeError, ValueError, AssertionError) as exc:
                    result, status = None, f"failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                rows.append(row_of(args, variant, impl, side_rc, result, status))
                if impl == "peer" and result:
                    peer_rate[(variant["precision"], variant["compile"])] = result["steps_per_s"]
                _write_partial(args, rows)
                print(f"[{time.perf_counter() - started:6.1f} s] {variant['name']:>18} {impl:>4}: "
                      + (f"{result['steps_per_s']:.2f} it/s, first step {result['time_to_first_step_s']:.1f} s"
                         if result else status), flush=True)
    for row in rows:
        theirs = peer_rate.get((row["precision"], row["compile"]))
        row["ratio_to_peer"] = row["steps_per_s"] / theirs if theirs and row.get("steps_per_s") else None
    print("\nratio to the peer (ours / peer, steps/s, same model, batch, precision, objective, schedule):")
    for row in rows:
        if row["impl"] == "ours":
            print(f"  {row['variant']:>18}: {peer_ratio_text(row, rows)}")
    return rows


def peer_ratio_text(ours: dict, rows: list[dict]) -> str:
    """'1.15x', or why there is no ratio: our side's status, else the peer's (not installed, skipped)."""
    if ours["ratio_to_peer"]:
        return f"{ours['ratio_to_peer']:.2f}x"
    if ours["status"] != "ok":
        return ours["status"]
    peer = next((r for r in rows if r["impl"] == "peer" and r["variant"] == ours["variant"]), None)
    return f"no ratio: peer {peer['status']}" if peer else "no ratio: no peer run of this variant"
