"""The parallel backends, one small class each behind one interface:

    with make_backend(name, ...) as backend:      # start processes / cluster
        results = backend.run(tasks)              # one diffscale.embed.worker.run_worker per task

Every backend runs one task per worker, so each worker process loads its model once (inside
run_worker) and nothing heavy crosses the task graph: a task is a few hundred bytes per item.

  serial           in this process
  multiprocessing  one spawned process per worker (spawn: forking a process that has started
                   OpenMP threads is unsafe); a worker that dies is seen at once by its pipe
  joblib           joblib.Parallel on loky, as a joblib user would write it (so n_jobs=1 runs
                   in this process, as joblib does); fresh workers each run, so thread settings
                   and start-up costs of one run never leak into the next
  dask             dask.distributed: a LocalCluster by default, an existing scheduler
                   (`dask.address`) or SLURM jobs through dask-jobqueue (`dask.cluster: slurm`,
                   dask_slurm.py);
                   task k is pinned to worker k and is not retried elsewhere (allowed-failures 0)
  gpu              one spawned process per device, the overlapped loader/compute/writer schedule

A worker that raises reports the shard it was on (WorkerFailed). A worker process that dies
(SIGKILL from the OOM killer, a segfault) is named from what the backend knows — the process's exit
code, loky's record of the culprit, dask's KilledWorker — and the shard from the status file the
worker keeps.
"""

from __future__ import annotations

import ast
import logging
import multiprocessing
import multiprocessing.util
import signal
from multiprocessing.connection import wait

from diffscale.embed.worker import WorkerFailed, WorkerTask, read_status, run_worker
from diffscale.errors import ConfigError
from diffscale.vocab import BACKENDS, one_of


def describe_exit(code: int | None) -> str:
    if code is None:
        return "died"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def died(task: WorkerTask, how: str, pid: int | None = None) -> WorkerFailed:
    """The error for a worker process that ended without a result, naming its shard."""
    status = read_status(task.out_dir, task.worker) or {}
    pid = pid or status.get("pid")
    where = f"on {status['shard']}" if status.get("shard") else "before its first shard"
    return WorkerFailed(f"{task.run}: {task.label()}{f' (pid {pid})' if pid else ''} {how} {where}")


class Backend:
    name = ""

    def __init__(self, workers: int):
        self.workers = workers
        self.info: dict = {}  # what the run records about the backend (cluster kind, addresses…)

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, tasks: list[WorkerTask]) -> list[dict]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SerialBackend(Backend):
    name = "serial"

    def run(self, tasks: list[WorkerTask]) -> list[dict]:
        return [run_worker(task) for task in tasks]


def _process_main(task: WorkerTask, conn) -> None:
    try:
        conn.send(("ok", run_worker(task)))
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
        conn.send(("error", exc))
    finally:
        conn.close()


class ProcessBackend(Backend):
    """multiprocessing, and gpu (one process per device): processes this job owns directly."""

    def __init__(self, workers: int, name: str = "multiprocessing"):
        super().__init__(workers)
        self.name = name
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict = {}
        self.info = {"start_method": "spawn"}

    def run(self, tasks: list[WorkerTask]) -> list[dict]:
        pending = {}
        for task in tasks:
            receiver, sender = self.context.Pipe(duplex=False)
            process = self.context.Process(target=_process_main, args=(task, sender),
                                           name=f"embed-{self.name}-w{task.worker}")
            process.start()
            sender.close()  # the child holds the only write end: its death reads as EOF
            self.processes[task.worker] = process
            pending[task.worker] = (task, process, receiver)
        results = {}
        while pending:
            ready = wait([r for _, _, r in pending.values()] + [p.sentinel for _, p, _ in pending.values()])
            for worker, (task, process, receiver) in list(pending.items()):
                if receiver in ready or (process.sentinel in ready and not receiver.poll()):
                    try:
                        kind, payload = receiver.recv()
                    except EOFError:
                        process.join(timeout=10)
                        raise died(task, describe_exit(process.exitcode), process.pid) from None
                    if kind == "error":
                        raise payload
                    results[worker] = payload
                    del pending[worker]
        return [results[task.worker] for task in tasks]

    def close(self) -> None:
        for process in self.processes.values():
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
        self.processes.clear()


class _LokyCulprit(logging.Filter):
    """Catches loky's own note of which worker process broke the pool.

    loky kills every other worker (SIGKILL) the moment one dies, so exit codes alone cannot tell
    the culprit from its siblings; loky's executor logs the process it saw die, at debug level.
    A filter (not a handler) reads it: loky copies the multiprocessing logger's handlers' format
    into its workers and expects them to have one."""

    MARK = "Workers that might have caused the breakage:"

    def __init__(self):
        super().__init__()
        self.exits: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.MARK in message:
            try:
                self.exits.update(ast.literal_eval(message.split(self.MARK, 1)[1].strip()))
            except (ValueError, SyntaxError):
                pass
        return True

    def __enter__(self) -> "_LokyCulprit":
        self.logger = multiprocessing.util.get_logger()
        self.previous = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeFilter(self)
        self.logger.setLevel(self.previous)


class JoblibBackend(Backend):
    name = "joblib"

    def __init__(self, workers: int):
        super().__init__(workers)
        self.info = {"joblib_backend": "loky" if workers > 1 else "sequential (n_jobs=1 runs in-process)"}

    def run(self, tasks: list[WorkerTask]) -> list[dict]:
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        try:
            with _LokyCulprit() as culprit:
                parallel = Parallel(n_jobs=self.workers, backend="loky", batch_size=1, pre_dispatch="all")
                return list(parallel(delayed(run_worker)(task) for task in tasks))
        except TerminatedWorkerError as exc:
            raise self._name_culprit(tasks, culprit.exits, exc) from None

    @staticmethod
    def _name_culprit(tasks: list[WorkerTask], exits: dict[str, int], exc: Exception) -> WorkerFailed:
        statuses = {t.worker: read_status(t.out_dir, t.worker) or {} for t in tasks}
        for task in tasks:
            process = statuses[task.worker].get("process")
            if process in exits and statuses[task.worker].get("state") != "done":
                return died(task, describe_exit(exits[process]))
        in_flight = [t for t in tasks if statuses[t.worker].get("state") in ("loading", "running", "writing")]
        if len(in_flight) == 1:
            return died(in_flight[0], "died")
        names = ", ".join(f"worker {t.worker} on {statuses[t.worker].get('shard') or 'start-up'}" for t in in_flight)
        first = str(exc).strip().splitlines()[0]
        return WorkerFailed(f"{tasks[0].run}: a joblib worker died ({first}); in flight: {names or 'none'}")

    def close(self) -> None:
        if self.workers > 1:
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True, kill_workers=True)


class DaskBackend(Backend):
    name = "dask"

    def __init__(self, workers: int, dask_settings: dict, threads: int | None, label: str):
        super().__init__(workers)
        self.settings = {"cluster": "local", "address": None, "slurm": {}, "timeout_s": 300, **(dask_settings or {})}
        self.threads = threads
        self.label = label
        self.cluster = None
        self.client = None
        self._start()

    def _start(self) -> None:
        import dask
        from distributed import Client

        kind = self.settings["cluster"]
        timeout = self.settings["timeout_s"]
        # A worker that dies fails its task at once, instead of the task being re-run elsewhere.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            if kind == "local":
                from distributed import LocalCluster

                # Quiet: closing races (a worker's last heartbeat) log errors that are not ours;
                # a task's own failure comes back through its future.
                self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.CRITICAL)
                self.client = Client(self.cluster, timeout=timeout)
            elif kind == "address":
                self.client = Client(self.settings["address"], timeout=timeout)
            else:  # slurm: diffscale.embed.dask_slurm.SlurmDaskBackend, which make_backend picks
                one_of(kind, ("local", "address"), "embed.dask.cluster")
        try:
            self.client.wait_for_workers(self.workers, timeout=timeout)
        except TimeoutError:
            have = len(self.client.scheduler_info()["workers"])
            self.close()
            raise WorkerFailed(f"{self.label}: dask: {have} of {self.workers} workers joined within "
                               f"{timeout:g} s (embed.dask.timeout_s)") from None
        self.info = {"cluster": kind, "scheduler": self.client.scheduler.address}

    def run(self, tasks: list[WorkerTask]) -> list[dict]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        addresses = sorted(self.client.scheduler_info()["workers"])[: self.workers]
        futures = {}
        for address, task in zip(addresses, tasks):
            future = self.client.submit(run_worker, task, key=f"embed-{task.run}-w{task.worker}",
                                        workers=[address], allow_other_workers=False, pure=False)
            futures[future.key] = (task, address, future)
        results = {}
        for future in as_completed([f for _, _, f in futures.values()]):
            task, address, _ = futures[future.key]
            if future.status == "error":
                exc = future.exception()
                # Our own clusters close (killing the other workers) on the way out; on a shared
                # scheduler the siblings are cancelled, and a task already running finishes.
                self.client.cancel([f for _, _, f in futures.values() if f.key != future.key])
                if isinstance(exc, KilledWorker):
                    raise died(task, f"died (dask worker {address} lost)") from None
                raise exc
            results[task.worker] = future.result()
        return [results[task.worker] for task in tasks]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def make_backend(name: str, workers: int, *, dask_settings: dict | None = None, threads: int | None = None,
                 label: str = "") -> Backend:
    if name == "serial":
        if workers != 1:
            raise ConfigError(f"embed: the serial backend runs one worker, not {workers}")
        return SerialBackend(1)
    if name in ("multiprocessing", "gpu"):
        return ProcessBackend(workers, name)
    if name == "joblib":
        return JoblibBackend(workers)
    if name == "dask":
        if (dask_settings or {}).get("cluster") == "slurm":
            from diffscale.embed.dask_slurm import SlurmDaskBackend

            return SlurmDaskBackend(workers, dask_settings, threads, label)
        return DaskBackend(workers, dask_settings or {}, threads, label)
    one_of(name, BACKENDS, "embed: backend")
    raise AssertionError(f"make_backend: no case for the backend {name!r}")  # a BACKENDS entry without one
