"""Build results/report.html from what the studies left in results/.

The report reads only: results/bench/*.csv (one tidy table per study), results/bench/*.png
(figures), results/data/summary.json, and the run.json provenance files under results/. Figures
are embedded (base64) so the page is one file that can be mailed or attached to a paper.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from diffscale import atomic, provenance

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}.note{color:#666;font-size:0.9em}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}code{background:#f4f4f4;padding:0 3px}
"""

# Sections in reading order; a table not listed here still appears, after these.
SECTION_TITLES = {
    "models": "Models used",
    "coco_filter": "Study 1 · COCO people-centric filtering",
    "embed_scaling": "Study 1 · Embedding across parallel backends",
    "train_unet": "Study 1 · Text-conditioned U-Net training",
    "flux_lora": "Study 2 · FLUX.1-schnell LoRA across hardware",
    "ddpm_opt": "Study 3 · CIFAR-10 DDPM training optimisations",
}


def _table(frame: pd.DataFrame, max_rows: int = 200) -> str:
    shown = frame.head(max_rows)
    out = shown.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="")
    if len(frame) > max_rows:
        out += f'<p class="note">{len(frame) - max_rows} more rows in the CSV.</p>'
    return out


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"><figcaption class="note">{html.escape(path.name)}</figcaption></figure>'


def _run_records(results: Path) -> list[dict]:
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
            "gpus": ", ".join(record.get("devices", {}).get("gpus", [])) or "-",
            "cpu": f"{record.get('cpu_model', '')} ×{record.get('usable_cpus', '')}",
            "commit": (record.get("git_commit") or "")[:12],
            "config": record.get("config_hash"),
        })
    return rows


def build_report(results: str | Path, out: str | Path) -> Path:
    results = Path(results)
    bench = results / "bench"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>diffscale report</title><style>{STYLE}</style></head><body>",
             "<h1>diffscale — how diffusion workloads scale</h1>",
             f"<p class='note'>Built on {html.escape(provenance.collect()['created'])} from "
             f"<code>{html.escape(str(results))}</code>, commit <code>{html.escape(str(provenance.git_commit()))}</code>.</p>"]

    summary = results / "data" / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        parts.append("<h2>Inputs</h2><ul>")
        coco, cifar, subject = data.get("coco", {}), data.get("cifar", {}), data.get("subject", {})
        parts.append(f"<li>COCO-format captions: {coco.get('images')} images, {coco.get('captions')} captions</li>")
        parts.append(f"<li>CIFAR-style folder: {cifar.get('images')} images in {len(cifar.get('classes', {}))} classes</li>")
        parts.append(f"<li>Custom subject: {subject.get('images')} captioned images</li></ul>")

    tables = {p.stem: p for p in sorted(bench.glob("*.csv"))} if bench.is_dir() else {}
    order = [k for k in SECTION_TITLES if k in tables] + [k for k in tables if k not in SECTION_TITLES]
    for name in order:
        parts.append(f"<h2>{html.escape(SECTION_TITLES.get(name, name))}</h2>")
        parts.append(_table(pd.read_csv(tables[name])))
        for fig in sorted(bench.glob(f"{name}*.png")):
            parts.append(_figure(fig))

    runs = _run_records(results)
    if runs:
        parts.append("<h2>Provenance of every run</h2>")
        parts.append(_table(pd.DataFrame(runs)))
    parts.append("</body></html>")
    return atomic.write_text(out, "\n".join(parts))
