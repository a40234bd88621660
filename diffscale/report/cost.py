"""What a run cost, from the config's `hardware.<key>.price_per_hour`.

A price is USD per hour of one share of the hardware as a job requests it: one GPU (with its
`cpus_per_gpu` and memory) on a GPU entry, one job of the entry's `cpus` on a CPU entry. A job is
billed for what it asked SLURM for (diffscale.resources.job_resources, the one owner of that), for
its whole wall time, start-up included: a GPU held while the job imports, loads and warms up is
billed like a busy one. Jobs the table did not place (dask's worker jobs on SLURM) are billed per
CPU-second at the price of the table's CPU entry for their partition.
"""

from __future__ import annotations

import copy
import html
import math
from dataclasses import dataclass, field

from diffscale import resources
from diffscale.config import fill_defaults, schema
from diffscale.hardware import check_table
from diffscale.report import fmt

FORMULA = ("cost = price_per_hour × shares × wall time in hours, where shares is the GPUs a GPU job "
           "asks for, or the CPUs a CPU job asks for ÷ the hardware entry's cpus")
IDLE = ("Wall time includes start-up (imports, model load, warm-up, process or cluster start): "
        "hardware held while idle is billed, so it is counted.")


@dataclass
class Prices:
    hardware: dict = field(default_factory=dict)  # the config's hardware table
    source: str = "the config"

    def __post_init__(self) -> None:
        check_table(self.hardware, self.source)  # a ConfigError, not a traceback in a price lookup
        table = copy.deepcopy(self.hardware)
        fill_defaults({"hardware": table}, {"properties": {"hardware": schema()["properties"]["hardware"]}},
                      schema())
        self.hardware = table

    def per_hour(self, hw: str) -> float | None:
        price = (self.hardware.get(hw) or {}).get("price_per_hour")
        return float(price) if price else None

    def shares(self, hw: str, gpus: int = 0, workers: int = 1, cpus: int | None = None) -> float:
        entry = self.hardware[hw]
        found = resources.job_resources({"hardware": self.hardware}, hw, int(gpus), int(workers), cpus=cpus)
        if resources.requests_gpus(entry, int(gpus)):
            return float(gpus)
        return found["cpus_per_task"] / entry["cpus"]

    def job(self, hw: str, seconds: float, gpus: int = 0, workers: int = 1, cpus: int | None = None) -> float | None:
        """USD of one job on `hw` that ran `seconds` with `gpus` GPUs and `workers` processes; `cpus`:
        a CPU job that asked for exactly that many (an embedding scaling run w{N}: N)."""
        price = self.per_hour(hw)
        s = fmt.number(seconds)
        if price is None or s is None or math.isinf(s):
            return None
        try:
            shares = self.shares(hw, fmt.as_int(gpus), fmt.as_int(workers, 1), fmt.as_int(cpus) or None)
        except Exception:  # a key or count this config cannot place: no price rather than a wrong one
            return None
        return price * shares * s / 3600.0

    def cpu_seconds(self, partition: str, cpu_s: float) -> float | None:
        """USD of `cpu_s` CPU-seconds held by jobs on `partition` that did not come from the hardware
        table (dask's worker jobs on SLURM): the per-CPU price of the table's CPU entries on that
        partition; None when none has a price, or they disagree (no price rather than a guess)."""
        s = fmt.number(cpu_s)
        rates = {self.per_hour(hw) / entry["cpus"] for hw, entry in self.hardware.items()
                 if entry["partition"] == partition and not entry.get("gpus_per_node", 0) and self.per_hour(hw)}
        if s is None or math.isinf(s) or len(rates) != 1:
            return None
        return rates.pop() * s / 3600.0

    def table_html(self, used: list[str]) -> str:
        rows = []
        for hw in used:
            entry = self.hardware.get(hw)
            if entry is None:
                rows.append(f"<tr><td>{html.escape(hw)}</td><td colspan=3>not in this config's hardware table"
                            f"</td></tr>")
                continue
            share = (f"1 GPU ({entry.get('gpu_model', '')}) + {entry['cpus_per_gpu']} CPUs"
                     if entry.get("gpus_per_node", 0) > 0 else f"{entry['cpus']} CPUs")
            price = self.per_hour(hw)
            rows.append(f"<tr><td>{html.escape(hw)}</td><td>{html.escape(entry['partition'])}</td>"
                        f"<td>{html.escape(share)}</td><td>{'$%.2f' % price if price else 'no price set'}</td></tr>")
        return ('<table class="short prices"><thead><tr><th>hardware key</th><th>partition</th><th>one share</th>'
                f"<th>USD per hour</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
