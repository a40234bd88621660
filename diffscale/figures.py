"""Figures: matplotlib without a display, saved atomically, closed after saving.

Part of the ground layer. Every figure of the studies and the report is made the same way:

    plt = figures.pyplot()                  # matplotlib.pyplot on the Agg backend
    fig, ax = plt.subplots(figsize=(7, 4))
    ...                                     # plot; say device and settings in the title
    fig.tight_layout()
    figures.save(fig, out, dpi=120)         # <out>.tmp, then os.replace; the figure is closed

A crash while drawing or saving leaves no file that looks finished (see diffscale.atomic).
"""

from __future__ import annotations

from pathlib import Path

from diffscale import atomic


def pyplot():
    """matplotlib.pyplot, on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: float | None = None, format: str = "png") -> Path:
    """Write `fig` to `path` atomically, then close it (also when saving fails)."""
    plt = pyplot()
    try:
        with atomic.atomic_path(path) as tmp:
            if dpi is None:
                fig.savefig(tmp, format=format)
            else:
                fig.savefig(tmp, format=format, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)
