"""diffscale: measure how diffusion-model workloads scale across hardware.

The package holds all logic; `rules/` and `scripts/` are thin wrappers around it. Imports flow one
way, downwards through these layers (tests/test_layers.py parses every import and fails on an
upward one):

  3  bench, report       the harness on top: benchmarks (`python -m diffscale.bench ...`) and
                         the report. Nothing in the package imports diffscale.bench.
  2  studies             data, embed, train (the U-Net), flux, ddpm. A study never imports
                         another study; what two studies share moves down a layer.
  1  training core       diffscale.train.core: process launch, precision, checkpoints, guards,
                         the metrics meter, FLOPs. Every training loop is built on it.
  0  ground              errors, atomic, config, vocab, experiments, models, hardware,
                         resources, provenance, timing, attempts, metrics, io, figures, folders, cifar, shards,
                         tokenize, workflow, cli: imports nothing above it. One flat layer
                         (config validates with the owners of what it checks: experiments,
                         models, resources) without import cycles, which the test checks too.
"""

__version__ = "0.1.0"
