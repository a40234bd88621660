"""The report's plots: matplotlib, drawn off-screen, returned as PNG bytes (the page embeds them as
data URIs; the Snakemake report gets the same files).

One function per kind of plot; each takes plain series (label → points) so the study sections
decide what is compared and these functions only draw it. A call returns a `Drawing` (the call,
not yet drawn): the page draws it when it embeds it, and a build without figures never pays for
matplotlib.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Callable, Sequence

import matplotlib

from diffscale.report.fmt import sig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WIDTH, HEIGHT, DPI = 6.4, 3.6, 110
STYLE = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
         "font.size": 9, "legend.fontsize": 7.5, "axes.titlesize": 10}


@dataclass(frozen=True)
class Drawing:
    draw: Callable[..., bytes]
    args: tuple
    kwargs: dict

    def render(self) -> bytes:
        return self.draw(*self.args, **self.kwargs)


def _deferred(draw: Callable[..., bytes]) -> Callable[..., Drawing]:
    @functools.wraps(draw)
    def call(*args, **kwargs) -> Drawing:
        return Drawing(draw, args, kwargs)

    return call


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _figure(width: float = WIDTH, height: float = HEIGHT):
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


@_deferred
def speedup(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str,
            ylabel: str = "speedup (×)") -> bytes:
    """Speedup against workers, one line per series, with the ideal (linear) line. Series whose
    label contains 'naive' are dashed, so the thread policies read apart at a glance."""
    fig, ax = _figure()
    top = max([x for points in series.values() for x, _ in points] + [2])
    ax.plot([1, top], [1, top], ":", color="grey", label="ideal (linear)")
    ax.axhline(1.0, color="black", lw=0.7)
    for label, points in series.items():
        points = sorted(points)
        style = "--x" if "naive" in label else "-o"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    ax.set_xscale("log", base=2)
    ticks = sorted({x for points in series.values() for x, _ in points} | {1})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", ncols=2 if len(series) > 5 else 1)
    return _png(fig)


@_deferred
def scatter(points: Sequence[tuple[str, str, float, float]], title: str, xlabel: str, ylabel: str) -> bytes:
    """(label, group, x, y) points, one colour per group (the hardware key), each point labelled."""
    fig, ax = _figure()
    groups = sorted({g for _, g, _, _ in points})
    # every point labelled when few; else the three cheapest and the most expensive
    by_cost = sorted(points, key=lambda p: p[3])
    labelled = set(map(id, points if len(points) <= 8 else by_cost[:3] + by_cost[-1:]))
    for group in groups:
        mine = [p for p in points if p[1] == group]
        ax.scatter([p[2] for p in mine], [p[3] for p in mine], label=group, s=28)
        for p in mine:
            if id(p) in labelled:
                ax.annotate(p[0], (p[2], p[3]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(title="hardware", loc="best")
    return _png(fig)


LOG_SPAN = 100


def wide_span(series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> bool:
    """Whether the positive y values span more than LOG_SPAN: a linear axis would flatten the smallest."""
    ys = [float(v) for _, y in series.values() for v in y if v is not None and float(v) > 0]
    return bool(ys) and max(ys) > LOG_SPAN * min(ys)


@_deferred
def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
          marker: str = "") -> bytes:
    """One line per series; a log y axis where the values span more than LOG_SPAN (a CPU beside GPUs)."""
    fig, ax = _figure()
    styles = ["-", "--", "-.", ":"]
    for number, (label, (x, y)) in enumerate(series.items()):
        ax.plot(list(x), list(y), styles[number % len(styles)], marker=marker or None, label=label)
    if wide_span(series):
        ax.set_yscale("log")
    xs = sorted({float(v) for x, _ in series.values() for v in x})
    if 1 < len(xs) <= 8 and all(v.is_integer() for v in xs):  # GPUs, batch sizes: the values themselves
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if series:
        ax.legend(loc="best")
    return _png(fig)


@_deferred
def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, suffix: str = "") -> bytes:
    fig, ax = _figure()
    positions = range(len(labels))
    drawn = ax.bar(positions, values, color="#4C72B0")
    ax.bar_label(drawn, labels=[f"{sig(v)}{suffix}" for v in values], fontsize=7)
    ax.set_xticks(list(positions), labels, rotation=20 if max(map(len, labels), default=0) > 10 else 0,
                  ha="right" if max(map(len, labels), default=0) > 10 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _png(fig)


@_deferred
def stacked(labels: Sequence[str], parts: dict[str, Sequence[float]], title: str, ylabel: str) -> bytes:
    """One bar per label, stacked by phase (dict order = bottom to top)."""
    fig, ax = _figure()
    bottom = [0.0] * len(labels)
    positions = list(range(len(labels)))
    for phase, values in parts.items():
        values = [v if v == v else 0.0 for v in values]  # NaN → nothing drawn
        ax.bar(positions, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(positions, labels, rotation=15, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best")
    return _png(fig)


@_deferred
def barh(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str) -> bytes:
    """Horizontal bars, largest on top (profiler top-10)."""
    fig, ax = _figure(height=max(2.4, 0.3 * len(labels) + 1))
    positions = list(range(len(labels)))[::-1]
    ax.barh(positions, values, color="#DD8452")
    ax.set_yticks(positions, [label if len(label) < 38 else label[:36] + "…" for label in labels], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _png(fig)


@_deferred
def break_even(rows: Sequence[tuple[str, float, float, float | None]], title: str, horizon: float) -> bytes:
    """Cumulative time against steps up to `horizon`: (label, compile_s, seconds per step,
    break-even step) per variant; the eager run is a line from 0, a compiled one starts at its
    compile time."""
    fig, ax = _figure()
    for label, compile_s, per_step, even in rows:
        ax.plot([0, horizon], [compile_s, compile_s + per_step * horizon], label=label)
        if even and even == even:
            ax.axvline(even, color="grey", lw=0.7, ls=":")
            ax.annotate(f"break-even {even:,.0f} steps", (even, compile_s + per_step * even), fontsize=7,
                        xytext=(4, -12), textcoords="offset points")
    ax.set_xlabel("training steps")
    ax.set_ylabel("cumulative time (s)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return _png(fig)
