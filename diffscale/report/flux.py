"""Study 2 in the report: FLUX.1-schnell LoRA fine-tuning across hardware and GPU counts (speed,
cost per fine-tune, loss, quality per checkpoint) and inference by phase.

Tables (the study/report contract, results/bench/): flux_train.csv, flux_loss.csv,
flux_quality.csv, flux_infer.csv, flux_samples.png.
"""

from __future__ import annotations

import pandas as pd

from diffscale import vocab
from diffscale.report import fmt, plots
from diffscale.report.page import (TITLES, Context, Finding, Section, across_hardware, as_int, cheapest,
                                   efficiency_cols, gpu_missing, gpus_col, on_cpus, pair, part_table, per_unit,
                                   quality_tag, runs_of, superlinear, superlinear_note, tied)
from diffscale.report.tables import Col, full, short

ROLES = ["flux_transformer", "flux_vae", "flux_clip", "flux_t5"]
TRAIN_REQUIRED = ["hw", "gpus", "steps", "steps_per_s", "images_per_s", "speedup", "efficiency", "train_s", "total_s",
                  "final_loss"]
QUALITY_REQUIRED = ["checkpoint_step", "psnr", "ssim"]
INFER_REQUIRED = ["model", "batch_size", "load_s", "text_s", "denoise_s", "decode_s", "first_image_s", "images_per_s"]
PHASES = [("load_s", "load"), ("text_s", "text encoders"), ("denoise_s", "denoise"), ("decode_s", "VAE decode")]


def train_cols(random: bool) -> list[Col]:
    return [
        Col("hw", "hardware", fmt.text), gpus_col(), Col("steps", "steps", fmt.integer),
        Col("steps_per_s", "steps/s", fmt.sig, "steady, training phase only"),
        Col("speedup", "speedup", fmt.ratio, "against 1 GPU, same hardware and steps"),
        *efficiency_cols(),
        Col("mfu", "MFU", fmt.percent, "model FLOPs utilisation (a counted forward and backward per sample)",
            optional=True),
        Col("job_s", "job time", fmt.duration, "the whole job: Snakemake's benchmark of its last try (interpreter, "
            "imports, process start-up, set-up, caching, training, sampling, saving; else the timed phases' sum) plus "
            "its earlier tries, failed or stopped (earlier_tries_s); a resumed run whose tries were not all recorded: "
            "its invocations' sum to their last checkpoints (job_time_s, a lower bound)"),
        Col("cost", "$ per fine-tune", fmt.money, "the whole job time; at least that for a resumed run whose tries "
            "were not all recorded (job_time_whole false)", optional=True),
        Col("final_loss", "final loss" + (" (random weights: timing only)" if random else ""), lambda v: fmt.sig(v, 4)),
    ]


def _run(row) -> str:
    return vocab.FLUX_RUN.format(hw=row["hw"], gpus=as_int(row["gpus"]), steps=as_int(row["steps"]))


def _job_seconds(ctx: Context, row) -> float | None:
    """The seconds a fine-tune held its hardware (Context.held_seconds): the timed phases miss the
    interpreter, imports and process start-up, so they are only the fallback of a run made by hand."""
    job = vocab.FLUX_JOB.format(hw=row["hw"], gpus=as_int(row["gpus"]), steps=as_int(row["steps"]))
    return ctx.held_seconds(job, row, fallback=row["total_s"])


def section(ctx: Context) -> Section:
    out = Section("flux", TITLES["flux"],
                  "How fast and at what cost does a LoRA fine-tune of FLUX.1-schnell run per GPU type and count?")
    frame = out.table(ctx, "flux_train.csv", TRAIN_REQUIRED)
    if frame is None:
        return out
    frame["run"] = runs_of(frame, _run)
    gpu_missing(ctx, out, frame, "fine-tuning speed across GPU types (A40, A100) and counts")
    frame["job_s"] = [_job_seconds(ctx, r) for _, r in frame.iterrows()]
    frame["cost"] = [ctx.prices.job(str(r["hw"]), r["job_s"], gpus=as_int(r["gpus"]), workers=1)
                     for _, r in frame.iterrows()]
    random = ctx.random_weights(frame, ROLES)
    out.add(short(frame, train_cols(random), "flux-train"))
    per_device = frame["batch_size"] / frame["gpus"] if "batch_size" in frame.columns else None
    out.add(superlinear(frame, "gpus", ["hw", "steps"], per_device, "images per GPU per step"))
    out.findings += _train_findings(ctx, frame, out.id)
    series = {}
    for (hw, steps), rows in frame.groupby(["hw", "steps"], sort=False):
        series[f"{hw}, {steps} steps"] = [(float(g), float(s)) for g, s in zip(rows["gpus"], rows["speedup"])
                                          if fmt.number(s) is not None]
    figures = [ctx.figure("flux", "speedup", plots.speedup(series, "FLUX LoRA: speedup against 1 GPU", "GPUs"),
                          "FLUX LoRA training: speedup against GPUs, per hardware key."),
               ctx.figure("flux", "throughput", plots.lines(_throughput(frame), "FLUX LoRA: throughput per hardware",
                                                            "GPUs (CPU: processes)", "images/s (steady)", marker="o"),
                          "FLUX LoRA training: steady images/s against GPUs, one line per hardware key "
                          "(each key's longest run per count).")]
    phases = [c for c in ("setup_s", "cache_s", "train_s", "sampling_s", "saving_s") if c in frame.columns]
    if len(phases) > 1:
        labels = [f"{r['hw']} g{as_int(r['gpus'])} s{as_int(r['steps'])}" for _, r in frame.iterrows()]
        stacks = {c.removesuffix("_s"): list(frame[c].astype(float)) for c in phases}
        # what the phases miss of the job: interpreter, imports, process start-up, the final writes
        stacks["start-up and rest"] = list((frame["job_s"] - frame["total_s"].astype(float)).clip(lower=0))
        png = plots.stacked(labels, stacks, "FLUX LoRA job time by phase", "seconds")
        figures.append(ctx.figure("flux", "phases", png, "Where each fine-tune's time goes (billed whole)."))
    figures.append(_loss(ctx, out, random))
    out.add('<div class="figs">' + "".join(figures) + "</div>")
    out.add(_quality(ctx, out, random))
    out.add(_inference(ctx, out))
    out.add(full(frame.drop(columns=["cost", "job_s"]), "flux_train.csv"))
    out.add(ctx.trust(frame["run"], ROLES, frame))
    return out


def _throughput(frame: pd.DataFrame) -> dict[str, tuple[list[float], list[float]]]:
    """Per hardware key: (GPU counts, steady images/s of the longest run at each count)."""
    longest = (frame.sort_values(["gpus", "steps"], ascending=[True, False], kind="stable")
               .drop_duplicates(["hw", "gpus"]))
    return {str(hw): (list(rows["gpus"].astype(float)), list(rows["images_per_s"].astype(float)))
            for hw, rows in longest.groupby("hw", sort=False)}


def _train_findings(ctx: Context, frame: pd.DataFrame, anchor: str) -> list[Finding]:
    found = []
    for hw, rows in frame.groupby("hw", sort=False):  # the most GPUs, and of those the longest run (steadiest)
        top = rows.sort_values(["gpus", "steps"], ascending=False, kind="stable").iloc[0]
        if as_int(top["gpus"]) > 1:
            found.append(Finding(f"FLUX LoRA on {hw}: {ctx.devices(hw, top['gpus'])}{on_cpus(top)} "
                                 f"{fmt.ratio(top['speedup'])} one ({fmt.percent(top['efficiency'])} efficiency "
                                 f"{per_unit(ctx, top)}, {as_int(top['steps'])} steps)"
                                 f"{superlinear_note(top['speedup'], top['gpus'])}.",
                                 anchor, [top["run"]]))
    # steady steps/s does not depend on the run's length: each key's longest run has the most steps to time
    longest = frame.sort_values("steps", ascending=False, kind="stable").copy()
    longest["steady_cost"] = [ctx.prices.job(str(r["hw"]), 1000 / r["steps_per_s"], gpus=as_int(r["gpus"]))
                              if (fmt.number(r["steps_per_s"]) or 0) > 0 else None for _, r in longest.iterrows()]
    if compared := across_hardware(longest, "steps_per_s", ["gpus"], lambda r: ctx.devices(r["hw"], r["gpus"]),
                                   ("steady_cost", "per 1,000 steps")):
        text, runs = compared
        found.append(Finding("FLUX LoRA across hardware, steady steps/s and $ per 1,000 steps at that rate (each "
                             f"key's longest run): {text}.", anchor, runs))
    cheap_parts, cheap_runs = [], []
    for steps, rows in frame.groupby("steps", sort=True):  # a fine-tune's cost grows with its steps: like with like
        if len(rows) < 2:  # one run of that length (a CPU's few steps): nothing to be cheapest among
            continue
        if picked := cheapest(rows, "cost"):
            cheap, bound = picked
            label = lambda r: f"{r['hw']} on {ctx.devices(r['hw'], r['gpus'])}"  # noqa: E731
            cheap_parts.append(f"of {as_int(steps)} steps {bound}{fmt.money(cheap['cost'])} ({cheap['hw']}, "
                               f"{ctx.devices(cheap['hw'], cheap['gpus'])}; job time {fmt.duration(cheap['job_s'])}, "
                               f"start-up included{tied(rows, 'cost', cheap, label)})")
            cheap_runs.append(cheap["run"])
    if cheap_parts:
        found.append(Finding(f"FLUX LoRA: cheapest fine-tune {'; '.join(cheap_parts)}.", anchor, cheap_runs))
    shares = (frame["train_s"] / frame["job_s"]).dropna()
    if not shares.empty:
        found.append(Finding(f"FLUX LoRA: training is {fmt.percent(shares.median())} of a fine-tune's job time "
                             f"(median; {fmt.span(shares.min(), shares.max(), fmt.percent)} over the runs); the rest "
                             "is start-up, set-up, caching, sampling and saving.", anchor, list(frame["run"])))
    return found


def _loss(ctx: Context, out: Section, random: bool) -> str:
    frame = part_table(ctx, out, "flux_loss.csv", ["step", "loss"], "Loss curves")
    if frame is None:
        return ""
    keys = [k for k in ("hw", "gpus", "steps") if k in frame.columns]
    series = {}
    for key, rows in (frame.groupby(keys, sort=False) if keys else [("all", frame)]):
        key = key if isinstance(key, tuple) else (key,)
        label = _label(keys, key)
        series[label] = (list(rows["step"]), list(rows["loss"]))
    png = plots.lines(series, "FLUX LoRA training loss", "step", "loss")
    return ctx.figure("flux", "loss", png, "FLUX LoRA training loss per run.", "random weights: timing only" if random else "")


def _quality(ctx: Context, out: Section, random: bool) -> str:
    frame = part_table(ctx, out, "flux_quality.csv", QUALITY_REQUIRED, "Quality per checkpoint")
    parts = []
    if frame is not None:
        keys = [k for k in ("hw", "gpus", "steps") if k in frame.columns]
        cols = [Col(k, k if k != "gpus" else "GPUs", fmt.text if k == "hw" else fmt.integer) for k in keys] + [
            Col("checkpoint_step", "checkpoint step", fmt.integer),
            Col("psnr", "PSNR (dB)" + (" (random weights: timing only)" if random else ""), fmt.sig),
            Col("ssim", "SSIM", lambda v: fmt.sig(v, 3)), Col("n_images", "images", fmt.integer, optional=True)]
        parts.append(f"<h3>Quality per checkpoint{quality_tag(random)}</h3>")
        parts.append(short(frame, cols, "flux-quality"))
        figs = []
        for metric, label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM")):
            series = {}
            for key, rows in (frame.groupby(keys, sort=False) if keys else [("all", frame)]):
                key = key if isinstance(key, tuple) else (key,)
                series[_label(keys, key)] = (list(rows["checkpoint_step"]), list(rows[metric]))
            figs.append(ctx.figure("flux", metric, plots.lines(series, f"FLUX LoRA: {label} against steps",
                                                               "checkpoint step", label, marker="o"),
                                   f"{label} of each checkpoint's samples against the reference images.",
                                   "random weights: timing only" if random else ""))
        parts.append('<div class="figs">' + "".join(figs) + "</div>")
        last = frame[frame["checkpoint_step"] == frame["checkpoint_step"].max()]  # every run that got there
        psnr, ssim = last["psnr"].astype(float), last["ssim"].astype(float)
        ranges = f"PSNR {fmt.span(psnr.min(), psnr.max())}, SSIM {fmt.span(ssim.min(), ssim.max())}"
        same = ranges == f"PSNR {fmt.sig(psnr.median())}, SSIM {fmt.sig(ssim.median())}"
        spread = "" if len(last) == 1 else f" ({len(last)} runs, all the same)" if same else \
            f" (median of {len(last)} runs; {ranges})"
        out.findings.append(Finding(f"FLUX LoRA quality at step {as_int(last['checkpoint_step'].iloc[0])}: PSNR "
                                    f"{fmt.sig(psnr.median())} dB, SSIM {fmt.sig(ssim.median())}{spread}"
                                    + (" (random weights: timing only)." if random else "."), out.id,
                                    [str(r) for r in last["run"]] if "run" in frame.columns else []))
    grid = ctx.existing_figure("flux", "flux_samples.png", "Samples: one row per run, one column per checkpoint, "
                               "fixed prompt and seed.", "random weights: timing only" if random else "",
                               single=True)
    return "".join(parts) + grid


def _inference(ctx: Context, out: Section) -> str:
    frame = part_table(ctx, out, "flux_infer.csv", INFER_REQUIRED, "Inference")
    if frame is None:
        return ""
    frame = frame.copy()
    hw = frame["hw"] if "hw" in frame.columns else pd.Series([""] * len(frame))
    frame["cost_per_1k"] = [_per_image(ctx, str(h), r["images_per_s"]) for h, (_, r) in zip(hw, frame.iterrows())]
    cols = [Col("hw", "hardware", fmt.text, optional=True), Col("model", "weights", fmt.text),
            Col("batch_size", "batch", fmt.integer), Col("dtype", "dtype", fmt.text, optional=True),
            Col("first_image_s", "first image (s)", fmt.seconds,
                "loading, then each phase's first call for one batch (kernel selection included; cold for "
                "the first batch of the base weights, later rows reuse the warm process)"),
            Col("images_per_s", "images/s", fmt.sig, "steady"),
            Col("cost_per_1k", "$ per 1k images", fmt.money, "at the steady rate on the run's one device, as a server "
                "that stays up: loading (in first image) is not billed", optional=True),
            Col("status", "status", fmt.text, "ok, or why the batch did not run (oom)", optional=True)]
    labels = [f"{h} {r['model']} b{as_int(r['batch_size'])}".strip() for h, (_, r) in zip(hw, frame.iterrows())]
    png = plots.stacked(labels, {name: list(frame[c].astype(float)) for c, name in PHASES},
                        "FLUX inference time by phase", "seconds")
    measured = frame[frame["images_per_s"].notna()]
    if measured.empty:
        return "<h3>Inference by phase</h3>" + short(frame, cols, "flux-infer") + full(frame, "flux_infer.csv")
    best = measured.loc[measured["images_per_s"].idxmax()]
    runs = [str(best["run"])] if "run" in frame.columns else []
    out.findings.append(Finding(
        f"FLUX inference: best {fmt.sig(best['images_per_s'])} images/s ("
        + ", ".join([str(best[c]) for c in ("hw", "dtype") if c in best.index and pd.notna(best[c])]
                    + [f"{best['model']} weights", f"batch {as_int(best['batch_size'])}"]) + "); first image after "
        f"{fmt.seconds(best['first_image_s'])} s"
        + (f"; {fmt.money(best['cost_per_1k'] / 1000)} per image at that rate, loading not billed"
           if fmt.number(best["cost_per_1k"]) else "") + ".",
        out.id, runs))
    if "hw" in measured.columns:  # each key's best rate of the base weights, at whatever batch and dtype won there
        fastest = measured[measured["model"] == "base"].sort_values("images_per_s", ascending=False, kind="stable")
        if compared := across_hardware(fastest, "images_per_s", ["model"],
                                       lambda r: "base weights, each key's best batch and dtype",
                                       ("cost_per_1k", "per 1,000 images")):
            text, compared_runs = compared
            out.findings.append(Finding(f"FLUX inference across hardware, images/s and $ per 1,000 images at that "
                                        f"rate: {text}.", out.id, compared_runs))
    ratios = _fused_ratios(measured)
    if len(ratios):
        spread = "" if len(ratios) == 1 else (f" (median of {len(ratios)} matched settings, "
                                              f"{fmt.span(ratios.min(), ratios.max(), fmt.ratio)})")
        paired = measured[measured["model"].isin(["lora", "lora_fused"])]
        out.findings.append(Finding(f"FLUX inference: fusing the LoRA into the weights gives "
                                    f"{fmt.ratio(ratios.median())} the throughput of the unfused adapter{spread}.",
                                    out.id, [str(r) for r in paired["run"]] if "run" in paired.columns else []))
    return ("<h3>Inference by phase</h3>"
            + pair(short(frame, cols, "flux-infer"),
                   ctx.figure("flux", "inference", png, "Inference time per phase: base, LoRA and fused LoRA weights."))
            + full(frame.drop(columns=["cost_per_1k"]), "flux_infer.csv"))


def _fused_ratios(frame: pd.DataFrame) -> pd.Series:
    """images/s of the fused LoRA over the unfused one, pairing rows of the same hardware, dtype,
    batch and resolution (never the best of one against the best of the other)."""
    keys = [k for k in ("hw", "dtype", "batch_size", "resolution") if k in frame.columns]
    pairs = frame[frame["model"] == "lora_fused"].merge(frame[frame["model"] == "lora"], on=keys,
                                                        suffixes=("_fused", "_lora"))
    return (pairs["images_per_s_fused"].astype(float) / pairs["images_per_s_lora"].astype(float)).dropna()


def _label(keys: list[str], values: tuple) -> str:
    """'a100 g2 s1000' for hw, gpus, steps."""
    short_names = {"hw": "", "gpus": "g", "steps": "s"}
    return " ".join(f"{short_names.get(k, k)}{v}" for k, v in zip(keys, values)) or "run"


def _per_image(ctx: Context, hw: str, images_per_s) -> float | None:
    rate = fmt.number(images_per_s)
    if not hw or not rate:
        return None
    return ctx.prices.job(hw, 1000 / rate, gpus=1)
