"""The embedding study's table and figure, built from the runs' timing.json files.

results/bench/embed_scaling.csv has one row per (modality, backend, policy, N): the run's CPUs
(`cpus`; GPUs for the gpu backend), processes and the threads each worker actually ran with,
whether it was `oversubscribed` (N above the machine's usable cores: it could not have N CPUs),
the physical cores its CPUs were (`physical_cores`, below `cpus` when SMT siblings shared cores),
wall time and its phases, start-up (and its steps), items/s end to end and steady (without start-up), peak RSS,
bytes per item and the projected size of the full study's shards, where dask's workers ran
(`dask_cluster`) and, as SLURM jobs, the CPU-seconds and partition they held (`worker_job_cpu_s`,
`worker_partition`: the report bills them), the job's failed tries before it and the seconds
they held (`earlier_tries`, `earlier_tries_s`: billed too), and — against the serial run
on 1 CPU with 1 thread of the same modality, per item (CPU runs embed the first
embed.scaling_images images, gpu runs all) — speedup, efficiency and the Karp–Flatt serial
fraction (CPU runs only), end to end and steady, and where the steady efficiency went: the CPU time per item of
compute and of decode/tokenize against 1 CPU (`compute_cost_vs_1cpu`, `prepare_cost_vs_1cpu`) and
the share of the steady time the workers were busy (`busy_share`). On a small demo start-up dominates, on 83k COCO images it does
not; the two together say which regime a result is in.

Oversubscribed rows keep their speedup but have no efficiency or Karp–Flatt (they did not run on
N CPUs), and `findings` leaves them out.
"""

from __future__ import annotations

import math
from pathlib import Path

from diffscale import io, vocab
from diffscale.metrics import efficiency, karp_flatt, speedup
from diffscale.errors import DataError

BACKEND_ORDER = ["serial", "multiprocessing", "joblib", "dask", "gpu"]
BASELINE = vocab.EMBED_BASELINE  # what speedup, efficiency and Karp–Flatt are against
POLICY_STYLE = {"pinned": "-o", "naive": "--x", "intraop": "-.s"}
# A run's start-up, step by step (timing.json and this table): process or cluster start, imports
# of torch and the modality's model library, starting the loader processes (GPU path), device
# initialisation, model build
LOAD_STEPS = ("spawn_s", "import_s", "loaders_s", "device_init_s", "build_s")
# what _row reads from every timing.json (the rest has defaults: older runs lack it)
REQUIRED = ("modality", "backend", "policy", "workers", "hw", "device", "cores", "threads_per_worker", "items",
            "wall_s", "startup_s", "compute_s", "write_s", "items_per_s", "steady_items_per_s", "peak_rss_mb")


def load_timings(paths: list[str | Path]) -> list[dict]:
    """The parsed timing files, each checked: a DataError names the file that is missing, not JSON,
    lacks a key the table needs, or repeats a file or run already given (it would be a second row)."""
    out, files, runs = [], set(), {}
    for path in map(Path, paths):
        if path.resolve() in files:  # a glob and an explicit path, or a path given twice
            raise DataError(f"{path}: timing file given twice; each run is one row of the table")
        files.add(path.resolve())
        timing = _load_timing(path)
        run = (timing["hw"], timing["modality"], timing["backend"], timing["policy"], timing["workers"])
        if run in runs:  # a copied run folder
            raise DataError(f"{path}: the same run ({timing['hw']} {timing['modality']} {timing['backend']}-"
                            f"{timing['policy']}-w{timing['workers']}) as {runs[run]}; each run is one row of the table")
        runs[run] = path
        out.append(timing)
    return out


# A steady window or a compute time shorter than this is start-up skew and timer noise (the demo's
# are tens of milliseconds): no claim about steady speed or where efficiency goes rests on it.
SHORTEST_S = 1.0


def long_enough(row, base, what: str) -> bool:
    """Whether a comparison of `row` with `base` has SHORTEST_S of `what` in both: "steady" (the
    steady windows) or "compute" (a worker's compute time). Rows are dicts or table rows; a table
    from before these columns is not called short (nothing says it was)."""
    def seconds(r) -> float:
        try:
            return float(r["wall_s"]) - float(r["steady_from_s"]) if what == "steady" else float(r["compute_s"])
        except (KeyError, TypeError, ValueError):
            return math.nan
    return not any(seconds(r) < SHORTEST_S for r in (row, base))  # NaN (unknown) compares False


def shard_bound(t: dict) -> float:
    """The speedup a run's split of items over its workers allows: all items over the busiest
    worker's (2 workers given 8 and 4 images: 1.5x, however fast the cores). NaN without the
    per-worker record."""
    items = [w.get("items", 0) for w in t.get("per_worker", [])]
    return t["items"] / max(items) if items and max(items) else math.nan


def shard_cap(row) -> float | None:
    """The speedup a run's uneven split capped it at (shard_bound), where that is below its process
    count; None for an even split or a row without the column. Rows are dicts or table rows."""
    try:
        bound, processes = float(row["shard_bound"]), float(row["processes"])
    except (KeyError, TypeError, ValueError):
        return None
    return bound if bound < 0.95 * processes else None  # NaN compares False


def _load_timing(path: Path) -> dict:
    timing = io.read_json(path, missing="timing file not found", what="timing")
    if not isinstance(timing, dict):
        raise DataError(f"{path}: expected a JSON object of an embedding run's timings")
    missing = [key for key in REQUIRED if key not in timing]
    if missing:
        raise DataError(f"{path}: missing key {missing[0]!r}; not the timing.json of a finished embedding run")
    return timing


def _threads(values: list[int]) -> str:
    distinct = sorted(set(values))
    return str(distinct[0]) if len(distinct) == 1 else "/".join(map(str, values))


def _row(t: dict) -> dict:
    prepare = t.get("decode_s", t.get("tokenize_s", math.nan))
    return {
        "modality": t["modality"], "backend": t["backend"], "policy": t["policy"], "workers": t["workers"],
        "cpus": t.get("cpus", t["workers"]), "processes": t.get("processes", t["workers"]),
        "oversubscribed": bool(t.get("oversubscribed", False)),
        "hw": t["hw"], "device": t["device"], "dtype": t.get("dtype", ""), "cores": t["cores"],
        "physical_cores": t.get("physical_cores", math.nan),
        "threads_per_worker": _threads(t["threads_per_worker"]),
        "affinity": _threads(t.get("affinity_per_worker", [])) if t.get("affinity_per_worker") else "",
        "items": t["items"], "shard_bound": shard_bound(t), "wall_s": t["wall_s"], "startup_s": t["startup_s"],
        "steady_from_s": t.get("steady_from_s", t["startup_s"]),  # runs before it had one window
        **{step: t.get(step, math.nan) for step in LOAD_STEPS},  # where start-up went
        "host_s": t.get("host_s", math.nan),  # GPU: host time issuing the device work
        "queue_wait_s": t.get("queue_wait_s", 0.0),  # SLURM workers' queue wait: not in wall_s
        "decode_or_tokenize_s": prepare, "compute_s": t["compute_s"], "write_s": t["write_s"],
        "items_per_s": t["items_per_s"], "steady_items_per_s": t["steady_items_per_s"],
        "peak_rss_mb": max(t["peak_rss_mb"]),
        "bytes_per_item": t.get("bytes_per_item", math.nan), "bytes_per_image": t.get("bytes_per_image", math.nan),
        "bytes_per_token": t.get("bytes_per_token", math.nan),
        "fixed_bytes_per_caption": t.get("fixed_bytes_per_caption", math.nan),
        "tokens_per_caption": t.get("tokens_per_caption", math.nan),
        "projected_images": t.get("projected_images", math.nan),
        "projected_full_gb": t.get("projected_full_gb", math.nan),
        "random_weights": t.get("random_weights", ""), "run": t.get("run_dir", t.get("run", "")),
        # a retried job's failed tries before this run (diffscale.attempts): the report bills them too
        "earlier_tries": len(t.get("earlier_tries", [])), "earlier_tries_s": t.get("earlier_tries_s", 0.0),
        **_workers_elsewhere(t),
    }


def _workers_elsewhere(t: dict) -> dict:
    """Where a dask run's workers ran (`dask_cluster`: local, slurm or address) and, on SLURM, what
    their jobs held outside the run's own job: CPU-seconds and partition, for the report's cost."""
    info = t.get("backend_info") or {}
    held = t.get("worker_job_cpu_s")
    partitions = sorted({str(j["partition"]) for j in info.get("jobs", []) if j.get("partition")})
    return {"dask_cluster": info.get("cluster", "") if t["backend"] == "dask" else "",
            "worker_job_cpu_s": math.nan if held is None else held, "worker_partition": ",".join(partitions)}


def _cpu_seconds_per_item(row: dict, phase: str) -> float:
    """CPU-seconds per item the run spent in `phase` (a per-worker mean) on all of its CPUs."""
    return row[phase] * row["cpus"] / row["items"] if row["items"] else math.nan


def _losses(row: dict, base: dict) -> dict:
    """Where efficiency goes, against serial on 1 CPU (steady: start-up is its own column).

    steady efficiency ≈ (busy_share / busy_share at 1 CPU) ÷ (the phases' cost ratios, weighted by
    their share of the 1-CPU time). A compute cost above 1 with pinned workers (each the same
    single-threaded code on its own core) is what the cores share: memory bandwidth, caches,
    clocks; with intraop it is the threads' synchronisation; with naive, oversubscription.
    busy_share below 1 is time a worker waited: start-up skew, imbalance, finishing."""
    if row["backend"] == "gpu":
        return {}
    out = {f"{name}_cost_vs_1cpu": _cpu_seconds_per_item(row, phase) / _cpu_seconds_per_item(base, phase)
           if _cpu_seconds_per_item(base, phase) else math.nan
           for name, phase in (("compute", "compute_s"), ("prepare", "decode_or_tokenize_s"))}
    steady = row["wall_s"] - row["steady_from_s"]
    busy = row["decode_or_tokenize_s"] + row["compute_s"] + row["write_s"]
    out["busy_share"] = busy / steady if steady > 0 else math.nan
    return out


def _against(row: dict, base: dict | None) -> dict:
    """Speedup per item against serial on 1 CPU (CPU runs embed the first embed.scaling_images
    images, gpu runs all of them: whole-run times are not comparable, seconds per item are), and
    efficiency and Karp-Flatt on the run's N CPUs; a gpu run has no efficiency against CPUs."""
    blank = dict(speedup=math.nan, efficiency=math.nan, karp_flatt=math.nan, steady_speedup=math.nan,
                 steady_efficiency=math.nan, steady_karp_flatt=math.nan)
    if base is None:
        return blank
    blank.update(_losses(row, base))
    per_item = {key: (1 / row[key], 1 / base[key]) for key in ("items_per_s", "steady_items_per_s")}
    (t, t_base), (steady, steady_base) = per_item["items_per_s"], per_item["steady_items_per_s"]
    out = dict(speedup=speedup(t_base, t), steady_speedup=speedup(steady_base, steady), **_losses(row, base))
    if row["oversubscribed"] or row["backend"] == "gpu":  # not n CPUs: no efficiency to claim
        return {**blank, **out}
    n = row["cpus"]
    out.update(efficiency=efficiency(t_base, t, n), karp_flatt=karp_flatt(t_base, t, n),
               steady_efficiency=efficiency(steady_base, steady, n), steady_karp_flatt=karp_flatt(steady_base, steady, n))
    return out


def scaling_rows(timings: list[dict]) -> list[dict]:
    rows = [_row(t) for t in timings]
    baselines = {r["modality"]: r for r in rows if (r["backend"], r["policy"], r["workers"]) == BASELINE}
    for row in rows:
        row.update(_against(row, baselines.get(row["modality"])))
    order = {b: i for i, b in enumerate(BACKEND_ORDER)}
    policies = {p: i for i, p in enumerate(POLICY_STYLE)}
    rows.sort(key=lambda r: (r["modality"], order.get(r["backend"], 99), r["workers"], policies.get(r["policy"], 9)))
    return rows


def findings(rows: list[dict]) -> list[str]:
    """One sentence per (modality, backend, policy): its steady efficiency at the most CPUs it
    really ran on. Oversubscribed runs are left out: they did not have N CPUs."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["backend"] in ("serial", "gpu") and r["policy"] != "intraop" or r["oversubscribed"]:
            continue
        if math.isnan(r.get("steady_efficiency", math.nan)):
            continue
        groups.setdefault((r["modality"], r["backend"], r["policy"]), []).append(r)
    for (modality, backend, policy), mine in sorted(groups.items()):
        top = max(mine, key=lambda r: r["cpus"])
        base = next((r for r in rows if (r["backend"], r["policy"], r["workers"]) == BASELINE
                     and r["modality"] == modality), None)
        if base is None or not long_enough(top, base, "steady"):
            out.append(f"{modality}: {backend} {policy} on {top['cpus']} CPUs: steady windows under {SHORTEST_S:g} s; "
                       "too short to measure steady scaling (use more images)")
            continue
        cap = shard_cap(top)
        uneven = f" (its shards allow at most {cap:.2f}x)" if cap else ""
        out.append(f"{modality}: {backend} {policy} on {top['cpus']} CPUs{smt_note(top)}: steady speedup "
                   f"{top['steady_speedup']:.2f}x{uneven}, efficiency {top['steady_efficiency']:.0%} against 1 CPU"
                   + _where_it_went(top, base))
    sizes = {r["modality"]: r for r in rows if not math.isnan(r.get("projected_full_gb", math.nan))}
    if sizes:
        parts = [f"{m} {r['projected_full_gb']:.2f} GB ({r['bytes_per_image']:.0f} B per image)" for m, r in sorted(sizes.items())]
        out.append(f"projected full-study shards at these settings: {', '.join(parts)}; "
                   f"total {sum(r['projected_full_gb'] for r in sizes.values()):.2f} GB")
    excluded = sorted({f"{r['modality']} {r['backend']}-{r['policy']}-w{r['workers']}" for r in rows if r["oversubscribed"]})
    if excluded:
        out.append(f"left out (oversubscribed: more CPUs than the machine's usable cores): {', '.join(excluded)}")
    return out


def smt_note(row) -> str:
    """' (on P physical cores: SMT siblings shared them)' when a run's CPUs were fewer physical
    cores, else ''; a row is a dict or a table row (pandas), where the column may be missing."""
    cpus, physical = row.get("cpus"), row.get("physical_cores")
    try:
        shared = not math.isnan(float(physical)) and float(physical) < float(cpus)
    except (TypeError, ValueError):
        return ""
    return f" (on {int(float(physical))} physical cores: SMT siblings shared them)" if shared else ""


def _where_it_went(row: dict, base: dict | None) -> str:
    if base is None or math.isnan(row.get("compute_cost_vs_1cpu", math.nan)) or not long_enough(row, base, "compute"):
        return ""
    return (f"; per item, compute costs {row['compute_cost_vs_1cpu']:.2f}x the CPU time it takes on 1 CPU and "
            f"{'decode' if row['modality'] == 'images' else 'tokenize'} {row['prepare_cost_vs_1cpu']:.2f}x; "
            f"workers busy {row['busy_share']:.0%} of the steady time (1 CPU: {base['busy_share']:.0%})")


def write_table(rows: list[dict], path: str | Path) -> Path:
    import pandas as pd

    from diffscale import atomic

    with atomic.atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def figure_lines(rows: list[dict], modality: str, column: str) -> dict[tuple[str, str], list[tuple]]:
    """The figure's lines for one modality: (backend, policy) -> [(N, value of `column`)] by N, in
    BACKEND_ORDER. The baseline is the ideal line's origin, not a line; oversubscribed runs are left
    out (they did not have N CPUs)."""
    lines = {}
    for backend in BACKEND_ORDER:
        for policy in POLICY_STYLE:
            series = sorted((r["workers"], r[column]) for r in rows
                            if (r["modality"], r["backend"], r["policy"]) == (modality, backend, policy)
                            and (backend, policy) != BASELINE[:2] and not r["oversubscribed"])
            if series:
                lines[(backend, policy)] = series
    return lines


def write_figure(rows: list[dict], path: str | Path) -> Path:
    """Speedup against workers, end to end and without start-up, one row of panels per modality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffscale import atomic

    modalities = sorted({r["modality"] for r in rows})
    fig, axes = plt.subplots(len(modalities), 2, figsize=(10, 3.6 * len(modalities)), squeeze=False)
    for i, modality in enumerate(modalities):
        top = max([r["workers"] for r in rows if r["modality"] == modality] + [2])
        for j, (column, title) in enumerate([("speedup", "end to end"), ("steady_speedup", "without start-up")]):
            ax = axes[i][j]
            ax.plot([1, top], [1, top], ":", color="grey", label="ideal")
            ax.axhline(1.0, color="black", lw=0.8)
            for (backend, policy), series in figure_lines(rows, modality, column).items():
                ax.plot(*zip(*series), POLICY_STYLE[policy], label=f"{backend} {policy}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("CPUs (gpu: GPUs); oversubscribed runs left out")
            ax.set_ylabel("speedup vs 1 CPU, 1 thread")
            ax.set_title(f"{modality}: {title}")
            ax.grid(alpha=0.3)
        axes[i][1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
