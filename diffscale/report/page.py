"""What every study section shares: where the results are, prices, run provenance, findings,
figures and the one-line notices.

A section is built by a function `build(ctx) -> Section`; it reads its main table with
`section.table(ctx, name, required)` (others with `ctx.table`) and never crashes on a missing or
partial table: `TableProblem` becomes a one-line notice in its place.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from diffscale import vocab
from diffscale.report import fmt, tables
from diffscale.report.contract import TITLES  # noqa: F401 - the sections import it from here
from diffscale.report.fmt import as_int  # noqa: F401 - the sections import it from here
from diffscale.report.cost import Prices
from diffscale.report.plots import Drawing

RANDOM_WEIGHTS = "random weights: timing only"
TRUST_VERSIONS = ("torch", "diffusers", "transformers", "peft", "dask")


@dataclass
class Finding:
    text: str
    anchor: str  # the section's id
    runs: list[str] = field(default_factory=list)


@dataclass
class Figure:
    study: str  # the Snakemake report category (one caption file per study: report/<study>.rst)
    name: str
    png: bytes


@dataclass
class Section:
    id: str
    title: str
    question: str = ""
    body: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    ran: bool = True  # False: the study has not run, announced in one line

    def add(self, *parts: str) -> None:
        self.body.extend(parts)

    def notice(self, text: str) -> None:
        self.body.append(f'<p class="notice">{html.escape(text)}</p>')

    def table(self, ctx: Context, name: str, required: Iterable[str]) -> pd.DataFrame | None:
        """The section's main table (a copy, to add columns to), or None after its one notice:
        "Not run: …" when the table is absent (and the section marked not run), "Skipped: …" when
        it is unreadable or lacks a required column."""
        try:
            return ctx.table(name, required).copy()
        except tables.TableProblem as problem:
            self.ran = not problem.absent
            self.notice(f"Not run: {problem}." if problem.absent else f"Skipped: {problem}.")
            return None


@dataclass
class Context:
    results: Path
    prices: Prices = field(default_factory=Prices)
    demo: bool = False
    draw: bool = True  # False: tables and findings only, no plots drawn (a quick build)
    figures: list[Figure] = field(default_factory=list)
    _records: dict[str, dict | None] = field(default_factory=dict)
    _models: pd.DataFrame | None = None

    @property
    def bench(self) -> Path:
        return self.results / "bench"

    def table(self, name: str, required: Iterable[str] = ()) -> pd.DataFrame:
        return tables.read(self.bench / name, list(required))

    # ---- figures ----------------------------------------------------------------------------
    def figure(self, study: str, name: str, png: bytes | Drawing, caption: str, note: str = "",
               single: bool = False) -> str:
        """The figure as an embedded <img> (data URI); also kept for the Snakemake report.
        `single`: a figure on its own, kept to a readable width instead of the page's."""
        if isinstance(png, Drawing):
            if not self.draw:
                return ""
            png = png.render()
        self.figures.append(Figure(study, name, png))
        data = base64.b64encode(png).decode()
        extra = f' <span class="warn">{html.escape(note)}</span>' if note else ""
        cls = ' class="single"' if single else ""
        return (f'<figure{cls}><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}{extra}</figcaption></figure>")

    def existing_figure(self, study: str, filename: str, caption: str, note: str = "", single: bool = False) -> str:
        """A PNG another rule drew in results/bench, or '' when it is not there."""
        path = self.bench / filename
        if not path.is_file():
            return ""
        return self.figure(study, path.stem, path.read_bytes(), caption, note, single)

    def is_gpu(self, hw: str) -> bool | None:
        """Whether a hardware key of the config has GPUs; None for a key the config does not know."""
        entry = self.prices.hardware.get(str(hw))
        return None if entry is None else entry.get("gpus_per_node", 0) > 0 or entry.get("device") == "cuda"

    def devices(self, hw: str, count) -> str:
        """'2 GPUs', '1 GPU', or '2 processes' where the hardware key has no GPUs (the demo's
        multi-process runs on a CPU); '2 devices' for a key this config does not know."""
        n = as_int(count, 1)
        gpu = self.is_gpu(hw)
        word = "device" if gpu is None else "GPU" if gpu else "process"
        plural = "es" if word == "process" else "s"
        return f"{n} {word}{plural if n != 1 else ''}"

    def benchmark_seconds(self, job: str) -> float | None:
        """The whole job's wall time from Snakemake's benchmark of job `job` (a name of
        diffscale.vocab's *_JOB patterns): start-up included, what a scheduler bills; None where
        there is none (a run made by hand). A retried job's file holds its last try."""
        path = Path(vocab.benchmark_path(job, str(self.results)))
        try:
            return fmt.number(pd.read_csv(path, sep="\t")["s"].iloc[0])
        except (OSError, KeyError, IndexError, pd.errors.ParserError, pd.errors.EmptyDataError):
            return None

    def held_seconds(self, job: str, row, fallback) -> float | None:
        """The seconds a run held its hardware: Snakemake's benchmark of its last try plus the
        tries before it (`earlier_tries_s`, diffscale.attempts: the benchmark holds only the last).
        Without a benchmark: the run's own `job_time_s` where it has one (training runs: every
        invocation), else `fallback` plus the earlier tries. For a resumed run whose tries were not
        all recorded, its lower bound over its invocations (`job_time_s`, see is_lower_bound)."""
        own = fmt.number(row.get("job_time_s"))
        last = self.benchmark_seconds(job)
        if own is not None and (is_lower_bound(row) or last is None):
            return own
        last = last if last is not None else fmt.number(fallback)
        return None if last is None else last + (fmt.number(row.get("earlier_tries_s")) or 0.0)

    # ---- provenance ---------------------------------------------------------------------------
    def record(self, run: str) -> dict | None:
        """run.json of a run directory (as written in a table's `run` column), or None."""
        if run not in self._records:
            found = None
            for base in (Path(run), self.results / run, self.results.parent / run):
                path = base / "run.json"
                if path.is_file():
                    try:
                        found = json.loads(path.read_text())
                    except (OSError, json.JSONDecodeError):
                        found = None
                    break
            self._records[run] = found
        return self._records[run]

    def models(self) -> pd.DataFrame:
        if self._models is None:
            try:
                self._models = self.table("models.csv", ["role", "spec"])
            except tables.TableProblem:
                self._models = pd.DataFrame(columns=["role", "spec", "kind"])
        return self._models

    def random_weights(self, frame: pd.DataFrame | None, roles: Iterable[str]) -> bool:
        """Whether quality figures of these rows come from random weights: the table's
        `random_weights` column when it has one, else the config's model specs of `roles`."""
        if frame is not None and "random_weights" in frame.columns:
            values = frame["random_weights"].astype(str).str.lower()
            return bool(values.isin(["true", "1", "yes"]).any())
        models = self.models()
        if "kind" not in models.columns:
            return False
        return bool((models[models["role"].isin(list(roles))]["kind"] == "random").any())

    def trust(self, runs: Iterable[str], roles: Iterable[str], frame: pd.DataFrame | None = None) -> str:
        """One line: where these runs computed, SLURM job/partition, versions, commit, config hash,
        model specs."""
        records = [r for r in (self.record(run) for run in dict.fromkeys(runs)) if r]
        parts = []
        devices = _distinct(_device_name(r) for r in records)
        if not devices and frame is not None and "device" in frame.columns:
            devices = _distinct(str(d) for d in frame["device"].dropna())
        if devices:
            parts.append("device " + ", ".join(devices))
        slurm = _distinct(f"{(r.get('slurm') or {}).get('partition', '?')}/{(r.get('slurm') or {}).get('job_id', '?')}"
                          for r in records if r.get("slurm"))
        if slurm:
            parts.append("SLURM partition/job " + ", ".join(slurm))
        else:  # without a record nothing says where a run ran
            parts.append("no SLURM job (local run)" if records else "SLURM job unknown")
        versions = {}
        for r in records:
            for name in TRUST_VERSIONS:
                if name in (r.get("versions") or {}):
                    versions.setdefault(name, set()).add(r["versions"][name])
        if versions:
            parts.append(" ".join(f"{k} {'/'.join(sorted(v))}" for k, v in versions.items()))
        commits = _distinct((r.get("git_commit") or "")[:12] for r in records if r.get("git_commit"))
        if commits:
            parts.append("commit " + ", ".join(commits))
        hashes = _distinct(str(r.get("config_hash")) for r in records if r.get("config_hash"))
        if not hashes and frame is not None and "config_hash" in frame.columns:
            hashes = _distinct(str(h) for h in frame["config_hash"].dropna())
        if hashes:
            parts.append("config hash " + ", ".join(hashes[:4]) + (" …" if len(hashes) > 4 else ""))
        models = self.models()
        specs = [f"{row.role} {row.spec}" for row in models.itertuples() if row.role in set(roles)]
        if specs:
            parts.append("models " + ", ".join(specs))
        n = len(records)
        counted = f"{n} run record{'s' if n != 1 else ''}" if n else "no run.json found"
        return f'<p class="trust">Provenance ({counted}): {html.escape(" · ".join(parts))}</p>'


def part_table(ctx: Context, section: Section, name: str, required: Iterable[str], what: str) -> pd.DataFrame | None:
    """A study's table, or None with a one-line notice in the section saying why it is not shown."""
    try:
        return ctx.table(name, required)
    except tables.TableProblem as problem:
        section.notice(f"{what}: not run ({problem})." if problem.absent else f"{what}: skipped ({problem}).")
        return None


def _distinct(values: Iterable[str]) -> list[str]:
    return [v for v in dict.fromkeys(values) if v]


def _device_name(record: dict) -> str:
    gpus = (record.get("devices") or {}).get("gpus") or []
    if gpus:
        names = _distinct(gpus)
        return f"{len(gpus)}× {names[0]}" if len(names) == 1 else ", ".join(names)
    cpu = record.get("cpu_model") or "cpu"
    return f"cpu ({cpu}, {record.get('usable_cpus', '?')} usable CPUs)"


def pair(table: str, figure: str) -> str:
    """A table beside its figure (stacked on a narrow window)."""
    return f'<div class="pair"><div>{table}</div><div>{figure}</div></div>' if figure else table


def quality_tag(random: bool) -> str:
    """The marker beside every quality figure made with random weights."""
    return f' <span class="warn">{RANDOM_WEIGHTS}</span>' if random else ""


def runs_of(frame: pd.DataFrame, fallback) -> list[str]:
    """The `run` column when the table has one, else `fallback(row)` for each row."""
    if "run" in frame.columns and frame["run"].notna().all():
        return [str(r) for r in frame["run"]]
    return [fallback(row) for _, row in frame.iterrows()]


def _true(value) -> bool:
    return str(value).lower() in ("true", "1")


def is_resumed(row) -> bool:
    """A run continued from its checkpoint after its job was stopped (the table's `resumed` cell)."""
    return _true(row.get("resumed"))


def is_lower_bound(row) -> bool:
    """A resumed run whose tries' records (diffscale.attempts) do not cover every invocation
    (`job_time_whole` false, or a table from before it): its time after each stopped invocation's
    last checkpoint is not recorded, so its time and cost are lower bounds."""
    return is_resumed(row) and not _true(row.get("job_time_whole"))


def cheapest(frame: pd.DataFrame, column: str) -> tuple[pd.Series, str] | None:
    """The row of lowest `column` and "at least " when its cost is a lower bound (is_lower_bound),
    else "". A run billed whole is picked when there is one. None when no row has a cost."""
    priced = frame[frame[column].notna()] if column in frame else frame.iloc[0:0]
    if priced.empty:
        return None
    bound = priced.apply(is_lower_bound, axis=1).astype(bool)
    whole = priced[~bound] if (~bound).any() else priced
    row = whole.loc[whole[column].astype(float).idxmin()]
    return row, "at least " if is_lower_bound(row) else ""


EFFICIENCY_HELP = ("speedup ÷ how many times the 1-device run's compute the run had: its GPUs; on CPUs its CPUs "
                   "(processes × threads), so processes that share one process's CPUs add none")


def gpu_missing(ctx: Context, section: Section, frame: pd.DataFrame, what: str) -> None:
    """A notice where no row of `frame` ran on a GPU hardware key (Context.is_gpu; an embedding
    row on its gpu backend): `what`, the study's GPU side, is not measured in these results,
    rather than silently absent."""
    on_gpu = [ctx.is_gpu(hw) is not False for hw in frame["hw"]] if "hw" in frame.columns else []
    if "backend" in frame.columns:
        on_gpu = [g and b == "gpu" for g, b in zip(on_gpu, frame["backend"])]
    if not any(on_gpu):
        section.notice(f"No GPU run in these results: {what} is not measured here (run config/full.yaml on a "
                       "cluster, or name a GPU hardware key in your config).")


def gpus_col() -> tables.Col:
    """The device count of a training run: GPUs, or on a CPU hardware key its gloo processes."""
    return tables.Col("gpus", "GPUs (CPU: processes)", fmt.integer)


def efficiency_cols() -> list[tables.Col]:
    """The CPUs a CPU run computed on, and efficiency per GPU or per CPU (metrics.compute_ratio)."""
    return [tables.Col("cpus", "CPUs", fmt.integer, "a CPU run's processes × threads each", optional=True),
            tables.Col("efficiency", "efficiency", fmt.percent, EFFICIENCY_HELP)]


def on_cpus(row) -> str:
    """' (2 CPUs)' for a CPU run that recorded its CPUs, else ''."""
    n = fmt.number(row.get("cpus"))
    return f" ({fmt.integer(n)} CPUs)" if n else ""


def per_unit(ctx: Context, row) -> str:
    """'per CPU', 'per GPU', or 'per process' for a CPU run from before the tables recorded its
    CPUs (its efficiency then divides by processes): what a row's efficiency divides by."""
    if fmt.number(row.get("cpus")):
        return "per CPU"
    return "per process" if ctx.is_gpu(row["hw"]) is False else "per GPU"


TIE = 0.05  # values closer than this are a tie: one run each cannot rank them (the demo's repeats differ by more)


def tied(frame: pd.DataFrame, column: str, row, label) -> str:
    """'; A and B within 5 % of it: a tie' for the other rows whose `column` lies within TIE of
    `row`'s (`label(other_row)` names them), else ''."""
    value = fmt.number(row[column])
    if value is None:
        return ""
    close = [label(other) for index, other in frame.iterrows()
             if index != row.name and fmt.number(other[column]) is not None
             and abs(fmt.number(other[column]) - value) <= TIE * value]
    return f"; {' and '.join(close)} within {TIE * 100:g} % of it: a tie" if close else ""


def across_hardware(frame: pd.DataFrame, rate: str, settings: list[str], describe,
                    cost: tuple[str, str] | None = None) -> tuple[str, list[str]] | None:
    """How the hardware keys compare where two or more ran the same `settings` (each key's first row
    there: sort the frame to choose): '<describe(row)>: a100 at 2.00 is 1.8× a40 at 1.10', one part
    per setting joined by '; ', rates in the frame's units; a gap under TIE reads as level. `cost`
    (column, unit) adds each key's cost in the same order: ' ($0.44, $0.36 per 1,000 steps)'. With
    the runs compared; None where no setting ran on two keys."""
    def name(r) -> str:
        cpus = fmt.number(r.get("cpus"))
        return f"{r['hw']}{f' on {fmt.integer(cpus)} CPUs' if cpus else ''} at {fmt.sig(r[rate])}"

    parts, runs = [], []
    for _, rows in frame.groupby(settings, sort=False):
        rows = rows[[(fmt.number(v) or 0) > 0 for v in rows[rate]]].drop_duplicates("hw")
        if len(rows) < 2:
            continue
        ranked = [r for _, r in rows.sort_values(rate, ascending=False, kind="stable").iterrows()]
        top = ranked[0]
        against = [f"level with {name(r)} (within {TIE * 100:g} %)" if top[rate] <= (1 + TIE) * r[rate]
                   else f"{fmt.ratio(top[rate] / r[rate])} {name(r)}" for r in ranked[1:]]
        costs = [fmt.number(r.get(cost[0])) for r in ranked] if cost else []
        priced = f" ({', '.join(fmt.money(c) for c in costs)} {cost[1]})" if costs and None not in costs else ""
        parts.append(f"{describe(top)}: {name(top)} is {', '.join(against)}{priced}")
        runs += [str(r["run"]) for r in ranked if "run" in r]
    return ("; ".join(parts), runs) if parts else None


def superlinear_note(speedup, count) -> str:
    """' (superlinear: see the flag under the table)' for a speedup above its device count."""
    s, n = fmt.number(speedup), fmt.number(count)
    return " (superlinear: see the flag under its table)" if s and n and n > 1 and s > n * 1.02 else ""


def superlinear(frame: pd.DataFrame, count: str, base_keys: list[str], per_device: pd.Series | None,
                what: str) -> str:
    """A warning under a table for every speedup above its device count, explained by `per_device`
    (work per device, per row) against the 1-device run of the same `base_keys`: the same global
    work split over the devices (strong scaling: a smaller share may fit caches better), other
    work altogether (a different workload), or unchanged per-device work (suspicious)."""
    notes = []
    for index, row in frame.iterrows():
        n = as_int(row[count], 1)
        s = fmt.number(row.get("speedup"))
        if n <= 1 or s is None or s <= n * 1.02:
            continue
        same = (frame[count] == 1)
        for key in base_keys:
            same &= frame[key] == row[key]
        base = frame[same]
        label = " ".join(str(row[k]) for k in base_keys)
        one = fmt.number(per_device[base.index[0]]) if per_device is not None and not base.empty else None
        each = fmt.number(per_device[index]) if per_device is not None else None
        if one is not None and each is not None and abs(one - each * n) <= 1e-9 * one:
            why = (f"the same global work split over {n} devices ({_amount(one)} to {_amount(each)} {what}); a "
                   "smaller share per device can fit its caches better, but check the runs before trusting it")
        elif one is not None and each is not None and one != each:
            why = (f"per-device work changed from {_amount(one)} to {_amount(each)} {what} between the runs, so "
                   "this compares different workloads")
        else:
            why = "per-device work unchanged: check the runs before trusting it"
        notes.append(f"Superlinear speedup flagged: {label}, {n} devices, {fmt.ratio(s)}: {why}.")
    return "".join(f'<p class="warn">{html.escape(n)}</p>' for n in notes)


def _amount(value) -> str:
    v = fmt.number(value)
    return fmt.integer(v) if v is not None and v.is_integer() else fmt.sig(v)
