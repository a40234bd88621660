"""torch.profiler over a window of the DDPM loop: the most expensive operators and a Chrome trace.

The window's warm-up runs unprofiled; the profiler records its `profile_steps` timed steps (no
profiler schedule: every step of that window is recorded). Two rankings of the same events,
each the top 10 by *self* time (an operator's own time, not its children's): by device time
(CUDA kernels attributed to the operator that launched them; absent on CPU runs) and by CPU time.
`pct` is the operator's share of all operators' self time of that kind.
"""

from __future__ import annotations

from pathlib import Path

from diffscale import atomic
from diffscale.errors import DataError
from diffscale.io import csv_text

TOP = 10
COLUMNS = ["hw", "sort_by", "rank", "op", "calls", "self_ms", "total_ms", "pct", "device", "random_weights", "run"]
OPS_FILE = "ops.csv"
TRACE_FILE = "trace.json.gz"  # gzip-compressed Chrome trace (chrome://tracing, ui.perfetto.dev)


def make_profiler(device_type: str, trace_path: Path):
    """A torch.profiler context for CPU (+ CUDA) activity; the trace is exported when it exits."""
    import torch.profiler as tp

    activities = [tp.ProfilerActivity.CPU] + ([tp.ProfilerActivity.CUDA] if device_type == "cuda" else [])

    def export(prof) -> None:
        import gzip
        import shutil

        with atomic.atomic_path(trace_path) as tmp:
            raw = tmp.with_name(tmp.name + ".json")
            prof.export_chrome_trace(str(raw))
            with open(raw, "rb") as src, gzip.open(tmp, "wb", compresslevel=5) as dst:
                shutil.copyfileobj(src, dst)
            raw.unlink()

    return tp.profile(activities=activities, on_trace_ready=export, record_shapes=False)


def top_ops(prof, sort_by: str, top: int = TOP) -> list[dict]:
    """The `top` operators by self time of `sort_by` (device|cpu), with calls, totals and share."""
    events = prof.key_averages()
    attr = {"device": "self_device_time_total", "cpu": "self_cpu_time_total"}[sort_by]
    total_attr = {"device": "device_time_total", "cpu": "cpu_time_total"}[sort_by]

    def get(e, name):  # PyTorch < 2.4 calls device time cuda time
        return getattr(e, name, getattr(e, name.replace("device", "cuda"), 0.0)) or 0.0

    events = [e for e in events if get(e, attr) > 0]
    whole = sum(get(e, attr) for e in events)
    ranked = sorted(events, key=lambda e: get(e, attr), reverse=True)[:top]
    return [{"sort_by": sort_by, "rank": i + 1, "op": e.key, "calls": e.count, "self_ms": get(e, attr) / 1e3,
             "total_ms": get(e, total_attr) / 1e3, "pct": 100.0 * get(e, attr) / whole}
            for i, e in enumerate(ranked)]


def profile(rc: dict, cache, out_dir: str | Path, source=None) -> tuple[dict, list[dict]]:
    """Run one profiled window; write ops.csv and trace.json into out_dir; return result and rows."""
    from diffscale.ddpm import loop

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device_type = rc["hardware"][rc["hw"]]["device"]
    profiler = make_profiler(device_type, out / TRACE_FILE)
    rc = {**rc, "ddpm": {**rc["ddpm"], "steps": rc["ddpm"]["profile_steps"], "repeats": 1}}
    result = loop.run(rc, cache, source, profiler=profiler)
    rows = [r for kind in (["device"] if device_type == "cuda" else []) + ["cpu"] for r in top_ops(profiler, kind)]
    if not rows:
        raise DataError(f"{out}: the profiler recorded no operators")
    for row in rows:
        row.update(hw=rc["hw"], device=result["device"], random_weights="pretrained" not in rc["model"], run=str(out))
    atomic.write_text(out / OPS_FILE, csv_text(rows, COLUMNS))
    return result, rows
