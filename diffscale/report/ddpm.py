"""Study 3 in the report: CIFAR-10 DDPM training optimisations, one factor at a time — where the
time goes (profiler top-10), batch × GPUs, mixed precision, data-loader workers, torch.compile with
its break-even, and our loop against a peer implementation.

Tables (the study/report contract, results/bench/): ddpm_profile.csv, ddpm_batch.csv,
ddpm_amp.csv, ddpm_workers.csv, ddpm_compile.csv, ddpm_peer.csv.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

from diffscale.report import fmt, plots
from diffscale.report.contract import STUDY_FILES
from diffscale.report.page import (TIE, TITLES, Context, Finding, Section, across_hardware, as_int, efficiency_cols,
                                   gpu_missing, gpus_col, on_cpus, pair, part_table, per_unit, superlinear,
                                   superlinear_note)
from diffscale.report.tables import Col, TableProblem, full, short

ROLES = ["ddpm_unet"]
TABLES = [name for name in STUDY_FILES["ddpm"] if name.endswith(".csv")]
COMMON = ["hw", "gpus", "batch", "global_batch", "precision", "workers", "compile", "steps_per_s", "images_per_s",
          "time_to_first_step_s", "loss_end"]
PROFILE_REQUIRED = ["sort_by", "rank", "op", "calls", "self_ms", "total_ms", "pct"]
ms = lambda v: fmt.sig(None if fmt.number(v) is None else fmt.number(v) * 1000)  # noqa: E731  seconds → ms


def section(ctx: Context) -> Section:
    out = Section("ddpm", TITLES["ddpm"],
                  "Which optimisation pays off: batch size and GPUs, mixed precision, loader workers, compile?")
    if not any((ctx.bench / name).is_file() for name in TABLES):
        out.ran = False
        out.notice(f"Not run: none of {', '.join(TABLES)} found.")
        return out
    runs: list[str] = []
    noise = repeats(ctx)  # read once: the sweeps' findings each weigh their ratio against it
    out.add(_repeat_note(noise))
    frames = []
    for part in (_profile, _batch, _amp, _workers, _compile, _peer):
        html_part, frame = part(ctx, out, noise)
        out.add(html_part)
        if frame is not None and "run" in frame.columns:
            runs += [str(r) for r in frame["run"].dropna()]
            frames.append(frame)
    gpu_missing(ctx, out, pd.concat(frames) if frames else pd.DataFrame(),
                "what the optimisations give on GPUs (mixed precision on tensor cores, compile, several GPUs)")
    out.add(ctx.trust(runs, ROLES))
    return out


# ---- run-to-run noise --------------------------------------------------------------------------
# A run's settings, as every sweep's table gives them; two runs that agree on all of these (the
# baseline, which several sweeps share, and the peer race's "ours") measure the same thing twice.
SAME = ["hw", "gpus", "batch", "precision", "workers", "compile"]
SAME_IF_PRESENT = ["compile_backend", "channels_last", "decode_each_step", "window_steps", "warmup_steps"]


@dataclass
class Repeat:
    spread: float  # the faster run's images/s over the slower's
    runs: list[str]  # the faster run, the slower run


def repeats(ctx: Context) -> dict[str, Repeat]:
    """Per hardware, the widest gap between two runs of the same settings across the sweeps'
    tables: the run-to-run noise that a comparison of one run against another there cannot beat."""
    frames = []
    for name in TABLES:
        try:
            frame = ctx.table(name, SAME + ["images_per_s", "run"])
        except TableProblem:
            continue  # the profile's table, or a sweep that has not run
        frames.append(frame[frame["impl"] == "ours"] if "impl" in frame.columns else frame)
    if not frames:
        return {}
    keys = SAME + [k for k in SAME_IF_PRESENT if all(k in f.columns for f in frames)]
    rows = pd.concat([f[keys + ["images_per_s", "run"]] for f in frames])
    rows = rows[rows["images_per_s"].map(fmt.number).notna()].drop_duplicates("run").reset_index(drop=True)
    found: dict[str, Repeat] = {}
    for key, group in rows.groupby(keys, dropna=False):
        rates = group["images_per_s"].astype(float)
        if len(group) < 2 or rates.min() <= 0:
            continue
        spread, hw = float(rates.max() / rates.min()), str(key[0])
        if hw not in found or spread > found[hw].spread:
            order = group.assign(rate=rates).sort_values("rate", kind="stable")  # two runs, even when all tie
            found[hw] = Repeat(spread, [str(order["run"].iloc[-1]), str(order["run"].iloc[0])])
    return found


def _repeat_note(found: dict[str, Repeat]) -> str:
    notes = [f"Run-to-run noise{f' on {hw}' if len(found) > 1 else ''}: two runs of the same settings ({r.runs[0]}, "
             f"{r.runs[1]}) differ by {fmt.percent(r.spread - 1)} in images/s. A finding whose ratio lies within that "
             "says so: one run of each setting cannot resolve it." for hw, r in found.items()]
    return "".join(f'<p class="warn">{html.escape(n)}</p>' for n in notes)


def unresolved(ratio, hw, found: dict[str, Repeat]) -> str:
    """' (within the run-to-run noise, 4.9 %: not resolved)' for a speed ratio no further from 1 than
    two runs of the same settings on `hw` were from each other, else ''."""
    r, x = found.get(str(hw)), fmt.number(ratio)
    if r is None or x is None or x <= 0 or r.spread <= 1 or max(x, 1 / x) > r.spread:
        return ""
    return f" (within the run-to-run noise, {fmt.percent(r.spread - 1)}: not resolved)"  # 1.049x reads 1.0x


IMAGES_PRICED = 1_000_000


def _cost_per_1m_images(ctx: Context, frame: pd.DataFrame) -> list[float | None]:
    """A job that trains on a million images: its start-up (time to first step) billed once, then
    steady steps. Per image, not per step: a step's global batch grows with the GPUs here."""
    found = []
    for _, row in frame.iterrows():
        rate = fmt.number(row["images_per_s"])
        first = fmt.number(row["time_to_first_step_s"]) or 0.0
        found.append(ctx.prices.job(str(row["hw"]), first + IMAGES_PRICED / rate, gpus=as_int(row["gpus"]))
                     if rate else None)
    return found


NOISY_SPREAD = 1.25  # slowest over fastest timed block; a steady window stays well under it


def _noisy(frame: pd.DataFrame) -> str:
    """A warning under a table for every window whose timed blocks disagreed (another job on the
    node, clock changes): its median block is still what the table shows."""
    if "block_spread" not in frame.columns:
        return ""
    notes = []
    for _, row in frame.iterrows():
        spread = fmt.number(row["block_spread"])
        if spread is not None and spread > NOISY_SPREAD:
            notes.append(f"Noisy window flagged: {row.get('run', '?')}: its slowest timed block took "
                         f"{fmt.ratio(spread)} its fastest (above {NOISY_SPREAD:g}×); the table shows "
                         "the median block, but re-run it before trusting the comparison.")
    return "".join(f'<p class="warn">{html.escape(n)}</p>' for n in notes)


def _runs(frame: pd.DataFrame, index=None) -> list[str]:
    if "run" not in frame.columns:
        return []
    return [str(frame.loc[index, "run"])] if index is not None else [str(r) for r in frame["run"]]


def _hw_col(frame: pd.DataFrame) -> list[Col]:
    """A hardware column, where the table has more than one hardware key."""
    return [Col("hw", "hardware", fmt.text)] if frame["hw"].nunique() > 1 else []


def _loss_col(ctx: Context, frame: pd.DataFrame) -> Col:
    random = ctx.random_weights(frame, ROLES)
    return Col("loss_end", "final loss" + (" (random weights: timing only)" if random else ""), lambda v: fmt.sig(v, 4))


def _profile(ctx: Context, out: Section, noise: dict[str, Repeat]):
    frame = part_table(ctx, out, "ddpm_profile.csv", PROFILE_REQUIRED, "Profile")
    if frame is None:
        return "", None
    parts = ["<h3>Where a training step's time goes (profiler, top 10)</h3>"]
    cols = [Col("rank", "#", fmt.integer), Col("op", "operator", fmt.text), Col("calls", "calls", fmt.integer),
            Col("self_ms", "self (ms)", fmt.sig), Col("total_ms", "total (ms)", fmt.sig),
            Col("pct", "% of time", lambda v: f"{fmt.sig(v, 3)} %")]
    keys = ["hw", "sort_by"] if "hw" in frame.columns else ["sort_by"]
    groups = sorted(frame.groupby(keys, sort=False), key=lambda g: (g[0][:-1], g[0][-1] != "device"))
    for key, rows in groups:
        sort_by = key[-1]
        top = rows.sort_values("rank").head(10)
        hw = f" on {key[0]}" if len(key) > 1 else ""
        name = f"profile-{sort_by}" + (f"-{key[0]}" if len(key) > 1 and frame["hw"].nunique() > 1 else "")
        figure = ctx.figure("ddpm", name,
                            plots.barh(list(top["op"]), list(top["self_ms"]), f"Top operators by {sort_by} time",
                                       "self time (ms)"),
                            f"Profiler top 10 operators by {sort_by} self time.")
        parts.append(pair(short(top, cols, f"ddpm-{name}", f"sorted by {sort_by} time{hw}"), figure))
        first = top.iloc[0]
        out.findings.append(Finding(f"DDPM profile{hw}: the top operator by {sort_by} time is {first['op']} "
                                    f"({fmt.sig(first['pct'])} % of {sort_by} time).", out.id, _runs(top)[:1]))
    parts.append(full(frame, "ddpm_profile.csv"))
    return "".join(parts), frame


def _batch(ctx: Context, out: Section, noise: dict[str, Repeat]):
    frame = part_table(ctx, out, "ddpm_batch.csv", COMMON + ["speedup", "efficiency"], "Batch size × GPUs")
    if frame is None:
        return "", None
    frame = frame.copy()
    frame["cost"] = _cost_per_1m_images(ctx, frame)
    cols = _hw_col(frame) + [gpus_col(), Col("batch", "batch per device", fmt.integer),
            Col("global_batch", "global batch", fmt.integer), Col("images_per_s", "images/s", fmt.sig),
            Col("speedup", "speedup", fmt.ratio, "images/s against 1 GPU, same per-device batch"),
            *efficiency_cols(),
            Col("cost", "$ per 1M images", fmt.money, "start-up billed once, then a million training images at "
                "this rate (the global batch grows with the GPUs, so not per step)", optional=True)]
    several = frame["hw"].nunique() > 1
    series = {(f"{key[0]} " if several else "") + f"batch {key[1]}/device": (list(rows["gpus"]), list(rows["images_per_s"]))
              for key, rows in frame.sort_values("gpus").groupby(["hw", "batch"])}
    png = plots.lines(series, "DDPM throughput: batch size × GPUs", "GPUs", "images/s", marker="o")
    best = frame["images_per_s"].idxmax()
    row = frame.loc[best]
    several_devices = as_int(row["gpus"]) > 1  # a 1-device run's 1.0x compares nothing
    note = unresolved(row["speedup"], row["hw"], noise) if several_devices else ""
    on_hw = f" on {row['hw']}" if frame["hw"].nunique() > 1 else ""
    out.findings.append(Finding(f"DDPM: most images/s{on_hw} ({fmt.sig(row['images_per_s'])}) with "
                                f"{ctx.devices(row['hw'], row['gpus'])}{on_cpus(row)} × batch {as_int(row['batch'])} "
                                f"per device ({fmt.ratio(row['speedup'])} {ctx.devices(row['hw'], 1)}, "
                                f"{fmt.percent(row['efficiency'])} efficiency {per_unit(ctx, row)})"
                                f"{superlinear_note(row['speedup'], row['gpus'])}{note}.", out.id,
                                _runs(frame, best)))
    one = frame[frame["gpus"] == 1]
    if compared := across_hardware(one, "images_per_s", ["batch"],
                                   lambda r: f"batch {as_int(r['batch'])} on {ctx.devices(r['hw'], 1)}",
                                   ("cost", "per 1M images")):
        text, runs = compared
        row = one.iloc[0]
        out.findings.append(Finding(f"DDPM across hardware, images/s and $ per 1M images ({row['precision']}, "
                                    f"{as_int(row['workers'])} loader workers, eager): {text}.", out.id, runs))
    return ("<h3>Batch size × GPUs</h3>"
            + pair(short(frame, cols, "ddpm-batch") + _noisy(frame)
                   + superlinear(frame, "gpus", ["hw", "batch"], frame["batch"], "images per device per step"),
                   ctx.figure("ddpm", "batch", png, "Images/s against GPUs, one line per per-device batch."))
            + full(frame.drop(columns=["cost"]), "ddpm_batch.csv")), frame


REFERENCE_WORDS = {"tf32": "tf32 (fp32 on TF32 tensor cores)", "fp32": "fp32 (TF32 off)"}


def _amp(ctx: Context, out: Section, noise: dict[str, Repeat]):
    frame = part_table(ctx, out, "ddpm_amp.csv", COMMON, "Mixed precision")
    if frame is None:
        return "", None
    cols = _hw_col(frame) + [Col("precision", "precision", fmt.text), Col("images_per_s", "images/s", fmt.sig),
            Col("vs_baseline", "vs reference", fmt.ratio, "images/s against the reference precision of the same "
                "hardware (tf32 where it ran, else fp32)", optional=True),
            Col("peak_mem_mb", "peak memory (MB)", fmt.integer, optional=True), _loss_col(ctx, frame)]
    png = plots.bars(list(frame["precision"]), list(frame["images_per_s"].astype(float)),
                     "DDPM throughput by precision", "images/s")
    if {"vs_baseline", "baseline_precision"} <= set(frame.columns):
        several = frame["hw"].nunique() > 1
        for hw, rows in frame.groupby("hw"):  # each hardware against its own reference
            others = rows[(rows["precision"] != rows["baseline_precision"]) & rows["vs_baseline"].notna()]
            if others.empty:
                continue
            best = others["vs_baseline"].astype(float).idxmax()
            row = frame.loc[best]
            reference = REFERENCE_WORDS.get(str(row["baseline_precision"]), str(row["baseline_precision"]))
            out.findings.append(Finding(f"DDPM{f' on {hw}' if several else ''}: {row['precision']} trains at "
                                        f"{fmt.ratio(row['vs_baseline'])} the {reference} throughput"
                                        f"{unresolved(row['vs_baseline'], hw, noise)}.", out.id,
                                        _runs(frame, best)))
    return ("<h3>Mixed precision</h3>"
            + pair(short(frame, cols, "ddpm-amp") + _noisy(frame), ctx.figure("ddpm", "amp", png, "Images/s per precision."))
            + full(frame, "ddpm_amp.csv")), frame


def _workers(ctx: Context, out: Section, noise: dict[str, Repeat]):
    frame = part_table(ctx, out, "ddpm_workers.csv", COMMON + ["data_wait_s_per_step", "data_wait_frac"],
                       "Loader workers")
    if frame is None:
        return "", None
    frame = frame.sort_values("workers")
    cols = _hw_col(frame) + [Col("workers", "loader workers", fmt.integer), Col("images_per_s", "images/s", fmt.sig),
            Col("data_wait_s_per_step", "data wait per step (ms)", ms),
            Col("data_wait_frac", "time waiting for data", fmt.percent)]
    png = plots.bars([str(as_int(w)) for w in frame["workers"]], list(frame["data_wait_frac"].astype(float) * 100),
                     "DDPM: time waiting for data by loader workers", "% of step time", " %")
    several = frame["hw"].nunique() > 1
    for hw, rows in frame.groupby("hw"):  # worker counts compared on the same hardware only
        out.findings.append(Finding(_workers_finding(rows, f" on {hw}" if several else "", noise), out.id,
                                    _runs(rows)))
    return ("<h3>Data-loader workers</h3>"
            + pair(short(frame, cols, "ddpm-workers") + _noisy(frame),
                   ctx.figure("ddpm", "workers", png, "Share of step time spent waiting for data."))
            + full(frame, "ddpm_workers.csv")), frame


def _workers_finding(frame: pd.DataFrame, where: str, found: dict[str, Repeat]) -> str:
    """On one hardware: the fastest worker count against the fewest (the first row), by images/s,
    and what each waits for data; or that more workers did not help."""
    first, best = frame.iloc[0], frame.loc[frame["images_per_s"].astype(float).idxmax()]
    ratio = float(best["images_per_s"]) / float(first["images_per_s"]) if float(first["images_per_s"]) else None
    wait = lambda row: f"{fmt.percent(row['data_wait_frac'])} of each step"  # noqa: E731
    if as_int(best["workers"]) == as_int(first["workers"]):
        return (f"DDPM{where}: more loader workers did not speed training up: {as_int(first['workers'])} workers were "
                f"fastest ({fmt.sig(first['images_per_s'])} images/s, waiting {wait(first)} for data).")
    # the fewest workers within the noise (at least TIE) of the best: what a run needs, not what won by a hair
    repeat = found.get(str(best["hw"]))
    margin = max(TIE, repeat.spread - 1 if repeat else 0.0)
    enough = frame[frame["images_per_s"].astype(float) >= float(best["images_per_s"]) / (1 + margin)].iloc[0]
    suffice = (f"; {as_int(enough['workers'])} workers come within {fmt.percent(margin)} of it "
               f"({fmt.sig(enough['images_per_s'])})" if as_int(enough["workers"]) < as_int(best["workers"]) else "")
    return (f"DDPM{where}: {as_int(best['workers'])} loader workers train at {fmt.sig(best['images_per_s'])} images/s, "
            f"{fmt.ratio(ratio)} {as_int(first['workers'])} workers' {fmt.sig(first['images_per_s'])}"
            f"{unresolved(ratio, best['hw'], found)}{suffice}; they wait {wait(best)} for "
            f"data ({as_int(first['workers'])} workers: {wait(first)}).")


def _compile(ctx: Context, out: Section, noise: dict[str, Repeat]):
    required = COMMON + ["compile_s", "saving_per_step_s", "break_even_steps", "run_steps"]
    frame = part_table(ctx, out, "ddpm_compile.csv", required, "torch.compile")
    if frame is None:
        return "", None
    frame = frame.copy()
    added = [] if "pays_off" in frame.columns else ["pays_off"]
    if added:  # the study's verdict when it gives one, else break-even ≤ run steps
        frame["pays_off"] = [("yes" if fmt.number(b) is not None and fmt.number(r) is not None and b <= r else "no")
                             if str(c) != "off" else "–"
                             for b, r, c in zip(frame["break_even_steps"], frame["run_steps"], frame["compile"])]
    cols = _hw_col(frame) + [
        Col("compile", "compile mode", fmt.text), Col("compile_s", "compile time (s)", fmt.seconds),
        Col("saving_per_step_s", "saved per step (ms)", ms), Col("break_even_steps", "break-even (steps)", fmt.integer),
        Col("run_steps", "training run (steps, set)", fmt.integer, "ddpm.train_steps: the run length the break-even "
            "is judged against, from the config, not measured"),
        Col("pays_off", "pays off", fmt.text)]
    several = frame["hw"].nunique() > 1
    rows = []
    for _, row in frame.iterrows():
        per_step = 1 / float(row["steps_per_s"])
        label = f"{row['hw']} {row['compile']}" if several else str(row["compile"])
        rows.append((label, fmt.number(row["compile_s"]) or 0.0, per_step,
                     fmt.number(row["break_even_steps"]) if str(row["compile"]) != "off" else None))
    horizon = max([fmt.number(v) or 0 for v in list(frame["break_even_steps"]) + list(frame["run_steps"])] + [1])
    png = plots.break_even(rows, "torch.compile: cumulative time and break-even", horizon * 1.2)
    for hw, on_hw in frame.groupby("hw"):  # every mode, on the hardware it was compared on
        compiled = on_hw[on_hw["compile"].astype(str) != "off"]
        if compiled.empty:
            continue
        eager = on_hw[on_hw["compile"].astype(str) == "off"]["steps_per_s"].map(fmt.number).dropna()
        eager = eager[eager > 0]
        verdicts = "; ".join(_compile_verdict(row) + (unresolved(float(row["steps_per_s"]) / eager.iloc[0], hw, noise)
                                                      if not eager.empty else "")
                             for _, row in compiled.iterrows())
        out.findings.append(Finding(
            f"DDPM{f' on {hw}' if several else ''}: torch.compile against eager, over a training run of "
            f"{fmt.integer(compiled['run_steps'].iloc[0])} steps: {verdicts}.", out.id, _runs(compiled)))
    return ("<h3>torch.compile</h3>"
            + pair(short(frame, cols, "ddpm-compile") + _noisy(frame),
                   ctx.figure("ddpm", "compile", png, "Cumulative training time: eager against compiled, with break-even."))
            + full(frame.drop(columns=added), "ddpm_compile.csv")), frame


def _net_saving(row, saving: float) -> str:
    """', 2.4 h (33 %) less over the run': per-step saving × the run's steps, less the compile, and
    its share of the eager run's time (an eager step is the compiled one plus the saving)."""
    steps, rate = fmt.number(row.get("run_steps")), fmt.number(row.get("steps_per_s"))
    if not steps or not rate:
        return ""
    net = saving * steps - (fmt.number(row["compile_s"]) or 0.0)
    eager_s = steps * (1 / rate + saving)
    return f", {fmt.duration(net)} ({fmt.percent(net / eager_s)}) less over the run"


def _compile_verdict(row) -> str:
    """One compile mode's verdict, as the table's pays_off column gives it."""
    saving, mode = fmt.number(row["saving_per_step_s"]), row["compile"]
    cost = f"compiles in {fmt.seconds(row['compile_s'])} s"
    if saving is None and str(row["pays_off"]) == "baseline":  # the sweep had no eager run on this hardware
        return f"{mode} {cost}; no eager run on this hardware to compare it with"
    if saving is None or saving <= 0:  # a compiled step no faster than eager never repays its compile time
        how = ("has no measured per-step saving" if saving is None else "saves nothing per step" if saving == 0
               else f"runs {ms(-saving)} ms per step slower")
        return f"{mode} {cost} and {how}: it never pays off"
    if str(row["pays_off"]) == "yes":
        return (f"{mode} {cost}, saves {ms(saving)} ms per step and pays off after "
                f"{fmt.integer(row['break_even_steps'])} steps{_net_saving(row, saving)}")
    return (f"{mode} {cost} and saves {ms(saving)} ms per step, but would pay off only after "
            f"{fmt.integer(row['break_even_steps'])} steps: not within the run")


def _peer(ctx: Context, out: Section, noise: dict[str, Repeat]):
    frame = part_table(ctx, out, "ddpm_peer.csv", COMMON + ["impl", "ratio_to_peer", "settings", "status"],
                       "Peer implementation")
    if frame is None:
        return "", None
    cols = _hw_col(frame) + [Col("impl", "implementation", fmt.text), Col("settings", "settings", fmt.text),
            Col("images_per_s", "images/s", fmt.sig), Col("ratio_to_peer", "ours ÷ peer", fmt.ratio),
            Col("status", "status", fmt.text)]
    ours = frame[(frame["impl"] == "ours") & frame["ratio_to_peer"].map(fmt.number).notna()]
    several = frame["hw"].nunique() > 1
    for hw, on_hw in ours.groupby("hw"):  # every compared variant, named: the ratio depends on it
        ratios = "; ".join(f"{fmt.ratio(row['ratio_to_peer'])} at {row['precision']}, compile {row['compile']}"
                           for _, row in on_hw.iterrows())
        out.findings.append(Finding(f"DDPM{f' on {hw}' if several else ''}: our loop's images/s against the peer "
                                    f"implementation's, each at the same settings: {ratios}.", out.id, _runs(on_hw)))
    return "<h3>Against a peer implementation</h3>" + short(frame, cols, "ddpm-peer") + full(frame, "ddpm_peer.csv"), \
        frame
