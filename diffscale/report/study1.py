"""Study 1 in the report: COCO people-centric filtering, embedding across parallel backends (the
original question: does parallel CPU preprocessing pay off, by how much, at what cost?) and the
text-conditioned U-Net training across hardware, precision and GPUs."""

from __future__ import annotations

import html
import math

import pandas as pd

from diffscale import resources, vocab
from diffscale.embed.scaling import BASELINE, SHORTEST_S, figure_lines, long_enough, shard_cap, smt_note
from diffscale.report import fmt, plots
from diffscale.report.page import (TITLES, Context, Finding, Section, across_hardware, as_int, cheapest,
                                   efficiency_cols, gpu_missing, gpus_col, on_cpus, per_unit, runs_of, superlinear,
                                   superlinear_note, tied)
from diffscale.report.tables import Col, full, short

MODALITY = {"images": ("VAE latents", vocab.ITEMS["images"]), "text": ("Text embeddings", vocab.ITEMS["text"])}

# ---- COCO filter -------------------------------------------------------------------------------
COCO_COLS = [Col("category", "step", fmt.text), Col("count", "images", fmt.integer),
             Col("fraction", "of input", fmt.percent)]


def coco_section(ctx: Context) -> Section:
    section = Section("coco", TITLES["coco"],
                      "How many images are people-centric, and who is in them?")
    frame = section.table(ctx, "coco_filter.csv", ["section", "category", "count", "fraction"])
    if frame is None:
        return section
    steps = frame[frame["section"] == "filter"]
    section.add(short(steps, COCO_COLS, "coco-filter"))
    kept = steps[steps["category"] == "kept"]
    total = steps[steps["category"] == "input images"]
    if len(kept) and len(total):
        n, of = as_int(kept["count"].iloc[0]), as_int(total["count"].iloc[0])
        section.findings.append(Finding(
            f"COCO filter: {n:,} of {of:,} images ({fmt.percent(n / of if of else math.nan)}) are people-centric "
            f"(a person in enough of their captions).", section.id, ["data/coco"]))
    figures = [ctx.existing_figure("coco", f"coco_filter_{name}.png", f"Kept images by {name}")
               for name in ("gender", "age", "group", "activities")]
    section.add('<div class="thumbs">' + "".join(figures) + "</div>")
    section.add(full(frame, "coco_filter.csv"))
    section.add(ctx.trust(["data/coco", "results/data/coco"], []))
    return section


# ---- embedding ---------------------------------------------------------------------------------
EMBED_ROLES = ["vae", "text_encoder"]
EMBED_REQUIRED = ["modality", "backend", "policy", "workers", "wall_s", "items_per_s", "speedup", "efficiency"]


def embed_cols(item: str) -> list[Col]:
    return [
        Col("label", "backend · threads", fmt.text, "pinned: one thread per worker; naive: library defaults; intraop: one process, N threads"),
        Col("workers", "workers (CPUs; GPUs for gpu)", fmt.integer),
        Col("physical_cores", "physical cores", fmt.integer,
            "the physical cores the CPUs were: fewer when SMT siblings (hyper-threads) shared cores", optional=True),
        Col("items", item, fmt.integer, "the items this run embedded: CPU scaling runs embed the first "
            "embed.scaling_images, a gpu run may embed all (compare rates, not times; the wall time, start-up "
            f"included, is items ÷ {item}/s, and in the full table)", optional=True),
        Col("speedup", "speedup", fmt.ratio, "items per second against serial on 1 CPU, 1 thread"),
        Col("efficiency", "efficiency", fmt.percent, "speedup ÷ the run's CPUs (none for gpu runs)"),
        Col("karp_flatt", "Karp–Flatt", fmt.serial_fraction, "serial fraction; growing with workers = overhead; "
            "none for a slowdown (above 1 it measures nothing)", optional=True),
        Col("compute_cost_vs_1cpu", "compute CPU time per item vs 1 CPU", fmt.ratio,
            "above 1× with pinned workers: the cores slow each other (memory bandwidth, caches, clocks)", optional=True),
        Col("items_per_s", f"{item}/s", fmt.sig),
        Col("cost_per_1k", f"$ per 1k {item}", fmt.money, "price_per_hour × shares × the whole job's time (Snakemake's "
            "benchmark of it: process start, imports, input plan, shutdown included; else the run's wall time), "
            "plus the failed tries before it (earlier_tries_s); dask on SLURM adds its worker jobs' CPU-seconds "
            "at their partition's price per CPU",
            optional=True),
    ]


def _embed_run(row) -> str:
    """The run's job name: its directory under results/, its log and benchmark names."""
    return vocab.EMBED_JOB.format(modality=row["modality"], backend=row["backend"], policy=row["policy"],
                                  workers=as_int(row["workers"]))


def embed_section(ctx: Context) -> Section:
    section = Section("embed", TITLES["embed"],
                      "Does parallel CPU preprocessing pay off, by how much, and at what cost?")
    frame = section.table(ctx, "embed_scaling.csv", EMBED_REQUIRED)
    if frame is None:
        return section
    frame["run"] = runs_of(frame, _embed_run)
    frame["label"] = [(b if b == "gpu" or (b, p) == BASELINE[:2] else f"{b} · {p}")
                      + (" (oversubscribed: fewer CPUs than named)" if over else "")
                      for b, p, over in zip(frame["backend"], frame["policy"], _oversubscribed(frame))]
    frame["cost_per_1k"] = [_cost_per_1k(ctx, row) for _, row in frame.iterrows()]
    gpu_missing(ctx, section, frame,
                "whether CPUs can replace GPUs for this preprocessing, and at what cost,")
    for modality in [m for m in MODALITY if m in set(frame["modality"])] + sorted(set(frame["modality"]) - set(MODALITY)):
        mine = frame[frame["modality"] == modality]
        title, item = MODALITY.get(modality, (modality, "items"))
        section.add(f"<h3>{html.escape(title)}</h3>")
        section.add(short(mine, embed_cols(item), f"embed-{modality}"))
        section.findings += _embed_findings(mine, title, item, section.id)
        section.add('<div class="figs">' + _speedup_plot(ctx, mine, title) + _cost_plot(ctx, mine, title, item) + "</div>")
    total = _storage_total(frame, section.id, _tiny(ctx))
    if total is not None:
        section.findings.append(total)
    section.add(_oversubscription(frame))
    section.add(full(frame.drop(columns=["label", "cost_per_1k"]), "embed_scaling.csv"))
    section.add(ctx.trust(frame["run"], EMBED_ROLES, frame))
    return section


def _cost_per_1k(ctx: Context, row) -> float | None:
    if "hw" not in row or pd.isna(row.get("hw")):
        return None
    gpu = row["backend"] == "gpu"
    workers = as_int(row["workers"], 1)
    # the whole job, as a scheduler bills it: its wall_s leaves out process start, imports, the input
    # plan and the backend's shutdown (1-2 s of a demo run, unevenly across backends); and the failed
    # tries before it, which Snakemake's benchmark (the last try's) leaves out
    seconds = ctx.held_seconds(_embed_run(row), row, fallback=row["wall_s"])
    if gpu:
        cost = ctx.prices.job(str(row["hw"]), seconds, gpus=workers)
    elif resources.dask_workers_elsewhere(row["backend"], _dask_cluster(row)):
        cost = _elsewhere_cost(ctx, row, seconds)
    else:  # a CPU scaling run w{N} asked SLURM for exactly its N CPUs (resources.scaling_cpus): bill those
        cost = ctx.prices.job(str(row["hw"]), seconds, workers=workers, cpus=as_int(row.get("cpus"), workers))
    items = fmt.number(row.get("items"))
    if cost is None:
        return None
    if items:
        return cost / items * 1000
    rate = fmt.number(row["items_per_s"])
    return cost / (rate * fmt.number(row["wall_s"])) * 1000 if rate else None  # items the run did


def _dask_cluster(row) -> str:
    """Where a dask run's workers ran; local when the table says nothing (an empty CSV cell, an older table)."""
    cluster = row.get("dask_cluster")
    return cluster if isinstance(cluster, str) and cluster else "local"


def _elsewhere_cost(ctx: Context, row, seconds: float) -> float | None:
    """A dask run whose workers ran outside its job: the submitting job as it asked SLURM
    (resources.scaling_cpus) plus its worker jobs' CPU-seconds at their partition's price. Workers
    that joined a running scheduler (cluster: address) held what diffscale cannot see: no cost."""
    held, partition = fmt.number(row.get("worker_job_cpu_s")), row.get("worker_partition")
    if held is None or not isinstance(partition, str) or not partition or "," in partition:
        return None
    own = ctx.prices.job(str(row["hw"]), seconds, workers=1, cpus=resources.scaling_cpus(
        row["backend"], as_int(row["workers"], 1), _dask_cluster(row)))
    workers = ctx.prices.cpu_seconds(partition, held)
    return None if own is None or workers is None else own + workers


def _oversubscribed(rows: pd.DataFrame) -> pd.Series:
    """Runs that named more CPUs than the machine let them use (False where the table has no column)."""
    if "oversubscribed" not in rows:
        return pd.Series(False, index=rows.index)
    return rows["oversubscribed"].astype(str).str.lower().isin(["true", "1"])


def _baseline(cpu: pd.DataFrame):
    """The 1-CPU serial run that speedups are against, or None."""
    backend, policy, workers = BASELINE
    rows = cpu[(cpu["backend"] == backend) & (cpu["policy"] == policy) & (cpu["workers"] == workers)]
    return None if rows.empty else rows.iloc[0]


def _shard_note(row) -> str:
    """' (its shards allow at most 1.5×)' where the split of items over the workers capped the
    speedup below the process count (scaling.shard_bound), else ''."""
    cap = shard_cap(row)
    return f" (its shards allow at most {fmt.ratio(cap)}: uneven shares)" if cap else ""


def _best(rows: pd.DataFrame, column: str = "items_per_s"):
    """The row with the largest `column`, or None."""
    rows = rows[rows[column].notna()]
    return None if rows.empty else rows.loc[rows[column].idxmax()]


def _cheapest(rows: pd.DataFrame, column: str):
    """The row with the smallest `column`, or None."""
    rows = rows[rows[column].notna()]
    return None if rows.empty else rows.loc[rows[column].astype(float).idxmin()]


def _embed_findings(mine: pd.DataFrame, title: str, item: str, anchor: str) -> list[Finding]:
    found = []
    cpu = mine[mine["backend"] != "gpu"]
    cpu = cpu[~_oversubscribed(cpu)]  # a run on fewer cores than its name makes no scaling claim
    parallel = cpu[cpu["backend"] != "serial"]
    if not parallel.empty:
        top = int(parallel["workers"].max())
        at_top = parallel[parallel["workers"] == top]
        pinned = _best(at_top[at_top["policy"] == "pinned"])
        naive_rows = at_top[at_top["policy"] == "naive"]
        if pinned is not None and (naive_rows["backend"] == pinned["backend"]).any():
            naive_rows = naive_rows[naive_rows["backend"] == pinned["backend"]]
        naive = _best(naive_rows)
        parts, runs = [], []
        base = _baseline(cpu)
        steady = pinned is not None and base is not None and long_enough(pinned, base, "steady")
        if pinned is not None:
            without = (f"; {fmt.ratio(pinned['steady_speedup'])} without start-up"
                       if steady and fmt.number(pinned.get("steady_speedup")) is not None else "")
            parts.append(f"pinned workers ({pinned['backend']}) {fmt.ratio(pinned['speedup'])} one CPU "
                         f"({fmt.percent(pinned['efficiency'])} efficiency{without}){smt_note(pinned)}"
                         f"{_shard_note(pinned)}")
            runs.append(pinned["run"])
        if naive is not None:
            parts.append(f"the library defaults ({naive['backend']}, naive: {naive['threads_per_worker']} threads in "
                         f"each of {top} workers) {fmt.ratio(naive['speedup'])}")
            runs.append(naive["run"])
        intraop = _best(cpu[(cpu["policy"] == "intraop") & (cpu["workers"] == top)])
        if intraop is not None:
            parts.append(f"one process × {top} threads (intraop) {fmt.ratio(intraop['speedup'])}")
            runs.append(intraop["run"])
        if pinned is not None and not steady:
            parts.append(f"steady windows under {SHORTEST_S:g} s: too short for a steady figure or for where the "
                         "time went")
        if steady and fmt.number(pinned.get("compute_cost_vs_1cpu")) is not None \
                and long_enough(pinned, base, "compute"):
            parts.append(f"each pinned worker's compute took {fmt.ratio(pinned['compute_cost_vs_1cpu'])} the CPU time "
                         f"per item it takes alone (what the cores share: memory bandwidth, caches, clocks)")
        serial = cpu[cpu["backend"] == "serial"]
        runs += list(serial["run"][:1])
        if parts:
            found.append(Finding(f"{title}, {top} CPU{'s' if top > 1 else ''}: " + "; ".join(parts) + ".", anchor, runs))
    gpu = mine[mine["backend"] == "gpu"]
    one_gpu = _best(gpu[gpu["workers"] == gpu["workers"].min()]) if not gpu.empty else None
    best_cpu = _best(cpu)
    if one_gpu is not None and best_cpu is not None:
        n = as_int(one_gpu["workers"])
        steady = _ratio(one_gpu, best_cpu, "steady_items_per_s")
        found.append(Finding(
            f"{title}: {n} GPU{'s' if n > 1 else ''} ({_setting(one_gpu, item)}) = "
            f"{fmt.ratio(_ratio(one_gpu, best_cpu, 'items_per_s'))} the best CPU run ({best_cpu['label']}, "
            f"{_workers(best_cpu)}; {_setting(best_cpu, item)}) in {item} per second end to end"
            + (f", {fmt.ratio(steady)} without start-up" if steady is not None else "") + ".", anchor,
            [one_gpu["run"], best_cpu["run"]]))
    row = _storage_row(mine)
    if row is not None:
        sizes = [f"{fmt.sig(fmt.number(row[col]) / 1024)} KiB per {unit}"
                 for col, unit in (("bytes_per_item", item[:-1]), ("bytes_per_image", "image"))
                 if fmt.number(row.get(col)) and not (col == "bytes_per_image" and item == "images")]
        tokens, per_token = fmt.number(row.get("tokens_per_caption")), fmt.number(row.get("bytes_per_token"))
        if tokens and per_token:  # ragged text: what a longer caption would add
            sizes.append(f"{fmt.sig(tokens)} real tokens per caption, {fmt.integer(per_token)} bytes each")
        images = as_int(row.get("projected_images"))
        study = f"the full people-centric study ({images:,} images)" if images else "the full study"
        found.append(Finding(f"{title}: {study} would take {fmt.sig(row['projected_full_gb'])} GB on disk with this "
                             "run's model and dtype" + (f" ({', '.join(sizes)})" if sizes else "") + ".", anchor,
                             [row["run"]]))
    costs = [(kind, _cheapest(rows, "cost_per_1k")) for kind, rows in (("CPU", cpu), ("GPU", gpu))]
    costs = [(kind, row) for kind, row in costs if row is not None]
    if costs:
        label = lambda r: f"{r['label']}, {_workers(r)}"  # noqa: E731
        found.append(Finding(
            f"{title}: cost per 1,000 {item}: " + ", ".join(
                f"{kind} {fmt.money(row['cost_per_1k'])} ({row['label']}, {_workers(row)}, {row['hw']}"
                f"{_startup_share(row)}{_full_study_time(row, item)}{tied(rows, 'cost_per_1k', row, label)})"
                for (kind, row), rows in zip(costs, [cpu if kind == "CPU" else gpu for kind, _ in costs]))
            + ".", anchor, [row["run"] for _, row in costs]))
    return found


def _full_study_time(row, item: str) -> str:
    """'; the full study's 48,000 images in 6.8 h at its steady rate' where the table projects the
    full study (text: its captions, bytes per image over bytes per caption), else ''."""
    images, rate = fmt.number(row.get("projected_images")), fmt.number(row.get("steady_items_per_s"))
    if not images or not rate:
        return ""
    per_image = 1.0
    if item != "images":
        per_item, image_bytes = fmt.number(row.get("bytes_per_item")), fmt.number(row.get("bytes_per_image"))
        if not per_item or not image_bytes:
            return ""
        per_image = image_bytes / per_item
    items = images * per_image
    count = fmt.integer(round(items, -2) if items > 1000 else items)  # captions per image is a mean
    return f"; the full study's {count} {item} in {fmt.duration(items / rate)} at its steady rate"


def _startup_share(row) -> str:
    """'; start-up 97 % of its wall time' for a cost that bills the whole job: on a small run
    start-up is most of it, and the cost per item falls as a run embeds more."""
    startup, wall = fmt.number(row.get("startup_s")), fmt.number(row.get("wall_s"))
    return f"; start-up {fmt.percent(startup / wall)} of its wall time" if startup and wall else ""


def _storage_row(mine: pd.DataFrame):
    """The run whose shards project the largest full study (all runs store the same items), or None."""
    if "projected_full_gb" not in mine.columns or not mine["projected_full_gb"].notna().any():
        return None
    return mine.loc[mine["projected_full_gb"].idxmax()]


def _tiny(ctx: Context) -> list[str]:
    """The embedding models that are the tests' `tiny` presets (narrower than any real model)."""
    models = ctx.models()
    mine = models[models["role"].isin(EMBED_ROLES)]
    return [f"{r['role']} {r['spec']}" for _, r in mine.iterrows() if str(r["spec"]).endswith(":tiny")]


def _storage_total(frame: pd.DataFrame, anchor: str, tiny: list[str]) -> Finding | None:
    """Latents and text of the full study together: what the disk quota must hold. Set beside the
    original study's 37.7 GB only when the models have a real model's width: a tiny test
    encoder's states are a fraction of CLIP's."""
    rows = {m: _storage_row(frame[frame["modality"] == m]) for m in MODALITY}
    if any(row is None for row in rows.values()):
        return None
    total = sum(float(row["projected_full_gb"]) for row in rows.values())
    against = (f"with the tiny test models ({', '.join(tiny)}), far narrower than the real ones: not comparable "
               "with the original study's 37.7 GB" if tiny else
               "the original study's text embeddings alone were a 37.7 GB pickle, over its disk quota")
    return Finding(f"Embeddings of the full study on disk, with these runs' models and dtype: latents "
                   f"{fmt.sig(rows['images']['projected_full_gb'])} GB "
                   f"+ text {fmt.sig(rows['text']['projected_full_gb'])} GB = {fmt.sig(total)} GB ({against}).",
                   anchor, [row["run"] for row in rows.values()])


def _ratio(row, other, column: str) -> float | None:
    a, b = fmt.number(row.get(column)), fmt.number(other.get(column))
    return a / b if a and b else None


def _setting(row, item: str) -> str:
    """What a rate was measured on: the hardware key, the dtype and the items embedded."""
    parts = [str(row["hw"])] if "hw" in row and pd.notna(row["hw"]) else []
    if fmt.text(row.get("dtype")) not in ("", fmt.MISSING):
        parts.append(str(row["dtype"]))
    if fmt.number(row.get("items")):
        parts.append(f"{fmt.integer(row['items'])} {item}")
    return ", ".join(parts)


def _workers(row) -> str:
    n = as_int(row["workers"], 1)
    word = "GPU" if row["backend"] == "gpu" else "worker"
    return f"{n} {word}{'s' if n != 1 else ''}"


def _speedup_plot(ctx: Context, mine: pd.DataFrame, title: str) -> str:
    """The lines of the pipeline's own scaling figure (scaling.figure_lines: no baseline, no
    oversubscribed run), end to end, without the runs that have no speedup."""
    modality = str(mine["modality"].iloc[0])
    rows = mine.assign(oversubscribed=_oversubscribed(mine)).to_dict("records")
    series: dict[str, list] = {}
    for (backend, policy), points in figure_lines(rows, modality, "speedup").items():
        points = [(float(n), float(value)) for n, value in points if fmt.number(value) is not None]
        if points:
            series["gpu (x = GPUs)" if backend == "gpu" else f"{backend} {policy}"] = points
    if not series:
        return ""
    png = plots.speedup(series, f"{title}: speedup against serial, 1 CPU", "workers (CPUs)")
    return ctx.figure("embed", f"speedup-{modality}", png,
                      f"{title}: speedup against workers, end to end; dashed = naive threads (library defaults).")


def _cost_plot(ctx: Context, mine: pd.DataFrame, title: str, item: str) -> str:
    rows = mine[mine["cost_per_1k"].notna()]
    if rows.empty or "hw" not in rows:
        return ""
    items = rows["items"] if "items" in rows else rows["items_per_s"] * rows["wall_s"]
    points = [(f"{r['label']} w{as_int(r['workers'])}", str(r["hw"]), float(r["wall_s"]) / float(n) * 1000,
               float(r["cost_per_1k"])) for (_, r), n in zip(rows.iterrows(), items)]
    png = plots.scatter(points, f"{title}: time and cost per 1,000 {item}", f"seconds per 1,000 {item}",
                        f"USD per 1,000 {item}")
    modality = str(mine["modality"].iloc[0])
    return ctx.figure("embed", f"cost-{modality}", png, f"{title}: time against cost per 1,000 {item}, one colour per "
                      "hardware key (lower left is better).")


def _oversubscription(frame: pd.DataFrame) -> str:
    """Naive against pinned at the same backend and workers: the threads each ran and the time."""
    rows = []
    for _, naive in frame[(frame["policy"] == "naive")].iterrows():
        pinned = frame[(frame["modality"] == naive["modality"]) & (frame["backend"] == naive["backend"])
                       & (frame["workers"] == naive["workers"]) & (frame["policy"] == "pinned")]
        if pinned.empty:
            continue
        pinned = pinned.iloc[0]
        if str(naive.get("threads_per_worker")) == str(pinned.get("threads_per_worker")):
            continue  # the same threads (one worker on all CPUs): nothing to explain
        cpus = naive.get("cpus", naive.get("cores"))
        threads = _threads(naive.get("threads_per_worker"))
        total = threads * as_int(naive["workers"]) if threads else None
        rows.append({"modality": naive["modality"], "backend": naive["backend"], "workers": naive["workers"],
                     "naive_threads": naive.get("threads_per_worker"), "pinned_threads": pinned.get("threads_per_worker"),
                     "cpus": cpus, "threads_per_cpu": total / fmt.number(cpus) if total and fmt.number(cpus) else None,
                     "oversubscribed": naive.get("oversubscribed"),
                     "time_ratio": naive["wall_s"] / pinned["wall_s"]})
    if not rows:
        return ""
    table = pd.DataFrame(rows)
    worst = table.loc[table["time_ratio"].idxmax()]
    cols = [Col("modality", "modality", fmt.text), Col("backend", "backend", fmt.text),
            Col("workers", "workers", fmt.integer), Col("naive_threads", "threads/worker, naive", str),
            Col("pinned_threads", "threads/worker, pinned", str), Col("cpus", "CPUs", fmt.integer, optional=True),
            Col("threads_per_cpu", "naive threads per CPU", lambda v: fmt.sig(v, 2), optional=True),
            Col("oversubscribed", "oversubscribed", fmt.yes_no, optional=True),
            Col("time_ratio", "naive ÷ pinned time", fmt.ratio)]
    return ("<h3>Why “more CPUs” can be slower: naive against pinned threads</h3>"
            "<p>Naive workers keep each library's default thread count (one thread per CPU of the job), "
            "so <i>N</i> workers run <i>N</i> × that many threads on the same CPUs and contend for them; pinned "
            "workers get an equal share of the CPUs. Same backend, same workers, only the threads differ: "
            f"the largest slowdown here is {fmt.ratio(worst['time_ratio'])} ({worst['backend']}, "
            f"{as_int(worst['workers'])} workers, {worst['modality']}).</p>"
            + short(table, cols, "embed-oversubscription"))


def _threads(value) -> int | None:
    """threads_per_worker as written by the table: '2', or '2/1' when workers differed (max)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        return max(int(float(v)) for v in str(value).split("/"))
    except ValueError:
        return None


# ---- U-Net training ----------------------------------------------------------------------------
TRAIN_REQUIRED = ["hw", "precision", "gpus", "samples_per_s", "speedup", "efficiency", "final_loss"]


def train_cols(random: bool) -> list[Col]:
    return [
        Col("hw", "hardware", fmt.text), Col("precision", "precision", fmt.text),
        gpus_col(),
        Col("samples_per_s", "samples/s", fmt.sig, "steady state, after warm-up"),
        Col("speedup", "speedup", fmt.ratio, "against 1 GPU, same hardware and precision"),
        *efficiency_cols(),
        Col("mfu", "MFU", fmt.percent, "model FLOPs utilisation", optional=True),
        Col("final_loss", "final loss" + (" (random weights: timing only)" if random else ""), lambda v: fmt.sig(v, 4)),
        Col("job_s", "job time", fmt.duration, "the whole job, start-up and sampling included, with its earlier "
            "tries (earlier_tries_s); a resumed run whose tries were not all recorded: its invocations' sum to "
            "their last checkpoints (a lower bound)", optional=True),
        Col("cost_per_1k_steps", "$ per 1k steps", fmt.money, "whole job, start-up included, with its earlier "
            "tries, failed or stopped (earlier_tries_s); at least that for a resumed run whose tries were not all "
            "recorded: every segment from its process's start to its last checkpoint (job_time_whole false)",
            optional=True),
    ]


def _train_run(row) -> str:
    """The run's job name: its directory under results/, its log and benchmark names."""
    return vocab.TRAIN_JOB.format(hw=row["hw"], precision=row["precision"], gpus=as_int(row["gpus"]))


def train_section(ctx: Context) -> Section:
    section = Section("train", TITLES["train"],
                      "How fast does the U-Net train per hardware, precision and GPU count, and at what cost?")
    frame = section.table(ctx, "train_unet.csv", TRAIN_REQUIRED)
    if frame is None:
        return section
    frame["run"] = runs_of(frame, _train_run)
    gpu_missing(ctx, section, frame, "U-Net training on GPUs (speed, mixed precision on tensor cores, several GPUs)")
    frame["job_s"] = [_train_job_seconds(ctx, r) for _, r in frame.iterrows()]
    frame["cost_per_1k_steps"] = [
        _per_1k(ctx.prices.job(str(r["hw"]), r["job_s"], gpus=as_int(r["gpus"]), workers=as_int(r["gpus"], 1)),
                r.get("steps")) for _, r in frame.iterrows()]
    random = ctx.random_weights(frame, EMBED_ROLES)
    section.add(short(frame, train_cols(random), "train-unet"))
    accumulated = _accumulation(frame)
    if accumulated:
        section.notice(f"Every run trains on the same global batch of {as_int(frame['global_batch'].iloc[0])}; "
                       f"these take it in several micro-batches per device and step: {accumulated} "
                       "(grad_accum, for memory; the others take it in one).")
    # samples per device per step: the global batch's share, whatever micro-batches it is taken in
    per_device = (frame["global_batch"] / frame["gpus"] if "global_batch" in frame.columns
                  else frame["micro_batch"] if "micro_batch" in frame.columns else None)
    section.add(superlinear(frame, "gpus", ["hw", "precision"], per_device, "samples per device per step"))
    section.findings += _train_findings(ctx, frame, section.id)
    bars = plots.bars([f"{r['hw']} {r['precision']} g{as_int(r['gpus'])}" for _, r in frame.iterrows()],
                      list(frame["samples_per_s"].astype(float)), "U-Net training throughput", "samples/s")
    section.add('<div class="figs">'
                + ctx.figure("train", "throughput", bars, "Training throughput per run (steady state).")
                + ctx.existing_figure("train", "train_unet_loss.png", "Training loss per run.",
                                      "random weights: timing only" if random else "")
                + "</div>")
    section.add(ctx.existing_figure("train", "train_unet_samples.png", "Samples of each run, fixed prompts and seed.",
                                    "random weights: timing only" if random else "", single=True))
    section.add(full(frame.drop(columns=["job_s", "cost_per_1k_steps"]), "train_unet.csv"))
    section.add(ctx.trust(frame["run"], ["unet", "vae", "text_encoder"], frame))
    return section


def _accumulation(frame) -> str:
    """'a40 g1: 2 x 128, k80 g1: 16 x 16' for the runs that accumulate micro-batches, else ''."""
    if not {"global_batch", "micro_batch"} <= set(frame.columns):
        return ""
    seen = {}
    for _, r in frame.iterrows():
        gpus, micro = as_int(r["gpus"], 1), as_int(r["micro_batch"])
        accum = as_int(r["global_batch"]) // max(1, gpus * micro) if micro else 1
        if accum > 1:
            seen.setdefault(f"{r['hw']} g{gpus}: {accum} x {micro}", None)
    return ", ".join(seen)


def _train_job_seconds(ctx: Context, row) -> float | None:
    """The seconds a training run held its hardware (Context.held_seconds)."""
    return ctx.held_seconds(_train_run(row), row, fallback=row.get("train_time_s"))


def _per_1k(cost: float | None, steps) -> float | None:
    n = fmt.number(steps)
    return cost / n * 1000 if cost is not None and n else None


def _precision(row) -> str:
    """A run's precision as a finding names it: fp32 says whether TF32 tensor cores were allowed."""
    if row["precision"] == "fp32" and str(row.get("tf32")).lower() == "true":
        return "fp32 (TF32 where the GPU has it)"
    return str(row["precision"])


def _train_findings(ctx: Context, frame: pd.DataFrame, anchor: str) -> list[Finding]:
    found = []
    best = _best(frame, "samples_per_s")
    if best is not None:
        found.append(Finding(f"U-Net training: fastest run {best['hw']} {best['precision']} on "
                             f"{ctx.devices(best['hw'], best['gpus'])}, {fmt.sig(best['samples_per_s'])} samples/s.", anchor,
                             [best["run"]]))
    one = frame[frame["gpus"] == 1]
    if compared := across_hardware(one, "samples_per_s", ["precision"],
                                   lambda r: f"{_precision(r)} on {ctx.devices(r['hw'], 1)}",
                                   ("cost_per_1k_steps", "per 1,000 steps")):
        text, runs = compared
        found.append(Finding("U-Net training across hardware, samples/s and $ per 1,000 steps (start-up included): "
                             f"{text}.", anchor, runs))
    multi = frame[frame["gpus"] > 1]
    for hw, on_hw in multi.groupby("hw", sort=False):  # each precision at its most GPUs on this hardware
        tops = [rows.loc[rows["gpus"].idxmax()] for _, rows in on_hw.groupby("precision", sort=False)]
        found.append(Finding(
            f"U-Net training on {hw}: " + "; ".join(
                f"{top['precision']} on {ctx.devices(hw, top['gpus'])}{on_cpus(top)} {fmt.ratio(top['speedup'])} one "
                f"({fmt.percent(top['efficiency'])} efficiency {per_unit(ctx, top)})"
                f"{superlinear_note(top['speedup'], top['gpus'])}"
                for top in tops) + ".", anchor, [top["run"] for top in tops]))
    for hw in dict.fromkeys(one["hw"]):
        fp32 = one[(one["hw"] == hw) & (one["precision"] == "fp32")]
        low = one[(one["hw"] == hw) & (one["precision"] != "fp32")]
        if not fp32.empty and not low.empty:
            base = fp32["samples_per_s"].iloc[0]
            ratios = "; ".join(f"{row['precision']} runs at {fmt.ratio(row['samples_per_s'] / base)}"
                               for _, row in low.iterrows())
            found.append(Finding(f"U-Net training on {hw}, {ctx.devices(hw, 1)}: {ratios} the "
                                 f"{_precision(fp32.iloc[0])} throughput.",
                                 anchor, [fp32["run"].iloc[0], *low["run"]]))
    if picked := cheapest(frame, "cost_per_1k_steps"):
        cheap, bound = picked
        label = lambda r: f"{r['hw']} {r['precision']} on {ctx.devices(r['hw'], r['gpus'])}"  # noqa: E731
        found.append(Finding(f"U-Net training: cheapest {bound}{fmt.money(cheap['cost_per_1k_steps'])} per 1,000 steps "
                             f"({cheap['hw']} {cheap['precision']}, {ctx.devices(cheap['hw'], cheap['gpus'])}, "
                             f"start-up included{tied(frame, 'cost_per_1k_steps', cheap, label)}).",
                             anchor, [cheap["run"]]))
    return found
