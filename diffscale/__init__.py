"""diffscale: measure how diffusion-model workloads scale across hardware.

The package holds all logic; `rules/` and `scripts/` are thin wrappers around it.
"""

__version__ = "0.1.0"
