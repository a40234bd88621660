"""Stopping a run with one line that says where and what to change: NaN/inf losses, out of memory.

    last_good = guards.LastGood(start_checkpoint, start_step)     # (None, None) on a fresh run
    with guards.out_of_memory(ctx.device, micro, "train.batch_size 8 / (2 processes x grad_accum 1)",
                              "lower train.batch_size or raise train.grad_accum"):
        for step in ...:
            ...
            guards.check_finite(losses, done, last_good)        # the losses of steps done-len+1..done
            ...
            last_good.update(path, done)                        # after each checkpoint

A non-finite loss raises TrainingError naming the first bad step and the last good checkpoint
(kept on disk: nothing is saved after the check fails). `meter.Meter.row` calls `check_finite`
for every metrics row, so a loop using the meter gets it for free.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from diffscale.errors import UserError
from diffscale.train.core import compat

DIVERGED_ADVICE = ("Lower train.lr, raise train.warmup_steps or train.grad_clip, or train in bf16 instead of "
                   "fp16")


class TrainingError(UserError):
    """The run cannot go on: the loss diverged, or a batch does not fit in memory."""


class LastGood:
    """The last checkpoint written (path and step), for the message when a run must stop."""

    def __init__(self, path: str | Path | None = None, step: int | None = None):
        self.path, self.step = (path, step) if path else (None, None)

    def update(self, path: str | Path, step: int) -> None:
        self.path, self.step = path, step

    def describe(self) -> str:
        if self.path:
            return f"the last good checkpoint (step {self.step}) is kept at {self.path}"
        return "no checkpoint was written"


def check_finite(losses: list[float], done: int, last_good: LastGood, advice: str = DIVERGED_ADVICE) -> None:
    """Raise TrainingError at the first non-finite loss; `losses` are steps done-len(losses)+1 .. done."""
    for i, value in enumerate(losses):
        if not math.isfinite(value):
            raise TrainingError(f"loss is {value} at step {done - len(losses) + i + 1}; stopped "
                                f"({last_good.describe()}). {advice}")


@contextlib.contextmanager
def out_of_memory(device: str, micro_batch: int, how: str, advice: str):
    """Turn an out-of-memory error inside the block into TrainingError("out of memory on {device}
    with micro-batch {micro_batch} ({how}); {advice}")."""
    try:
        yield
    except compat.oom_errors():
        raise TrainingError(f"out of memory on {device} with micro-batch {micro_batch} ({how}); {advice}") from None
