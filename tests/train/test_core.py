"""The shared training core on a toy model: what the FLUX and DDPM loops rely on, U-Net aside."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from diffscale.errors import ConfigError, DataError
from diffscale.train.core import checkpoint, guards, launch, meter, precision

ROOT = Path(__file__).resolve().parents[2]


def toy_fit(ctx: launch.Context, out_dir, steps: int, resume: bool) -> dict:
    """A complete loop on the core: one Linear layer, random data from the global generators."""
    store = checkpoint.Store(out_dir, format="toy-checkpoint", version=1)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    prec = precision.Precision("fp32", ctx.device_type)
    start, rows = 0, []
    if resume and store.resume_path.is_file():
        state = store.load()
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        prec.load_state_dict(state["scaler"])
        checkpoint.restore_rng(state["rng"], ctx.rank)
        start, rows = state["step"], state["metrics"]
    net = ctx.wrap(model)
    m = meter.Meter(rows, batch=8, world=ctx.world, flops_per_sample=None, peak=None, start_step=start, verbose=False)
    last_good = guards.LastGood()
    with guards.out_of_memory(ctx.device, 8, "toy", "use a smaller toy"):
        for step in range(start, steps):
            with m.waiting():
                x = torch.randn(8, 4)
            with prec.autocast():
                loss = net(x).pow(2).mean()
            prec.backward(loss)
            grad_norm = prec.clip(model.parameters(), optimizer, 1.0)
            prec.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
            m.add(loss.detach(), grad_norm, 0.1)
            m.row(step + 1, ctx.mean(m.pending_losses()).tolist(), last_good)
            rng = checkpoint.gather_rng(ctx)
            if ctx.is_main:
                last_good.update(store.save({"step": step + 1, "model": model.state_dict(),
                                             "optimizer": optimizer.state_dict(), "scaler": prec.state_dict(),
                                             "rng": rng, "metrics": rows}), step + 1)
    return {"weight": model.weight.detach().clone(), "rows": rows}


def test_a_loop_on_the_core_resumes_exactly(tmp_path):
    straight = launch.run(toy_fit, 1, "cpu", tmp_path / "a", 6, False)
    launch.run(toy_fit, 1, "cpu", tmp_path / "b", 3, False)
    resumed = launch.run(toy_fit, 1, "cpu", tmp_path / "b", 6, True)
    assert torch.equal(straight["weight"], resumed["weight"])
    assert [r["step"] for r in resumed["rows"]] == [1, 2, 3, 4, 5, 6]
    assert [r["warmup"] for r in resumed["rows"]] == [1, 0, 0, 1, 0, 0]  # each start's first row
    assert meter.metrics_csv(resumed["rows"]).splitlines()[0] == ",".join(meter.COLUMNS)
    final = checkpoint.Store(tmp_path / "b", format="toy-checkpoint").finalize()
    assert final.name == "checkpoint.pt" and not (tmp_path / "b" / "resume").exists()


def test_checkpoint_load_names_a_foreign_or_missing_file(tmp_path):
    store = checkpoint.Store(tmp_path, format="mine", version=2, kind="toy")
    with pytest.raises(DataError, match="last.pt: checkpoint not found"):
        store.load()
    checkpoint.save(store.resume_path, {"step": 1}, format="other", version=2)
    with pytest.raises(DataError, match="last.pt: not a toy checkpoint"):
        store.load()
    checkpoint.save(store.resume_path, {"step": 1}, format="mine", version=1)
    with pytest.raises(DataError, match="checkpoint version 1, expected 2"):
        store.load()
    whole = store.resume_path.read_bytes()
    store.resume_path.write_bytes(whole[: len(whole) // 2])  # a copy cut short (a quota, a killed rsync)
    with pytest.raises(DataError) as caught:
        store.load()
    assert str(caught.value) == (f"{store.resume_path}: not a readable checkpoint (torch.save writes a zip archive "
                                 "and this file is not one: a truncated copy, or another kind of file)")


def test_rng_states_round_trip():
    state = checkpoint.rng_state()
    drawn = (torch.rand(3), np.random.rand(), random.random())
    checkpoint.restore_rng([state], 0)
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(drawn[0], again[0]) and drawn[1:] == again[1:]


def test_guards_name_the_step_and_the_micro_batch():
    good = guards.LastGood("ckpt/last.pt", 4)
    with pytest.raises(guards.TrainingError, match=r"loss is inf at step 6; stopped \(the last good checkpoint "
                                                  r"\(step 4\) is kept at ckpt/last.pt\)"):
        guards.check_finite([1.0, float("inf")], 6, good)
    with pytest.raises(guards.TrainingError, match=r"^out of memory on cuda:0 with micro-batch 16 \(b\); lower b$"):
        with guards.out_of_memory("cuda:0", 16, "b", "lower b"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")


@pytest.mark.parametrize("name, amp", [("fp32", False), ("bf16", True), ("fp16", True)])
def test_precision_autocasts_on_cpu(name, amp):
    prec = precision.Precision(name, "cpu")
    assert prec.amp is amp
    with prec.autocast():
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == prec.dtype == getattr(torch, precision.AMP_DTYPES.get(name, "float32"))


def test_torchrun_with_another_world_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"torchrun started 2 processes but the run asks for 4 \(flux.gpus\)"):
        launch.mode(4, "flux.gpus")
    assert launch.mode(2) == "torchrun" and launch.env_rank() == 0


def test_the_ema_update_stays_outside_autograd():
    # the sources are trained parameters: a recorded in-place lerp chained a graph node per EMA
    # tensor per step onto the EMA copy (host memory grew through the whole run)
    from diffscale.train.core import compat

    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2, 2))]
    ema = [torch.zeros_like(p) for p in params]
    for _ in range(3):
        compat.lerp_(ema, params, 0.25)
    want = [p.detach() * (1 - 0.75 ** 3) for p in params]  # three steps a quarter of the way from 0
    assert all(e.grad_fn is None and not e.requires_grad for e in ema)
    for e, w in zip(ema, want):
        torch.testing.assert_close(e, w)


@pytest.fixture
def group_calls(monkeypatch):
    """The collective calls _enter makes, recorded instead of run (no process group is formed)."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(launch.compat, "init_process_group", lambda *a, **k: calls.append("init"))
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    threads = torch.get_num_threads()  # _enter sets this process's threads for its rank
    yield calls
    torch.set_num_threads(threads)


def test_ranks_leave_together_after_a_run_and_alone_after_an_error(group_calls):
    # a rank that tore down while rank 0 still wrote the outputs once died with SIGABRT
    assert launch._enter(1, 1, 2, "cpu", lambda ctx: "done", ()) == "done"
    assert group_calls == ["init", "barrier", "destroy"]
    group_calls.clear()

    def fails(ctx):
        raise ConfigError("bad")

    with pytest.raises(ConfigError, match="bad"):  # a peer may never reach a barrier: none on this path
        launch._enter(1, 1, 2, "cpu", fails, ())
    assert group_calls == ["init", "destroy"]


def test_a_training_try_is_recorded_by_the_launching_process_only_keyed_by_its_run_config(tmp_path, monkeypatch):
    import json

    from diffscale.config import config_hash

    run_cfg = {"run": {"hw": "local", "gpus": 2}, "train": {"steps": 4}}
    out = tmp_path / "unet" / "fp32-g2"
    for var, value in (("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"), ("RANK", "1")):  # torchrun's rank 1
        monkeypatch.setenv(var, value)
    with launch.recorded_try(out, run_cfg):
        assert not (tmp_path / "unet" / ".attempts").exists()
    monkeypatch.setenv("RANK", "0")
    with launch.recorded_try(out, run_cfg) as this:
        this.finished = False
    [record] = (tmp_path / "unet" / ".attempts" / "fp32-g2").glob("try-*.json")
    assert json.loads(record.read_text())["key"] == config_hash(run_cfg)


STOPPABLE = '''
import os, sys, time
from pathlib import Path

def entry(ctx, out):
    from diffscale import atomic

    with atomic.atomic_path(Path(out, f"done-{ctx.rank}")) as tmp:  # an output being written when stopped
        tmp.write_text("partial")
        Path(out, f"started-{ctx.rank}").write_text(str(os.getpid()))
        for _ in range(600):
            time.sleep(0.1)

if __name__ == "__main__":
    from diffscale.cli import run_cli
    from diffscale.train.core import launch
    sys.exit(run_cli(lambda: launch.run(entry, 2, "cpu", sys.argv[1])))
'''


def test_a_stopped_launcher_stops_its_spawned_ranks_at_once(tmp_path):
    """SIGTERM to the process that spawned the ranks (not to its group): before, the non-daemon
    ranks trained on to the end and wrote their outputs while the interpreter waited for them.
    Each rank is stopped inside an atomic writer, which must remove its temporary file."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "stoppable.py"
    script.write_text(STOPPABLE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    started = [tmp_path / f"started-{r}" for r in (0, 1)]
    while not all(p.exists() and p.read_text() for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int(p.read_text()) for p in started]
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    assert proc.wait(timeout=30) == 143 and time.monotonic() - start < 15
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # no output, and no temporary file: the ranks left through SystemExit, past the atomic writer
    assert not list(tmp_path.glob("done-*")) and not list(tmp_path.glob(".done-*"))


class SecondInterrupt(Exception):
    pass


class FakeRank:
    """A rank that `stop` terminates; the first one's terminate() is where a second Ctrl-C lands."""

    def __init__(self, interrupts: bool):
        self.interrupts, self.alive, self.terminated = interrupts, True, False

    def is_alive(self):
        return self.alive

    def terminate(self):
        import os
        import signal

        if self.interrupts:
            os.kill(os.getpid(), signal.SIGINT)  # delivered at once: the handler runs before kill returns
        self.terminated = True

    def join(self, timeout=None):
        self.alive = not self.terminated

    def kill(self):
        self.terminated = True


def test_a_second_ctrl_c_does_not_cut_stopping_the_ranks_short():
    """The user presses Ctrl-C again while the launcher stops its ranks: every rank is still
    stopped, and the launcher's own handler is back afterwards."""
    import signal

    def interrupted(*_):
        raise SecondInterrupt

    before = signal.signal(signal.SIGINT, interrupted)
    try:
        ranks = [FakeRank(interrupts=True), FakeRank(interrupts=False)]
        launch.stop(ranks, grace_s=0.1)
        assert all(r.terminated and not r.alive for r in ranks)
        assert signal.getsignal(signal.SIGINT) is interrupted
    finally:
        signal.signal(signal.SIGINT, before)


FAILING = '''
import sys, time
from multiprocessing.util import Finalize

def entry(ctx, kind):
    import torch
    import torch.distributed as dist

    if ctx.rank == 1:
        dist.all_reduce(torch.ones(1))  # waits for rank 0, whose teardown breaks the connection
        return
    Finalize(None, time.sleep, args=(3,), exitpriority=10)  # rank 0 leaves last: rank 1's error ends first
    time.sleep(0.5)
    if kind == "bug":
        raise ValueError("the real bug")
    from diffscale.errors import ConfigError
    raise ConfigError("config.yaml: train.steps: the real mistake")

if __name__ == "__main__":
    from diffscale.cli import run_cli
    from diffscale.train.core import launch
    sys.exit(run_cli(lambda: launch.run(entry, 2, "cpu", sys.argv[1])))
'''


@pytest.mark.parametrize("kind", ["bug", "mistake"])
def test_the_rank_that_failed_first_is_reported_not_the_peer_it_disconnected(tmp_path, kind):
    """Rank 0 fails; its teardown fails rank 1's all-reduce ("Connection closed by peer"), and
    rank 1 exits first. The launcher reports rank 0's error: a bug with its traceback, a user's
    mistake as its one line."""
    import os
    import subprocess
    import sys

    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TMPDIR": str(scratch)}
    proc = subprocess.run([sys.executable, str(script), kind], env=env, capture_output=True, text=True, timeout=120)
    assert not list(scratch.glob("pytorch-errorfile-*"))  # the failed ranks' tracebacks, read and removed
    if kind == "bug":
        assert proc.returncode == 1
        assert "RankFailed: rank 0 failed first" in proc.stderr and "ValueError: the real bug" in proc.stderr
        assert "Connection closed" not in proc.stderr.split("RankFailed")[-1]
    else:
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == ["error: config.yaml: train.steps: the real mistake"]


def test_a_metrics_row_rates_the_global_batch_and_steady_figures_skip_warm_up(monkeypatch):
    """batch is the global batch: 2 processes do not double the rate."""
    from diffscale.train.core import meter as meter_module

    now = [0.0]  # the meter's clock
    monkeypatch.setattr(meter_module.time, "perf_counter", lambda: now[0])
    rows = []
    m = meter.Meter(rows, batch=8, world=2, flops_per_sample=None, peak=None, start_step=0, verbose=False)
    with m.waiting():
        now[0] = 0.5
    for _ in range(4):
        m.add(torch.tensor(1.0), None, 1e-4)
    now[0] = 2.0
    row = m.row(4, [1.0, 1.0], guards.LastGood())
    assert row["samples_per_s"] == pytest.approx(4 * 8 / 2.0) and row["data_wait_frac"] == pytest.approx(0.25)
    now[0] = 3.0
    assert row["warmup"] == 1 and m.row(4, [1.0], guards.LastGood())["warmup"] == 0  # only a start's first row
    steady = [{"samples_per_s": 1.0, "warmup": 1, "loss": 9.0}, *({"samples_per_s": r, "warmup": 0, "loss": 1.0}
                                                                   for r in (10.0, 12.0, 100.0))]
    assert meter.steady_rate(steady) == 12.0  # the warm-up row left out (11 with it), the outlier by the median
    tail = [{"loss": float(k)} for k in range(20)]
    assert meter.final_loss(tail) == pytest.approx(18.5)  # the last tenth: 2 rows


def test_fp32_with_tf32_off_really_turns_it_off():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        precision.allow_tf32("cuda", False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        precision.allow_tf32("cuda", True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = before


def test_the_unets_lr_and_ema_warm_up():
    from diffscale.train.unet import update_ema, warmup_factor

    assert [warmup_factor(s, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]  # no step at lr 0
    assert warmup_factor(0, 0) == 1.0
    model, ema = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    for p in ema.parameters():
        torch.nn.init.zeros_(p)
    for p in model.parameters():
        torch.nn.init.ones_(p)
    update_ema(ema, model, step=0, ema_decay=0.9999)  # decay 1/10 at first: 90 % of the way to the model
    assert all(torch.allclose(p, torch.full_like(p, 0.9)) for p in ema.parameters())
    update_ema(ema, model, step=10**6, ema_decay=0.5)  # warmed up: the configured decay
    assert all(torch.allclose(p, torch.full_like(p, 0.95)) for p in ema.parameters())
