"""Benchmarks: `python -m diffscale.bench <stage> [options]` writes raw figures as CSV + JSON.

Each stage is a module in this package with `add_arguments(parser)` and `run(args) -> list[dict]`
(one dict per measured configuration). Speed targets live here, never in timed tests. A long
stage hands its rows so far to `saver(args)` after each measurement, so a time limit keeps them.
"""

STAGES = {
    "models": "diffscale.bench.models",
    "coco": "diffscale.bench.coco",
    "embed": "diffscale.bench.embed",
    "gil": "diffscale.bench.gil",
    "cores": "diffscale.bench.cores",
    "train": "diffscale.bench.train",
    "flux": "diffscale.bench.flux",
    "ddpm": "diffscale.bench.ddpm",
}


def saver(args):
    """`save(rows)`: writes the rows so far as a partial table (set by the entry point, `__main__`);
    a no-op when a stage runs without it (a test calling `run` directly)."""
    return getattr(args, "save_partial", None) or (lambda rows: None)
