"""The experiment matrix: which runs each study asks for, as coordinates.

Output paths carry these coordinates in a fixed order (results/<study>/<stage>/<hw>/<variant>/…),
so `rules/common.smk` turns each run into a path and a glob of results answers "what ran".
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

from diffscale import vocab
from diffscale.errors import ConfigError


@dataclass(frozen=True)
class EmbedRun:
    backend: str
    policy: str
    workers: int
    hw: str

    @property
    def name(self) -> str:
        return vocab.embed_run_name(self.backend, self.policy, self.workers)


@dataclass(frozen=True)
class TrainRun:
    hw: str
    precision: str
    gpus: int
    grad_accum: int = 1  # micro-batches per step and process: a setting of the run, not a coordinate

    @property
    def variant(self) -> str:
        return vocab.TRAIN_VARIANT.format(precision=self.precision, gpus=self.gpus)


@dataclass(frozen=True)
class FluxRun:
    hw: str
    gpus: int
    steps: int

    @property
    def variant(self) -> str:
        return vocab.FLUX_VARIANT.format(gpus=self.gpus, steps=self.steps)


# Study 3's vocabularies (the schema's enums, argparse choices and wildcard constraints follow these).
DDPM_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")  # fp32 = TF32 off; tf32 = fp32 with TF32 matmuls/convs
DDPM_COMPILE_MODES = ("off", "default", "max-autotune", "reduce-overhead")
DDPM_STAGES = ("batch", "amp", "workers", "compile")  # the sweeps; profile and peer are single runs
DDPM_TABLES = ("profile", *DDPM_STAGES, "peer")  # every stage: a run each, a table each (report order)


@dataclass(frozen=True)
class DdpmRun:
    """One measured window of the DDPM study: a sweep (`stage`) and the point it measures."""

    stage: str
    hw: str
    batch: int  # per device
    gpus: int
    precision: str
    workers: int
    compile: str

    @property
    def variant(self) -> str:
        """The coordinate the stage varies, as the last path component of its run directory."""
        return {"batch": f"b{self.batch}-g{self.gpus}", "amp": self.precision, "workers": f"w{self.workers}",
                "compile": self.compile}[self.stage]


def embed_runs(cfg: dict) -> list[EmbedRun]:
    """A CPU run `w{N}` runs on N CPUs. serial runs the 1-CPU baseline (1 process × 1 thread) and,
    with policy intraop, 1 process × N threads at every N; each parallel backend runs pinned and
    naive (N processes) at every N.

    The gpu backend pins one process per device, so it has no thread policy of its own.
    """
    embed = cfg["embed"]
    runs: list[EmbedRun] = []
    for backend in embed["backends"]:
        if backend == "gpu":
            runs += [EmbedRun("gpu", "pinned", n, embed["gpu_hardware"]) for n in embed.get("gpus", [])]
        elif backend == "serial":
            runs.append(EmbedRun(*vocab.EMBED_BASELINE, embed["hardware"]))
            if "intraop" in embed["policies"]:
                runs += [EmbedRun("serial", "intraop", n, embed["hardware"]) for n in embed["workers"] if n > 1]
        else:
            runs += [EmbedRun(backend, p, n, embed["hardware"])
                     for p in embed["policies"] if p != "intraop" for n in embed["workers"]]
    return runs


def _expand(matrix: list[dict], keys: list[str]) -> list[dict]:
    seen: dict[tuple, dict] = {}
    for entry in matrix:
        for values in itertools.product(*(entry[k] for k in keys)):
            seen.setdefault(values, dict(zip(keys, values)))
    return list(seen.values())


def train_runs(cfg: dict) -> list[TrainRun]:
    """The training runs; each takes its matrix entry's grad_accum, else train.grad_accum (a GPU
    with less memory runs the same global batch as more, smaller micro-batches)."""
    runs: dict[tuple, tuple[int, TrainRun]] = {}
    for i, entry in enumerate(cfg["train"]["matrix"]):
        accum = entry.get("grad_accum", cfg["train"].get("grad_accum", 1))
        for hw, precision, gpus in itertools.product(entry["hw"], entry["precision"], entry["gpus"]):
            first, run = runs.setdefault((hw, precision, gpus), (i, TrainRun(hw, precision, gpus, accum)))
            if run.grad_accum != accum:
                raise ConfigError(f"train.matrix[{i}].grad_accum: {accum}, but train.matrix[{first}] runs "
                                  f"{hw}/{run.variant} too, with grad_accum {run.grad_accum}: one value per run")
    return [run for _, run in runs.values()]


def train_run(cfg: dict, hw: str, precision: str, gpus: int) -> TrainRun:
    """One training run by its coordinates; one outside the matrix (a run by hand) takes train.grad_accum."""
    found = [r for r in train_runs(cfg) if (r.hw, r.precision, r.gpus) == (hw, precision, gpus)]
    return found[0] if found else TrainRun(hw, precision, gpus, cfg["train"].get("grad_accum", 1))


def flux_runs(cfg: dict) -> list[FluxRun]:
    """The fine-tunes: each entry's hw x gpus x steps, its steps where it sets them, else flux.steps
    (a CPU entry times a few steps where a GPU runs the study's hundreds)."""
    flux = cfg["flux"]
    entries = [{**entry, "steps": entry.get("steps", flux["steps"])} for entry in flux["matrix"]]
    return [FluxRun(c["hw"], c["gpus"], c["steps"]) for c in _expand(entries, ["hw", "gpus", "steps"])]


def flux_infer(cfg: dict, hw: str) -> dict:
    """The inference timing settings on `hw`: flux.infer, with the keys replaced that a matrix entry
    naming `hw` sets in its own `infer` (one value per hardware key: two entries that differ are an error)."""
    first, own = None, {}
    for i, entry in enumerate(cfg["flux"]["matrix"]):
        if hw not in entry["hw"] or "infer" not in entry:
            continue
        if first is not None and entry["infer"] != own:
            raise ConfigError(f"flux.matrix[{i}].infer: {entry['infer']}, but flux.matrix[{first}] times {hw} "
                              f"too, with infer {own}: one value per hardware key")
        first, own = i, entry["infer"]
    return {**copy.deepcopy(cfg["flux"]["infer"]), **copy.deepcopy(own)}


def ddpm_baseline(cfg: dict) -> dict:
    """The point every sweep varies one factor around: the first value of each list."""
    d = cfg["ddpm"]
    return dict(batch=d["batch_sizes"][0], gpus=d["gpus"][0], precision=d["precisions"][0],
                workers=d["loader_workers"][0], compile="off")


def ddpm_runs(cfg: dict) -> list[DdpmRun]:
    """The optimisation study varies one factor at a time around a baseline, as the study did:
    batch size x GPUs as a grid, then precision, DataLoader workers and torch.compile mode.

    The compile sweep always measures `off` too: the break-even step count needs it.
    """
    d = cfg["ddpm"]
    base = ddpm_baseline(cfg)
    runs: dict[DdpmRun, None] = {}
    for hw in d["hardware"]:
        for batch, gpus in itertools.product(d["batch_sizes"], d["gpus"]):
            runs[DdpmRun("batch", hw, **{**base, "batch": batch, "gpus": gpus})] = None
        for precision in d["precisions"]:
            runs[DdpmRun("amp", hw, **{**base, "precision": precision})] = None
        for workers in d["loader_workers"]:
            runs[DdpmRun("workers", hw, **{**base, "workers": workers})] = None
        for mode in dict.fromkeys(["off", *d["compile"]]):
            runs[DdpmRun("compile", hw, **{**base, "compile": mode})] = None
    return list(runs)


def ddpm_point(run: DdpmRun) -> tuple:
    return run.hw, run.batch, run.gpus, run.precision, run.workers, run.compile


def ddpm_owners(cfg: dict) -> dict[DdpmRun, DdpmRun]:
    """Each run -> the run that measures its point: the first stage's (the baseline is measured once,
    by the batch sweep, and its row appears in every sweep's table)."""
    first: dict[tuple, DdpmRun] = {}
    for run in ddpm_runs(cfg):
        first.setdefault(ddpm_point(run), run)
    return {run: first[ddpm_point(run)] for run in ddpm_runs(cfg)}
