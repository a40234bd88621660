"""Every try of a job and the seconds it held its hardware, so a retried job is billed for all of them.

Snakemake's benchmark file of a job holds its last try only. With `retries` (profiles/slurm: a
failed job is resubmitted once with twice the time limit) a first try killed at its time limit
would vanish from the job's cost, though the cluster billed it. So each try keeps a small file in
its run's attempts folder (`folder`: `.attempts/<run>` beside the run directory, which is not a
Snakemake output, so a failed try's record outlives the outputs Snakemake removes): when its
process started (interpreter and imports included, as a scheduler bills) and when it was last
alive, rewritten every HEARTBEAT_S seconds by a daemon thread, so a try killed without warning
(SIGKILL at the time limit, a lost node) is counted to within that.

A try reads the records of the tries before it: every try since the job last finished, whether
Snakemake retried it in the same run or a person re-ran it after a failure. The job records
them in its outputs (the embedding stage: `earlier_tries` and `earlier_tries_s` of timing.json),
and a try that finishes removes the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from diffscale import atomic, timing

HEARTBEAT_S = 30.0


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


@contextmanager
def recorded(where: str | Path | None, heartbeat_s: float = HEARTBEAT_S) -> Iterator[list[dict]]:
    """Record this process as a try of the job whose attempts folder is `where`, and yield the
    tries before it. A try that raises keeps its record, with the moment it failed; one that
    finishes removes the folder. `where` None: nothing is recorded."""
    if where is None:
        yield []
        return
    where = Path(where)
    where.mkdir(parents=True, exist_ok=True)
    earlier = earlier_tries(where)
    record = {"started_at": timing.process_started(), "host": socket.gethostname(), "pid": os.getpid()}
    mine = where / f"try-{record['started_at']:.6f}-{record['pid']}.json"

    def alive() -> None:
        atomic.write_json(mine, {**record, "alive_at": time.time()})

    alive()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            alive()

    thread = threading.Thread(target=beat, name="attempts-heartbeat", daemon=True)
    thread.start()
    try:
        yield earlier
    except BaseException:
        stop.set()
        thread.join()
        alive()  # the moment it failed
        raise
    stop.set()
    thread.join()
    shutil.rmtree(where, ignore_errors=True)  # .attempts itself stays: a job beside may be creating its own
