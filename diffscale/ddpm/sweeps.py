"""The sweeps of study 3: what one run reads, what it writes, and the tables built from the runs.

A run config is the config slice one job depends on (so an edit of it re-runs only that job):
seed, the hardware entry, the model spec, the ddpm settings and the `variant` the run measures
(batch per device, gpus, precision, loader workers, compile mode). Each run directory
`results/ddpm/<stage>/<hw>/<variant>/` holds run.json (provenance + results), row.csv (its table
row) and loss.csv (the loss of every step, warm-up included: the same seed and data order in
every variant, so the curves differ only by the optimisation).

Tables (results/bench/ddpm_<stage>.csv, the contract the report reads) add what needs more than
one run: speedup and efficiency against 1 GPU (batch), compile time, per-step saving and the
break-even step count against the `off` run (compile), the ratio to the peer (peer).
"""

from __future__ import annotations

import math
from pathlib import Path

from diffscale import atomic, experiments, models, provenance, vocab
from diffscale.config import schema_entry
from diffscale.errors import ConfigError, DataError
from diffscale.io import csv_text
from diffscale.metrics import compute_ratio, cpus_used

SETTINGS = ("steps", "warmup_steps", "repeats", "compile_backend", "channels_last", "decode_each_step", "lr",
            "adam_betas", "grad_clip", "ema_decay", "ema_every")
# Settings only one stage's windows read (ddpm.train_steps is the tables', not a window's): in the
# other stages' run configs they would re-run every window when edited.
STAGE_SETTINGS = {"profile": ("profile_steps",)}
COMMON = ["hw", "gpus", "batch", "global_batch", "precision", "workers", "compile", "steps_per_s", "images_per_s",
          "time_to_first_step_s", "peak_mem_mb", "loss_end", "device", "random_weights", "run"]
EXTRA = ["cpus", "peak_mem_kind", "compile_backend", "channels_last", "decode_each_step", "window_steps",
         "block_spread", "warmup_steps",
         "overhead_s", "data_wait_s_per_step", "data_wait_frac", "params", "model", "device_detail"]
# What a window measured (the rest of a row is its settings): a run that did not happen has none.
MEASURED = ("steps_per_s", "images_per_s", "time_to_first_step_s", "peak_mem_mb", "peak_mem_kind", "loss_end",
            "window_steps", "block_spread", "overhead_s", "data_wait_s_per_step", "data_wait_frac", "workers_seen",
            "params")
AMP_REFERENCES = ("tf32", "fp32")  # what mixed precision is compared with, in order of preference
STAGE_COLUMNS = {
    "batch": ["speedup", "efficiency"],
    "amp": ["baseline_precision", "vs_baseline", "loss_vs_baseline", "fid", "fid_status"],
    "workers": ["data_wait_s_per_step", "data_wait_frac", "workers_seen"],
    "compile": ["compile_s", "saving_per_step_s", "break_even_steps", "run_steps", "pays_off"],
    "peer": ["impl", "ratio_to_peer", "settings", "status"],
}


# --- run configs --------------------------------------------------------------------------------

def settings_of(stage: str) -> tuple[str, ...]:
    """The ddpm settings a window of `stage` reads."""
    return SETTINGS + STAGE_SETTINGS.get(stage, ())


def check_variant(variant: dict, keys, where: str = "ddpm run") -> dict:
    """`variant` with typed values (strings ok, as --set and the workflow's wildcards give them), or
    one ConfigError naming the key, the value and what is allowed. `keys`: the coordinates a run has
    (those of experiments.ddpm_baseline); the vocabularies are experiments'."""
    choices = {"precision": experiments.DDPM_PRECISIONS, "compile": experiments.DDPM_COMPILE_MODES}
    least = {"batch": 1, "gpus": 1, "workers": 0}
    out = {}
    for key, value in variant.items():
        if key not in keys:
            raise ConfigError(f"{where}: {key!r} is not a coordinate of a run (allowed: {', '.join(keys)})")
        if key in least:
            text = str(value).strip()
            if isinstance(value, bool) or not text.isdecimal() or int(text) < least[key]:
                kind = "a positive" if least[key] else "a non-negative"
                raise ConfigError(f"{where}: {key}: {value!r} is not {kind} integer")
            out[key] = int(text)
        else:
            out[key] = vocab.one_of(value, choices[key], f"{where}: {key}") if key in choices else value
    return out


def run_config(cfg: dict, stage: str, hw: str, **variant) -> dict:
    """What one run reads: the baseline with the stage's coordinates from `variant` (strings ok).
    A key the baseline lacks, a value outside its vocabulary or range, or a hardware key the
    config lacks is one ConfigError (check_variant)."""
    point = experiments.ddpm_baseline(cfg)
    if stage in ("profile", "peer"):
        point["gpus"] = 1  # one process: the profiler's window, and the peer's like-for-like race
    point.update(check_variant(variant, list(point)))
    return {
        "stage": stage,
        "seed": cfg["seed"],
        "hw": hw,
        "hardware": {hw: vocab.job_hardware(cfg, hw, "ddpm run: hw")},  # a price edit re-runs nothing
        "model": cfg["models"]["ddpm_unet"],
        "ddpm": {k: cfg["ddpm"][k] for k in settings_of(stage)},
        "variant": point,
    }


def parse_set(items: list[str], flag: str = "--set") -> dict:
    """KEY=VALUE flags (a variant's coordinates, by hand) as a dict, or a ConfigError naming the bad one."""
    pairs = [item.split("=", 1) for item in items]
    bad = [item for item, pair in zip(items, pairs) if len(pair) != 2 or not pair[0]]
    if bad:
        raise ConfigError(f"{flag}: expected KEY=VALUE, got {bad[0]!r}")
    return dict(pairs)


def check_run_config(rc, source: str = "--run-config") -> dict:
    """A run config read from JSON (ddpm_run.py --run-config) has what a run reads (run_config
    builds it), or one ConfigError naming the missing or wrong key."""
    from dataclasses import fields

    if not isinstance(rc, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    for key, kind in (("stage", str), ("seed", int), ("hw", str), ("hardware", dict), ("model", dict),
                      ("ddpm", dict), ("variant", dict)):
        if key not in rc:
            raise ConfigError(f"{source}: missing key {key!r}")
        if not isinstance(rc[key], kind):
            raise ConfigError(f"{source}: {key}: expected a JSON {'object' if kind is dict else kind.__name__}")
    vocab.hardware_entry(rc, rc["hw"], f"{source}: hw")
    missing = [k for k in settings_of(rc["stage"]) if k not in rc["ddpm"]]
    if missing:
        raise ConfigError(f"{source}: ddpm.{missing[0]} is missing")
    coords = [f.name for f in fields(experiments.DdpmRun) if f.name not in ("stage", "hw")]
    missing = [k for k in coords if k not in rc["variant"]]
    if missing:
        raise ConfigError(f"{source}: variant.{missing[0]} is missing")
    rc["variant"].update(check_variant(rc["variant"], coords, f"{source}: variant"))
    return rc


def table_row(rc: dict, result: dict, run_dir: str | Path) -> dict:
    """The contract columns of one run, plus its settings."""
    v, d = rc["variant"], rc["ddpm"]
    spec = models.parse_spec("ddpm_unet", rc["model"])
    return {
        "hw": rc["hw"], "gpus": v["gpus"],
        "cpus": cpus_used(v["gpus"], result.get("threads")) if result["device"] == "cpu" else None,
        "batch": v["batch"], "global_batch": v["batch"] * v["gpus"],
        "precision": v["precision"], "workers": v["workers"], "compile": v["compile"],
        "steps_per_s": result["steps_per_s"], "images_per_s": result["images_per_s"],
        "time_to_first_step_s": result["time_to_first_step_s"], "peak_mem_mb": result["peak_mem_mb"],
        "loss_end": result["loss_end"], "device": result["device"], "random_weights": spec.pretrained is None,
        "run": str(run_dir), "peak_mem_kind": result["peak_mem_kind"], "compile_backend": d["compile_backend"],
        "channels_last": d["channels_last"], "decode_each_step": d["decode_each_step"],
        "window_steps": result["run_steps"], "block_spread": result.get("block_spread"),
        "warmup_steps": d["warmup_steps"], "overhead_s": result["overhead_s"],
        "data_wait_s_per_step": result["data_wait_s_per_step"], "data_wait_frac": result["data_wait_frac"],
        "workers_seen": len(result["workers_seen"]) if result["workers_seen"] != [-1] else 0,
        "params": result["params"], "model": spec.label, "device_detail": result.get("device_detail", ""),
    }



def write_run(out_dir: str | Path, rc: dict, result: dict, rows: list[dict] | None = None, **extra) -> Path:
    """run.json, loss.csv and row.csv of one run; run.json last (it is what the rule declares last)."""
    out = Path(out_dir)
    rows = rows if rows is not None else [table_row(rc, result, out)]
    losses = result.get("losses", [])
    atomic.write_text(out / "loss.csv", csv_text([{"step": i + 1, "loss": x} for i, x in enumerate(losses)],
                                                 ["step", "loss"]))
    atomic.write_text(out / "row.csv", csv_text(rows, list(dict.fromkeys(k for r in rows for k in r))))
    spec = models.parse_spec("ddpm_unet", rc["model"])
    provenance.write_run_json(out / "run.json", config_slice=rc, models=[spec.describe()],
                              results={k: v for k, v in result.items() if k != "losses"}, rows=rows, **extra)
    return out


# --- tables -------------------------------------------------------------------------------------

def table_kind(stage: str) -> str:
    """Which runs a stage's table is built from: the profiler's, the peer comparison's, or the
    sweeps' (any sweep's: a point two sweeps share is measured once, by the first)."""
    return stage if stage in ("profile", "peer") else "sweep"


def read_rows(run_dirs: list[str | Path], stage: str | None = None) -> list[dict]:
    """The `rows` of every run's run.json, each run given once and, with `stage`, of the kind its
    table takes (a batch run in the profile table would be a row of empty op columns)."""
    rows = []
    for run_dir in provenance.distinct_runs(run_dirs):
        record = provenance.read_record(run_dir)
        if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
            raise DataError(f"{run_dir / provenance.RUN_RECORD}: not a DDPM run record (no rows)")
        ran = (record.get("config") or {}).get("stage")
        if stage is not None and table_kind(str(ran)) != table_kind(stage):
            raise DataError(f"{run_dir / provenance.RUN_RECORD}: a {ran} run; the {stage} table takes "
                            f"{table_kind(stage)} runs" + (f" ({', '.join(experiments.DDPM_STAGES)})"
                                                          if table_kind(stage) == "sweep" else ""))
        rows += record["rows"]
    return rows


def _add_batch(rows: list[dict]) -> None:
    """Throughput speedup against 1 GPU at the same per-device batch (the global batch grows);
    efficiency per GPU, or per CPU on CPUs (metrics.compute_ratio)."""
    one = {(r["hw"], r["batch"], r["precision"]): r for r in rows if r["gpus"] == 1}
    for r in rows:
        base = one.get((r["hw"], r["batch"], r["precision"]))
        r["speedup"] = r["images_per_s"] / base["images_per_s"] if base else None
        r["efficiency"] = r["speedup"] / compute_ratio(r["gpus"], 1, r.get("cpus"), base.get("cpus")) if base else None


def _add_amp(rows: list[dict], inception_weights: str | None) -> None:
    """Per hardware, images/s and the loss (same steps, same draws) against the reference
    precision: tf32 where it ran (fp32 arithmetic on TF32 tensor cores: what PyTorch's convolutions,
    most of this U-Net, do by default), else fp32 with TF32 off. FID's status."""
    from diffscale.ddpm.fid import status

    base = {}
    for name in reversed(AMP_REFERENCES):  # the preferred reference last, so it wins
        base.update({r["hw"]: r for r in rows if r["precision"] == name})
    for r in rows:
        ref = base.get(r["hw"])
        r["baseline_precision"] = ref["precision"] if ref else None
        r["vs_baseline"] = r["images_per_s"] / ref["images_per_s"] if ref and ref["images_per_s"] else None
        r["loss_vs_baseline"] = r["loss_end"] - ref["loss_end"] if ref else None
        r["fid"], r["fid_status"] = None, status(inception_weights)


def _add_compile(rows: list[dict], train_steps: int) -> None:
    """compile_s: the warm-up's extra time over steady steps, beyond eager's own (the off run);
    break-even: compile_s / the per-step saving, against a real run of `train_steps` steps."""
    off = {r["hw"]: r for r in rows if r["compile"] == "off"}
    for r in rows:
        base = off.get(r["hw"])
        r["run_steps"] = train_steps
        if base is None or r["compile"] == "off":
            r.update(compile_s=0.0 if r["compile"] == "off" else None, saving_per_step_s=0.0 if base else None,
                     break_even_steps=0 if r["compile"] == "off" else None, pays_off="baseline")
            continue
        r["compile_s"] = max(0.0, r["overhead_s"] - base["overhead_s"])
        r["saving_per_step_s"] = 1.0 / base["steps_per_s"] - 1.0 / r["steps_per_s"]
        if r["saving_per_step_s"] > 0:
            r["break_even_steps"] = math.ceil(r["compile_s"] / r["saving_per_step_s"])
            r["pays_off"] = "yes" if r["break_even_steps"] <= train_steps else "no"
        else:
            r["break_even_steps"] = None
            r["pays_off"] = "never (no per-step saving)"


def stage_table(stage: str, rows: list[dict], train_steps: int | None = None,
                inception_weights: str | None = None) -> tuple[list[dict], list[str]]:
    """The rows and columns of results/bench/ddpm_<stage>.csv (`train_steps`: the run length
    compile's break-even is judged on; None: the config's default ddpm.train_steps)."""
    if train_steps is None:
        train_steps = schema_entry("ddpm", "train_steps")["default"]
    if stage == "batch":
        _add_batch(rows)
    elif stage == "amp":
        _add_amp(rows, inception_weights)
    elif stage == "compile":
        _add_compile(rows, train_steps)
    columns = list(dict.fromkeys(COMMON + STAGE_COLUMNS.get(stage, []) + EXTRA))
    keys = ("hw", "gpus", "batch", "precision", "workers", "compile", "impl")
    rows.sort(key=lambda r: tuple(str(r.get(k, "")).zfill(8) for k in keys))
    return rows, columns


def write_table(stage: str, run_dirs: list[str | Path], out: str | Path, train_steps: int | None = None,
                inception_weights: str | None = None) -> Path:
    if stage == "profile":
        from diffscale.ddpm.profiler import COLUMNS

        rows, columns = read_rows(run_dirs, stage), COLUMNS
    else:
        rows, columns = stage_table(stage, read_rows(run_dirs, stage), train_steps, inception_weights)
    return atomic.write_text(out, csv_text(rows, columns))


# --- one job --------------------------------------------------------------------------------------

def execute(rc: dict, cache: str | Path, out_dir: str | Path, source: str | Path | None = None) -> dict:
    """Run one job of the study as its run config's stage says, and write its run directory."""
    out = atomic.check_folder_path(out_dir)  # before the measured window, not after it
    stage = rc["stage"]
    if stage == "profile":
        from diffscale.ddpm.profiler import OPS_FILE, TRACE_FILE, profile

        result, rows = profile(rc, cache, out, source)
        write_run(out, rc, result, rows, files={"ops": OPS_FILE, "trace": TRACE_FILE})
    elif stage == "peer":
        from diffscale.ddpm.peer import compare, peer_version

        rows, results = compare(rc, cache, source)
        for row in rows:
            row["run"] = str(out)
        write_run(out, rc, results["ours"], rows, peer={"version": peer_version(), "status": results["peer_status"],
                                                        "results": _drop_losses(results["peer"])})
        if results["peer"]:
            atomic.write_text(out / "loss_peer.csv", csv_text(
                [{"step": i + 1, "loss": x} for i, x in enumerate(results["peer"]["losses"])], ["step", "loss"]))
        result = results["ours"]
    elif stage in experiments.DDPM_STAGES:
        from diffscale.ddpm.loop import run

        result = run(rc, cache, source)
        write_run(out, rc, result)
    else:
        raise DataError(f"run config: unknown stage {stage!r}")
    print(f"{stage} {rc['hw']} {rc['variant']}: {result['steps_per_s']:.3f} steps/s, "
          f"{result['images_per_s']:.1f} images/s, first step {result['time_to_first_step_s']:.2f} s, "
          f"loss {result['loss_end']:.4f}; wrote {out}")
    return result


def _drop_losses(result: dict | None) -> dict | None:
    return None if result is None else {k: v for k, v in result.items() if k != "losses"}
