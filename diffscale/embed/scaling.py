"""The embedding study's table and figure, built from the runs' timing.json files.

results/bench/embed_scaling.csv has one row per (modality, backend, policy, workers): wall time
and its phases, items/s, the threads each worker actually ran with, peak RSS, and — against the
serial run with one worker of the same modality — speedup, efficiency and the Karp–Flatt serial
fraction. The `steady_` columns repeat speedup and efficiency without start-up (process or
cluster start, imports, model load): on a small demo start-up dominates, on 83k COCO images it
does not, and the two together say which regime a result is in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from diffscale.metrics import efficiency, karp_flatt, speedup
from diffscale.errors import DataError

BACKEND_ORDER = ["serial", "multiprocessing", "joblib", "dask", "gpu"]
BASELINE = ("serial", "pinned", 1)


def load_timings(paths: list[str | Path]) -> list[dict]:
    out = []
    for path in paths:
        try:
            out.append(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise DataError(f"{path}: timing file not found") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg})") from None
    return out


def _threads(values: list[int]) -> str:
    distinct = sorted(set(values))
    return str(distinct[0]) if len(distinct) == 1 else "/".join(map(str, values))


def scaling_rows(timings: list[dict]) -> list[dict]:
    rows = []
    for t in timings:
        prepare = t.get("decode_s", t.get("tokenize_s", math.nan))
        rows.append({
            "modality": t["modality"], "backend": t["backend"], "policy": t["policy"], "workers": t["workers"],
            "hw": t["hw"], "device": t["device"], "cores": t["cores"],
            "threads_per_worker": _threads(t["threads_per_worker"]),
            "items": t["items"], "wall_s": t["wall_s"], "startup_s": t["startup_s"],
            "decode_or_tokenize_s": prepare, "compute_s": t["compute_s"], "write_s": t["write_s"],
            "items_per_s": t["items_per_s"], "steady_items_per_s": t["steady_items_per_s"],
            "peak_rss_mb": max(t["peak_rss_mb"]),
        })
    baselines = {r["modality"]: r for r in rows if (r["backend"], r["policy"], r["workers"]) == BASELINE}
    for row in rows:
        base = baselines.get(row["modality"])
        if base is None:
            row.update(speedup=math.nan, efficiency=math.nan, karp_flatt=math.nan,
                       steady_speedup=math.nan, steady_efficiency=math.nan)
            continue
        n = row["workers"]
        row["speedup"] = speedup(base["wall_s"], row["wall_s"])
        row["efficiency"] = efficiency(base["wall_s"], row["wall_s"], n)
        row["karp_flatt"] = karp_flatt(base["wall_s"], row["wall_s"], n)
        base_steady = base["wall_s"] - base["startup_s"]
        steady = row["wall_s"] - row["startup_s"]
        row["steady_speedup"] = speedup(base_steady, steady)
        row["steady_efficiency"] = efficiency(base_steady, steady, n)
    order = {b: i for i, b in enumerate(BACKEND_ORDER)}
    rows.sort(key=lambda r: (r["modality"], order.get(r["backend"], 99), r["workers"], r["policy"] != "pinned"))
    return rows


def write_table(rows: list[dict], path: str | Path) -> Path:
    import pandas as pd

    from diffscale import atomic

    with atomic.atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def write_figure(rows: list[dict], path: str | Path) -> Path:
    """Speedup against workers, end to end and without start-up, one row of panels per modality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffscale import atomic

    modalities = sorted({r["modality"] for r in rows})
    fig, axes = plt.subplots(len(modalities), 2, figsize=(10, 3.6 * len(modalities)), squeeze=False)
    for i, modality in enumerate(modalities):
        mine = [r for r in rows if r["modality"] == modality and r["backend"] != "serial"]
        top = max([r["workers"] for r in mine] + [2])
        for j, (column, title) in enumerate([("speedup", "end to end"), ("steady_speedup", "without start-up")]):
            ax = axes[i][j]
            ax.plot([1, top], [1, top], ":", color="grey", label="ideal")
            ax.axhline(1.0, color="black", lw=0.8)
            for backend in BACKEND_ORDER:
                for policy in ("pinned", "naive"):
                    series = sorted((r["workers"], r[column]) for r in mine
                                    if r["backend"] == backend and r["policy"] == policy)
                    if series:
                        ax.plot(*zip(*series), "-o" if policy == "pinned" else "--x", label=f"{backend} {policy}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("workers (gpu: GPUs)")
            ax.set_ylabel("speedup vs serial, 1 worker")
            ax.set_title(f"{modality}: {title}")
            ax.grid(alpha=0.3)
        axes[i][1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
