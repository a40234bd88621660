"""The metrics rows of a training run: loss, lr, grad norm, samples/s, TFLOP/s, MFU, data wait.

Losses stay on the device between rows, so the loop synchronises once per row, not per step;
each row checks every step's loss for NaN/inf (guards.check_finite) before anything is saved.

    meter = Meter(rows, batch=global_batch, world=ctx.world, flops_per_sample=fps, peak=peak,
                  start_step=start, elapsed_before=seconds_of_earlier_segments, verbose=ctx.is_main)
    for step in range(start, end):
        with meter.waiting():                  # time spent waiting for data
            batch = next(batches)
        ...
        meter.add(loss.detach(), grad_norm, lr)
        if (step + 1) % log_every == 0:
            meter.row(step + 1, ctx.mean(meter.pending_losses()).tolist(), last_good)
        if checkpointing:
            ...save...; meter.restart()        # checkpoint I/O is not part of the measured rate

Rows are dicts with `COLUMNS`; the first row after each start is marked warmup=1. At the end,
`steady_rate(rows)` (median samples/s without warm-up rows), `final_loss(rows)` and
`metrics_csv(rows)` give the run's summary numbers and its metrics.csv.
"""

from __future__ import annotations

import contextlib
import csv
import io
import statistics
import time

from diffscale.metrics import achieved
from diffscale.train.core.guards import LastGood, check_finite

COLUMNS = ["step", "loss", "lr", "grad_norm", "samples_per_s", "tflops", "mfu", "data_wait_frac", "elapsed_s",
           "warmup"]


class Meter:
    """Collects per-step losses and turns them into metrics rows (appended to `rows`)."""

    def __init__(self, rows: list[dict], batch: int, world: int, flops_per_sample: int | None, peak: float | None,
                 start_step: int, elapsed_before: float = 0.0, verbose: bool = True):
        self.rows, self.batch, self.world = rows, batch, world
        self.flops_per_sample, self.peak, self.verbose = flops_per_sample, peak, verbose
        self.elapsed_before, self.started = elapsed_before, time.perf_counter()
        self.last_step, self.first = start_step, True
        self._losses, self._norms, self._lr = [], [], None
        self.restart()

    def restart(self) -> None:
        """Start the rate clock (and the data-wait sum) again: time until now is not measured."""
        self.clock, self.data_wait = time.perf_counter(), 0.0

    @contextlib.contextmanager
    def waiting(self):
        """Count the block's time as waiting for data."""
        start = time.perf_counter()
        yield
        self.data_wait += time.perf_counter() - start

    def add(self, loss, grad_norm, lr: float) -> None:
        """One step's loss (a device tensor), gradient norm (tensor or None) and learning rate."""
        self._losses.append(loss)
        if grad_norm is not None:
            self._norms.append(grad_norm)
        self._lr = lr

    def pending_losses(self):
        """This process's losses since the last row, one per step, as one tensor to reduce."""
        import torch

        return torch.stack(self._losses)

    def row(self, done: int, losses: list[float], last_good: LastGood) -> dict:
        """Check the (process-averaged) losses and append a row; TrainingError on NaN/inf."""
        import torch

        check_finite(losses, done, last_good)
        seconds = time.perf_counter() - self.clock
        rate = (done - self.last_step) * self.batch / seconds
        norms = torch.stack(self._norms).tolist() if self._norms else []
        tflops, mfu = achieved(self.flops_per_sample, rate, self.peak, self.world)
        row = {"step": done, "loss": statistics.fmean(losses), "lr": self._lr,
               "grad_norm": statistics.fmean(norms) if norms else None, "samples_per_s": rate,
               "tflops": tflops, "mfu": mfu,
               "data_wait_frac": self.data_wait / seconds,
               "elapsed_s": self.elapsed_before + time.perf_counter() - self.started, "warmup": int(self.first)}
        self.rows.append(row)
        if self.verbose:
            print(f"step {done:>6}  loss {row['loss']:.4f}  lr {row['lr']:.3g}  {rate:8.2f} samples/s"
                  + (f"  MFU {mfu:.1%}" if mfu is not None else f"  {tflops:.3g} TFLOP/s" if tflops is not None else "")
                  + f"  data wait {row['data_wait_frac']:.1%}", flush=True)
        self._losses, self._norms = [], []
        self.last_step, self.first = done, False
        self.restart()
        return row


def steady_rate(rows: list[dict]) -> float:
    """Samples/s after warm-up: the median over metrics rows, each process start's first row left out."""
    rates = [r["samples_per_s"] for r in rows if not r["warmup"]] or [r["samples_per_s"] for r in rows]
    return statistics.median(rates)


def final_loss(rows: list[dict]) -> float:
    """Mean loss of the last tenth of the metrics rows (at least the last row)."""
    tail = rows[-max(1, len(rows) // 10):]
    return statistics.fmean(r["loss"] for r in tail)


def metrics_csv(rows: list[dict]) -> str:
    """metrics.csv's text: COLUMNS, None as empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    return buf.getvalue()
