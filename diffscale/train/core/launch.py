"""Process launch: one process, torchrun, or torch.multiprocessing.spawn; NCCL on GPUs, gloo on CPUs.

A training loop is written once, as an entry function that every process runs with a `Context`:

    def train(cfg, out_dir):                      # what the CLI, the benchmark and the tests call
        world = cfg["run"]["gpus"]
        mode = launch.mode(world, "run.gpus")     # "single" | "torchrun" | "spawn"; checks torchrun's count
        ...checks that need no process group; print them where launch.env_rank() in (None, 0)...
        result = launch.run(fit, world, "cuda" or "cpu", cfg, out_dir)
        return result if mode != "spawn" else <rank 0's result read back from out_dir>

    def fit(ctx, cfg, out_dir):                   # one process
        model = ctx.wrap(build_model().to(ctx.device))   # DDP when ctx.world > 1
        ctx.say("only rank 0 prints this")
        losses = ctx.mean(losses)                 # all-reduce average (no-op on one process)

`run` sets the process's device (cuda:<local rank>) or, on CPUs, its share of the cores
(usable cores // world threads), starts the process group when world > 1 and destroys it at the
end. Under torchrun (RANK, LOCAL_RANK, WORLD_SIZE in the environment) this process is one rank;
otherwise world == 1 runs here and world > 1 spawns `world` processes (entry and its arguments
must pickle; the first rank to fail is the one reported here: a UserError again with its type and
message, any other error with that rank's traceback, not a peer's "Connection closed by peer").
Spawned processes return nothing to the caller: rank 0 writes its results to disk.
On a CPU hardware key the world is the number of gloo processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

from diffscale import provenance
from diffscale.errors import ConfigError, UserError
from diffscale.train.core import compat


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world`, and the device it computes on."""

    rank: int
    local_rank: int
    world: int
    device: str  # "cuda:N" or "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.world > 1

    @property
    def device_type(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    @property
    def device_name(self) -> str:
        """The GPU's name (e.g. "NVIDIA H200"), or the CPU model."""
        if self.device_type == "cuda":
            import torch

            return torch.cuda.get_device_name(self.device)
        return provenance.cpu_model()

    def say(self, message: str) -> None:
        """Print (flushed) on rank 0 only."""
        if self.is_main:
            print(message, flush=True)

    def wrap(self, model, **ddp_kwargs):
        """The model under DistributedDataParallel when there are several processes, else itself."""
        if not self.ddp:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device] if self.device_type == "cuda" else None,
                                       **ddp_kwargs)

    def mean(self, tensor):
        """The tensor averaged over processes, in place (unchanged on one process)."""
        if self.ddp:
            import torch.distributed as dist

            dist.all_reduce(tensor)
            tensor /= self.world
        return tensor

    def gather(self, obj: Any) -> list:
        """Every process's `obj` (any picklable object), in rank order, on every process."""
        if not self.ddp:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def env_rank() -> int | None:
    """This process's rank under torchrun, None when not started by torchrun."""
    if os.environ.get("WORLD_SIZE") is not None and "LOCAL_RANK" in os.environ:
        return int(os.environ["RANK"])
    return None


# what the training scripts' count flags mean, in their errors
GPUS_MEANING = "devices, or gloo processes"
STOP_AFTER_MEANING = "the step to end after"


def stopped_note(step: int) -> str:
    """What a run stopped by --stop-after tells its user (its outputs are not written yet)."""
    return f"stopped after step {step}, checkpointed; the same command with --resume continues the run"


def recorded_try(out_dir, run_config: dict):
    """This invocation as a try of its training job (diffscale.attempts), a context yielding it:
    recorded by the one process that launches the run (rank 0 under torchrun), keyed by the run
    config's hash, in the attempts folder beside `out_dir`."""
    from diffscale import attempts
    from diffscale.config import config_hash

    return attempts.recorded(attempts.folder(out_dir) if env_rank() in (None, 0) else None, config_hash(run_config))


def mode(world: int, field: str = "run.gpus") -> str:
    """"torchrun" (this process is one of `world`), "single" or "spawn"; ConfigError naming `field`
    when torchrun started another number of processes than the run asks for."""
    if env_rank() is not None:
        started = int(os.environ["WORLD_SIZE"])
        if started != world:
            raise ConfigError(f"torchrun started {started} processes but the run asks for {world} ({field})")
        return "torchrun"
    return "single" if world == 1 else "spawn"


def run(entry: Callable[..., Any], world: int, device: str, *args) -> Any:
    """Run `entry(ctx, *args)` on `world` processes on `device` ("cuda" or "cpu"); return what it
    returned on this process (single, torchrun), or None once spawned processes have all ended."""
    kind = mode(world)
    if kind == "torchrun":
        return _enter(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world, device, entry, args)
    if kind == "single":
        return _enter(0, 0, 1, device, entry, args)
    _spawn(entry, world, device, args)
    return None


def _enter(rank: int, local_rank: int, world: int, device: str, entry, args,
           on_error: Callable[[BaseException], None] | None = None) -> Any:
    import torch
    import torch.distributed as dist

    ctx = Context(rank, local_rank, world, f"cuda:{local_rank}" if device == "cuda" else "cpu")
    if device == "cuda":
        torch.cuda.set_device(ctx.device)
    else:
        torch.set_num_threads(max(1, provenance.usable_cpus() // world))
    if world > 1:
        backend = "nccl" if device == "cuda" else "gloo"
        compat.init_process_group(backend, rank, world, torch.device(ctx.device) if device == "cuda" else None)
    try:
        result = entry(ctx, *args)
    except BaseException as exc:
        if on_error is not None:  # before the teardown, which fails the peers with errors of their own
            on_error(exc)
        if world > 1:
            dist.destroy_process_group()
        raise
    if world > 1:
        # Ranks leave together: a gloo rank that tore down while rank 0 was still writing the
        # run's outputs once died with SIGABRT ("terminate called without an active exception")
        # and failed a finished job. No barrier on the error path: a peer may never reach it.
        dist.barrier()
        dist.destroy_process_group()
    return result


STOP_GRACE_S = 10.0  # how long stopped ranks get to leave on SIGTERM before they are killed


def _spawn(entry, world: int, device: str, args: tuple) -> None:
    import torch.multiprocessing as mp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    errors = mp.get_context("spawn").SimpleQueue()
    # join stops the other ranks when one fails, with a warning per rank that would come before
    # the error this process reports: noise ahead of a user's one-line error
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    ranks = mp.start_processes(_spawned, args=(world, device, entry, args, errors), nprocs=world, join=False,
                               start_method="spawn")
    try:
        while not ranks.join():
            pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        # join stopped the other ranks. Each rank reports before it tears its process group down,
        # so the first report is the cause; a peer's lost connection came after it
        if not errors.empty():
            raise _reported(*errors.get()) from None
        raise
    except BaseException:  # this process was stopped (SIGTERM via run_cli, Ctrl-C): so are its ranks
        stop(ranks.processes)
        raise
    finally:  # a rank that raised left its traceback in /tmp/pytorch-errorfile-*.pickle; join has read it
        for path in ranks.error_files:
            with contextlib.suppress(OSError):
                os.unlink(path)


def stop(processes, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to each live process, then SIGKILL to any still there after `grace_s` (one blocked
    in a collective never runs its handler): a stopped job's ranks must not train on and write
    their outputs after it, as non-daemon children otherwise would while the interpreter waits."""
    import signal
    import threading
    import time

    held = {}
    if threading.current_thread() is threading.main_thread():  # a second Ctrl-C must not cut this short
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)


def _spawned(rank: int, world: int, device: str, entry, args: tuple, errors) -> None:
    import signal

    from diffscale.cli import exit_on_sigterm

    signal.signal(signal.SIGTERM, exit_on_sigterm)  # as in the launching process: atomic writers clean up
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))

    def report(exc: BaseException) -> None:
        if isinstance(exc, UserError):
            errors.put((rank, _portable(exc)))
        elif not isinstance(exc, (SystemExit, KeyboardInterrupt)):  # stopped, not failed
            import traceback

            errors.put((rank, "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]))

    try:
        _enter(rank, rank, world, device, entry, args, on_error=report)
    except UserError as exc:
        raise SystemExit(exc.exit_code) from None


TRACEBACK_CHARS = 16_000  # a report must fit the queue's pipe while the parent is not yet reading it


class RankFailed(RuntimeError):
    """A spawned rank failed with an error that is not the user's (a bug): its traceback."""


def _reported(rank: int, error: UserError | str) -> BaseException:
    if isinstance(error, UserError):
        return error
    return RankFailed(f"rank {rank} failed first (any other rank's error followed from it):\n{error}")


def _portable(exc: UserError) -> UserError:
    """The error itself if it survives pickling (any UserError subclass taking one message), else a
    plain UserError with its message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an unpicklable error still reports its message
        return UserError(str(exc))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
