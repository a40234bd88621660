"""Every try of a job and the seconds it held its hardware, so a retried job is billed for all of them.

Snakemake's benchmark file of a job holds its last try only. With `retries` (profiles/slurm: a
failed job is resubmitted once with twice the time limit) a first try killed at its time limit
would vanish from the job's cost, though the cluster billed it. So each try keeps a small file in
its run's attempts folder (`folder`: `.attempts/<run>` beside the run directory, which is not a
Snakemake output, so a failed try's record outlives the outputs Snakemake removes): when its
process started (interpreter and imports included, as a scheduler bills) and when it was last
alive, rewritten every HEARTBEAT_S seconds by a daemon thread, so a try killed without warning
(SIGKILL at the time limit, a lost node) is counted to within that.

A try reads the records of the tries before it: every try of the same settings (`key`, the run
config's hash) since the job last finished, whether Snakemake retried it in the same run or a
person re-ran it after a failure. The job records
them in its outputs (`earlier_tries`, `earlier_tries_s`), and a try that finishes the job
removes the folder; one that stops early on purpose (a training run's --stop-after, resumed
later) keeps it, with its end. A resumed training run names its earlier invocations in its
checkpoint (their process starts): when the records cover each of them, the run's time is
exact (`run_time`), else the checkpoints' sum is a lower bound.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from diffscale import atomic, timing
from diffscale.errors import ConfigError, DataError, ModelSpecError

HEARTBEAT_S = 30.0
# A try stopped by these ran none of its settings' work that counts: a wrong path, an unreadable
# input, a config mistake. Its record is removed (a corrected re-run is not billed for the typo).
# Out of memory, a NaN loss (TrainingError), a node whose GPU will not start (HardwareError) or a
# crash are tries of the settings, and stay recorded.
INPUT_MISTAKES = (ConfigError, DataError, ModelSpecError)


def folder(run_dir: str | Path) -> Path:
    """The attempts folder of the job that writes `run_dir`: `<parent>/.attempts/<run name>`."""
    run_dir = Path(run_dir)
    return run_dir.parent / ".attempts" / run_dir.name


def earlier_tries(where: Path) -> list[dict]:
    """The tries recorded in `where`, oldest first, each with `held_s` (last alive − started). A
    file that is not a try's record is skipped rather than failing the job that reads it."""
    tries = []
    for path in Path(where).glob("try-*.json"):
        try:
            record = json.loads(path.read_text())
            started, alive = float(record["started_at"]), float(record["alive_at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        tries.append({**record, "held_s": max(0.0, alive - started)})
    return sorted(tries, key=lambda t: t["started_at"])


@dataclass
class Try:
    """This try, as `recorded` yields it: the tries before it, and whether it finished the job
    (set `finished = False` when it stopped early on purpose: the records stay for the next one)."""

    earlier: list[dict] = field(default_factory=list)
    finished: bool = True


def run_time(earlier: list[dict], invoked: list[tuple[float | None, float]], this_s: float) -> dict:
    """What a training run held its hardware for, counting its failed and stopped invocations.

    `invoked`: (process start, seconds to its last checkpoint) of each earlier invocation its
    checkpoint names (start None: not recorded); `this_s`: this invocation's seconds. When a try's
    record matches each earlier invocation the time is exact (`job_time_whole`): every earlier
    try's seconds (a matched one's at least its checkpointed seconds: a killed try's record ends
    at its last heartbeat) plus this one's. Else it is the lower bound, every invocation to its
    last checkpoint."""
    def match(started: float | None) -> dict | None:
        return next((t for t in earlier if started is not None and abs(t["started_at"] - started) < 0.05), None)

    matched = [(match(started), seconds) for started, seconds in invoked]
    whole = all(t is not None for t, _ in matched)
    # a killed try's checkpointed seconds can run past its record's last heartbeat
    earlier_s = sum(t["held_s"] for t in earlier) + sum(max(0.0, seconds - t["held_s"])
                                                        for t, seconds in matched if t is not None)
    lower_s = sum(seconds for _, seconds in invoked) + this_s
    return {"earlier_tries": len(earlier), "earlier_tries_s": earlier_s,
            "job_time_s": earlier_s + this_s if whole else lower_s, "job_time_whole": whole}


@contextmanager
def recorded(where: str | Path | None, key: str = "", heartbeat_s: float = HEARTBEAT_S) -> Iterator[Try]:
    """Record this process as a try of the job whose attempts folder is `where`, and yield it
    with the tries before it that ran the same settings (`key`, e.g. the run config's hash: a try
    of settings since changed is not this run's cost, and its record is dropped). A try that
    raises keeps its record, with the moment it failed, unless a mistake in its input or config
    stopped it (INPUT_MISTAKES); one that finishes the job removes the folder, one that stopped
    early keeps it. `where` None: nothing is recorded. Recording never
    fails the job: a record it cannot write (a full disk) is left as it was."""
    if where is None:
        yield Try()
        return
    where = Path(where)
    _make(where)
    tries = earlier_tries(where)
    for stale in (t for t in tries if t.get("key", "") != key):
        (where / _file_name(stale)).unlink(missing_ok=True)
    this = Try([t for t in tries if t.get("key", "") == key])
    # the start a training loop's checkpoint names (timing.mark_job_start), so the two match exactly
    started = timing.job_started_at() or timing.process_started()
    record = {"started_at": started, "host": socket.gethostname(), "pid": os.getpid(), "key": key}
    mine = where / _file_name(record)

    def alive() -> None:
        try:
            atomic.write_json(mine, {**record, "alive_at": time.time()})
        except OSError:  # the job's own error (or result) matters more than this record
            pass

    alive()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            alive()

    thread = threading.Thread(target=beat, name="attempts-heartbeat", daemon=True)
    thread.start()
    try:
        yield this
    except INPUT_MISTAKES:
        stop.set()
        thread.join()
        mine.unlink(missing_ok=True)  # stopped by its input or config: not a try of these settings
        _remove_empty(where)
        raise
    except BaseException:
        stop.set()
        thread.join()
        alive()  # the moment it failed
        raise
    stop.set()
    thread.join()
    if not this.finished:
        alive()  # its end
        return
    shutil.rmtree(where, ignore_errors=True)
    _remove_empty(where)


def _remove_empty(where: Path) -> None:
    """`where` if empty, then its .attempts parent if that is empty too: no empty folders among the runs."""
    for folder_ in (where, where.parent) if where.parent.name == ".attempts" else (where,):
        try:
            folder_.rmdir()
        except OSError:  # gone already, or another try's or job's record is in it
            pass


def _file_name(record: dict) -> str:
    return f"try-{float(record['started_at']):.6f}-{record['pid']}.json"


def _make(where: Path) -> None:
    """mkdir -p, again when a job beside removed the shared parent between its two steps."""
    for _ in range(5):
        try:
            where.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    where.mkdir(parents=True, exist_ok=True)
