"""Build results/report.html from what the studies left in results/.

The report reads only results/bench/*.csv (one tidy table per study, see the table contract),
results/bench/*.png (figures other rules drew), results/data/summary.json, Snakemake's benchmark
files (a job's whole wall time, for cost) and the runs' run.json provenance. It answers each
study's question at a glance: computed findings first, each linking to its section and naming
its runs; then per study the few columns that answer it, plots, cost, and provenance. The page
is one self-contained file: figures are data URIs, full tables are CSV downloads (data URIs).

The same figures are written to `figures_dir/<study>/<name>.png` for Snakemake's own report
(`snakemake --report results/report.zip`), where rules/report.smk marks them with captions.
"""

from __future__ import annotations

import html
import json
import sys
import time
from pathlib import Path

import pandas as pd

from diffscale import atomic, provenance
from diffscale.report import cost, ddpm, flux, fmt, study1
from diffscale.report.cost import Prices
from diffscale.report.page import RANDOM_WEIGHTS, TITLES, Context, Section
from diffscale.report.tables import Col, TableProblem, full, short

# The report's sections in reading order (page.TITLES); every one is always present (a study that
# has not run says so in one line). Their ids name the figure folders of the Snakemake report.
SECTIONS = {"coco": study1.coco_section, "embed": study1.embed_section, "train": study1.train_section,
            "flux": flux.section, "ddpm": ddpm.section}

STYLE = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d0d7de;--soft:#f6f8fa;--accent:#0b5cad;--warn:#9a4d00}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);max-width:1180px;
 margin:0 auto;padding:1.5em 1.5em 4em}
h1{font-size:1.7em;margin:.2em 0 .1em}h2{font-size:1.3em;margin:2.2em 0 .4em;padding-bottom:.2em;
 border-bottom:1px solid var(--line)}h3{font-size:1.05em;margin:1.4em 0 .3em}
a{color:var(--accent)}code{background:var(--soft);padding:0 .25em;border-radius:3px;font-size:.9em}
.meta,.note,.trust,figcaption{color:var(--muted);font-size:.85em}
.question{font-style:italic;color:var(--muted);margin:.2em 0 .8em}
nav.toc{font-size:.9em;margin:.6em 0 1em}nav.toc a{margin-right:1.1em;white-space:nowrap}
.banner{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.6em .9em;margin:1em 0}
#findings{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:.4em 1.2em 1em}
#findings h2{border:0;margin-top:.5em}#findings li{margin:.35em 0}#findings ul{margin:.2em 0 .6em;padding-left:1.3em}
#findings h3{font-size:.95em;margin:.9em 0 .1em}#findings h3 a{color:var(--ink);text-decoration:none}
a.more{font-size:.8em;margin-left:.3em}
.runs{display:block;color:var(--muted);font-size:.78em;overflow-wrap:anywhere}
.tag{display:inline-block;font-size:.72em;padding:0 .45em;border-radius:9px;background:#eaeef2;color:var(--muted);
 margin-left:.4em;vertical-align:1px}
.warn{color:var(--warn);font-weight:600;font-size:.9em}p.warn{font-weight:500}
.notice{background:var(--soft);border-left:3px solid var(--line);padding:.3em .8em;margin:.5em 0}
table{border-collapse:collapse;margin:.5em 0 .8em;font-size:.88em;max-width:100%}
th,td{border-bottom:1px solid var(--line);padding:.28em .7em;text-align:right;vertical-align:top}
th{background:var(--soft);font-weight:600;border-top:1px solid var(--line)}
td:first-child,th:first-child{text-align:left}
td.t,th.t{text-align:left}
caption{text-align:left;color:var(--muted);font-size:.9em;padding:.2em 0}
td{white-space:nowrap}td.t{white-space:normal;overflow-wrap:break-word}
details.full{margin:.3em 0 1em;font-size:.85em}details.full summary{cursor:pointer;color:var(--muted)}
.scroll{overflow-x:auto;max-width:100%}table.full{font-size:.8em}table.full td{white-space:nowrap}
a.download{margin-left:.5em}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:1em;align-items:start}
.thumbs{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:.8em}
figure{margin:.6em 0}figure img{display:block;width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
.figs figure,.thumbs figure,.pair figure{margin:0}
.pair{display:grid;grid-template-columns:minmax(0,max-content) minmax(380px,1fr);gap:1.5em;align-items:start;margin:.4em 0}
.pair figure{max-width:640px}
@media (max-width:1000px){.pair{grid-template-columns:minmax(0,1fr)}}figure.single{max-width:560px}
"""


def build_report(results: str | Path, out: str | Path, hardware: dict | None = None,
                 price_source: str = "the config", demo: bool = False,
                 figures_dir: str | Path | None = None, draw: bool = True, unfinished: list[str] = ()) -> Path:
    """Write the report to `out` (atomically); with `figures_dir`, its figures there too.
    `draw=False` leaves the plots out (tables, findings and existing figures only). `unfinished`:
    the run folders the config asks for that a partial report leaves out."""
    results = Path(results)
    ctx = Context(results, Prices(hardware or {}, price_source), demo, draw)
    sections = [_build(key, build, ctx) for key, build in SECTIONS.items()]
    parts = [_head(), _title(results, demo), _partial(unfinished), _toc(sections), _findings(ctx, sections),
             _cost_basis(ctx),
             _inputs(results)]
    for section in sections:
        parts.append(_section_html(section))
    parts += [_models(ctx), _provenance(results), "</body></html>"]
    if figures_dir is not None:
        _write_figures(ctx, Path(figures_dir))
    return atomic.write_text(out, "\n".join(p for p in parts if p))


def _build(key: str, build, ctx: Context) -> Section:
    """One study's section; a table the section cannot read (values of an unexpected kind) is
    reported in that section, in one line, instead of stopping the whole report."""
    try:
        return build(ctx)
    except Exception as exc:  # noqa: BLE001 - the other studies' sections must still be built
        detail = str(exc).splitlines()[0] if str(exc) else ""
        message = f"{type(exc).__name__}: {detail}".rstrip(": ")
        print(f"warning: section {key} not built: {message}", file=sys.stderr)
        broken = Section(key, TITLES[key])
        broken.notice(f"Not built: its tables have values of an unexpected kind ({message}).")
        return broken


def _head() -> str:
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>diffscale report</title><style>{STYLE}</style></head><body>")


def _title(results: Path, demo: bool) -> str:
    commit = provenance.git_commit() or "unknown"
    out = ["<h1>diffscale — how diffusion workloads scale</h1>",
           f"<p class='meta'>Built {time.strftime('%Y-%m-%d %H:%M %Z')} from "
           f"<code>{html.escape(str(results))}</code> · report code at commit <code>{html.escape(commit[:12])}</code></p>"]
    if demo:
        out.append("<p class='banner'><b>Demo run.</b> Synthetic data, tiny models with random weights, a few CPUs: "
                   "every number below is computed from this run and exercises the whole pipeline, but it says "
                   "nothing about the studied hardware. Quality figures are marked "
                   f"“{RANDOM_WEIGHTS}”.</p>")
    return "".join(out)


PARTIAL_SHOWN = 30  # unfinished runs named in the banner; the rest are counted


def _partial(unfinished: list[str]) -> str:
    """A partial report's banner: how many runs are left out, and which."""
    if not unfinished:
        return ""
    named = ", ".join(f"<code>{html.escape(str(run))}</code>" for run in unfinished[:PARTIAL_SHOWN])
    more = f" and {len(unfinished) - PARTIAL_SHOWN} more" if len(unfinished) > PARTIAL_SHOWN else ""
    runs = "run has" if len(unfinished) == 1 else "runs have"
    return (f"<p class='banner'><b>Partial report.</b> {len(unfinished)} {runs} not finished and "
            f"{'is' if len(unfinished) == 1 else 'are'} left out of every table, figure and finding below "
            f"(built with <code>partial_report: true</code>): {named}{more}.</p>")


def _toc(sections: list[Section]) -> str:
    links = ["<a href='#findings'>Findings</a>", "<a href='#cost'>Cost basis</a>"]
    links += [f"<a href='#{s.id}'>{html.escape(s.title.split(' · ')[-1])}</a>" for s in sections]
    links += ["<a href='#models'>Models</a>", "<a href='#provenance'>Provenance</a>"]
    return f"<nav class='toc'>{' '.join(links)}</nav>"


def _findings(ctx: Context, sections: list[Section]) -> str:
    """The findings of every study, grouped under their section's title; each links to its
    section and names the runs it was computed from."""
    groups = []
    demo = "<span class='tag'>demo</span>" if ctx.demo else ""
    for section in sections:
        items = []
        for finding in section.findings:
            runs = ", ".join(dict.fromkeys(finding.runs))
            items.append(f"<li data-section='{finding.anchor}'>{html.escape(finding.text)}{demo} "
                         f"<a class='more' href='#{finding.anchor}'>details</a>"
                         + (f"<span class='runs'>from runs: {html.escape(runs)}</span>" if runs else "") + "</li>")
        if items:
            groups.append(f"<h3><a href='#{section.id}'>{html.escape(section.title)}</a></h3><ul>{''.join(items)}</ul>")
    not_run = [s.title for s in sections if not s.ran]
    lead = ("Computed from the tables below when this page was built" +
            (", from the demo run (synthetic data, tiny random-weight models): they show what the study "
             "measures, not what the studied hardware does." if ctx.demo else "."))
    body = "".join(groups) if groups else "<p class='notice'>No study has produced results yet.</p>"
    missing = (f"<p class='note'>Not run yet: {html.escape('; '.join(not_run))}.</p>" if not_run else "")
    return f"<section id='findings'><h2>Findings</h2><p class='note'>{html.escape(lead)}</p>{body}{missing}</section>"


def _cost_basis(ctx: Context) -> str:
    keys = list(ctx.prices.hardware)
    return ("<section id='cost'><h2>Cost basis</h2>"
            f"<p>{html.escape(cost.FORMULA[0].upper() + cost.FORMULA[1:])}. Prices: "
            f"<code>hardware.&lt;key&gt;.price_per_hour</code> in {html.escape(ctx.prices.source)} "
            "(USD per hour of one share of the hardware as requested).</p>"
            f"{ctx.prices.table_html(keys) if keys else '<p class=notice>No hardware table given: costs left out.</p>'}"
            f"<p class='note'>{html.escape(cost.IDLE)}</p></section>")


def _inputs(results: Path) -> str:
    summary = results / "data" / "summary.json"
    if not summary.is_file():
        return ""
    try:
        data = json.loads(summary.read_text())
    except json.JSONDecodeError:
        return "<p class='notice'>results/data/summary.json is not valid JSON.</p>"
    coco, cifar, subject = data.get("coco", {}), data.get("cifar", {}), data.get("subject", {})
    items = [f"COCO-format captions: {fmt.integer(coco.get('images'))} images, {fmt.integer(coco.get('captions'))} captions",
             f"CIFAR-10 ({cifar.get('format', 'image folder')}): {fmt.integer(cifar.get('images'))} training images"
             + (f" in {len(cifar['classes'])} classes" if cifar.get("classes") else ", unlabelled"),
             f"Custom subject: {fmt.integer(subject.get('images'))} captioned images"]
    return "<h2 id='inputs'>Inputs</h2><ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _section_html(section: Section) -> str:
    question = f"<p class='question'>{html.escape(section.question)}</p>" if section.question and section.ran else ""
    return (f"<section id='{section.id}' class='study'><h2>{html.escape(section.title)}</h2>{question}"
            + "".join(section.body) + "</section>")


MODEL_COLS = [Col("role", "role", fmt.text), Col("spec", "spec", fmt.text), Col("class", "class", fmt.text, optional=True),
              Col("params", "parameters", fmt.integer, optional=True)]


def _models(ctx: Context) -> str:
    try:
        frame = ctx.table("models.csv", ["role", "spec"])
    except TableProblem as problem:
        return f"<section id='models'><h2>Models used</h2><p class='notice'>{html.escape(str(problem))}.</p></section>"
    return ("<section id='models'><h2>Models used</h2>"
            "<p class='note'>Every model comes from one factory: pretrained (hub id or local folder) or random "
            "(real architecture, random weights).</p>" + short(frame, MODEL_COLS, "models") + "</section>")


def _provenance(results: Path) -> str:
    rows = []
    for path in sorted(results.rglob("run.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        slurm = record.get("slurm") or {}
        rows.append({
            "run": str(path.parent.relative_to(results)),
            "host": record.get("host"),
            "partition": slurm.get("partition", ""),
            "job": slurm.get("job_id", ""),
            "devices": ", ".join((record.get("devices") or {}).get("gpus", [])) or "cpu",
            "cpu": f"{record.get('cpu_model', '')} ×{record.get('usable_cpus', '')}",
            "torch": (record.get("versions") or {}).get("torch", ""),
            "commit": (record.get("git_commit") or "")[:12],
            "config_hash": record.get("config_hash"),
        })
    if not rows:
        return "<section id='provenance'><h2>Provenance</h2><p class='notice'>No run.json found.</p></section>"
    frame = pd.DataFrame(rows)
    versions = "; ".join(f"{k}: {', '.join(sorted(set(frame[k].astype(str)) - {''})) or 'unknown'}"
                         for k in ("torch", "commit"))
    runs = f"{len(frame)} run{'s' if len(frame) != 1 else ''}"
    return ("<section id='provenance'><h2>Provenance</h2>"
            f"<p>{runs} left a <code>run.json</code> (config slice, model spec, devices, CPU, threads, SLURM job, "
            f"versions, commit, config hash). {html.escape(versions)}.</p>" + full(frame, "runs.csv") + "</section>")


def _write_figures(ctx: Context, figures_dir: Path) -> None:
    for study in SECTIONS:
        (figures_dir / study).mkdir(parents=True, exist_ok=True)
    for figure in ctx.figures:
        atomic.write_bytes(figures_dir / figure.study / f"{figure.name}.png", figure.png)
