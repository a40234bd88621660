"""The experiment matrix: which runs each study asks for, as coordinates.

Output paths carry these coordinates in a fixed order (results/<study>/<stage>/<hw>/<variant>/…),
so `rules/common.smk` turns each run into a path and a glob of results answers "what ran".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from diffscale import vocab


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

    @property
    def variant(self) -> str:
        return f"{self.precision}-g{self.gpus}"


@dataclass(frozen=True)
class FluxRun:
    hw: str
    gpus: int
    steps: int

    @property
    def variant(self) -> str:
        return f"g{self.gpus}-s{self.steps}"


@dataclass(frozen=True)
class DdpmRun:
    hw: str
    batch_size: int
    gpus: int
    amp: bool
    loader_workers: int
    compile: bool

    @property
    def variant(self) -> str:
        return (
            f"b{self.batch_size}-g{self.gpus}-amp{int(self.amp)}"
            f"-nw{self.loader_workers}-c{int(self.compile)}"
        )


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
            runs.append(EmbedRun("serial", "pinned", 1, embed["hardware"]))
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
    return [TrainRun(**c) for c in _expand(cfg["train"]["matrix"], ["hw", "precision", "gpus"])]


def flux_runs(cfg: dict) -> list[FluxRun]:
    flux = cfg["flux"]
    return [
        FluxRun(c["hw"], c["gpus"], steps)
        for c in _expand(flux["matrix"], ["hw", "gpus"])
        for steps in flux["steps"]
    ]


def ddpm_runs(cfg: dict) -> list[DdpmRun]:
    """The optimisation study varies one factor at a time around a baseline, as the study did.

    The baseline is the first value of each list; a full product of five factors would multiply
    the cost for little insight.
    """
    d = cfg["ddpm"]
    base = dict(
        batch_size=d["batch_sizes"][0],
        gpus=d["gpus"][0],
        amp=d["amp"][0],
        loader_workers=d["loader_workers"][0],
        compile=d["compile"][0],
    )
    factors = {
        "batch_size": d["batch_sizes"],
        "gpus": d["gpus"],
        "amp": d["amp"],
        "loader_workers": d["loader_workers"],
        "compile": d["compile"],
    }
    runs: dict[DdpmRun, None] = {}
    for hw in d["hardware"]:
        runs[DdpmRun(hw=hw, **base)] = None
        # batch size × GPUs is studied as a grid, the rest one at a time.
        for bs, g in itertools.product(factors["batch_size"], factors["gpus"]):
            runs[DdpmRun(hw=hw, **{**base, "batch_size": bs, "gpus": g})] = None
        for key in ("amp", "loader_workers", "compile"):
            for value in factors[key]:
                runs[DdpmRun(hw=hw, **{**base, key: value})] = None
    return list(runs)
