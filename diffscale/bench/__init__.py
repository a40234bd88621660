"""Benchmarks: `python -m diffscale.bench <stage> [options]` writes raw figures as CSV + JSON.

Each stage is a module in this package with `add_arguments(parser)` and `run(args) -> list[dict]`
(one dict per measured configuration). Speed targets live here, never in timed tests.
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
