"""Every try of a job is recorded, so a retried job is billed for all of them (diffscale.attempts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffscale import attempts


def test_the_attempts_folder_is_beside_the_run_directory():
    run = "results/embed/images/dask-pinned-w2"
    assert attempts.folder(run) == Path("results/embed/images/.attempts/dask-pinned-w2")


def test_a_failed_try_stays_recorded_and_the_next_one_reads_it_then_clears_it(tmp_path):
    where = tmp_path / ".attempts" / "run"
    with pytest.raises(RuntimeError, match="first try"):
        with attempts.recorded(where) as this:
            assert this.earlier == []
            time.sleep(0.3)
            raise RuntimeError("first try")
    (first,) = attempts.earlier_tries(where)
    assert first["pid"] == os.getpid() and first["alive_at"] >= first["started_at"]
    # from this process's start (interpreter and imports: what a scheduler bills) to the failure
    assert first["held_s"] == pytest.approx(time.time() - first["started_at"], abs=2.0) and first["held_s"] >= 0.3
    (where / "notes.txt").write_text("not a try")
    (where / "try-broken.json").write_text("{")  # not a try's record: skipped, not an error
    with attempts.recorded(where) as this:
        assert [t["started_at"] for t in this.earlier] == [first["started_at"]]
        assert this.earlier[0]["held_s"] == pytest.approx(first["held_s"])
    assert not where.exists()  # finished: the next run of the job starts with no earlier tries
    assert not where.parent.exists()  # nor an empty .attempts among the run directories
    with attempts.recorded(None) as this:
        assert this.earlier == []
    assert list(tmp_path.iterdir()) == []


def test_a_try_stopped_by_its_input_is_not_recorded_but_one_out_of_memory_is(tmp_path):
    """A wrong path or config is the user's typo, not a try of the settings: a corrected re-run is
    not billed for it, and no folder is left beside a run made by hand. Out of memory is a try."""
    from diffscale.errors import ConfigError, DataError, HardwareError
    from diffscale.train.core.guards import TrainingError

    where = tmp_path / ".attempts" / "run"
    for mistake in (DataError("manifest.parquet: no such file"), ConfigError("x"), DataError("y")):
        with pytest.raises(type(mistake)):
            with attempts.recorded(where):
                raise mistake
        assert not where.parent.exists()
    for failure in (TrainingError("out of memory on cuda:0 with micro-batch 64"), HardwareError("no GPU")):
        with pytest.raises(type(failure)):
            with attempts.recorded(where):
                raise failure
    assert len(attempts.earlier_tries(where)) == 2
    with pytest.raises(DataError):  # the earlier tries' records stay; only its own goes
        with attempts.recorded(where) as this:
            assert len(this.earlier) == 2
            raise DataError("z")
    assert len(attempts.earlier_tries(where)) == 2


def test_earlier_tries_come_oldest_first_with_a_clock_step_held_as_zero_and_foreign_files_skipped(tmp_path):
    """Tries sort by start, not file name (try ids are random); a node's clock stepping back between
    start and heartbeat bills 0 s, never a negative time that would lower the run's total."""
    import json

    for name, start in zip("abcdef", [600.0, 500.0, 400.0, 300.0, 200.0, 100.0]):  # listed in any order
        (tmp_path / f"try-{name}.json").write_text(json.dumps({"started_at": start, "alive_at": start + 60}))
    (tmp_path / "try-g.json").write_text(json.dumps({"started_at": 700.0, "alive_at": 690.0}))
    (tmp_path / "try-h.json").write_text("{not json")
    (tmp_path / "try-i.json").write_text(json.dumps({"started_at": 50.0}))
    tries = attempts.earlier_tries(tmp_path)
    assert [t["started_at"] for t in tries] == [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0]
    assert [t["held_s"] for t in tries] == [60.0] * 6 + [0.0]


def test_a_finished_job_leaves_the_records_of_the_job_beside_it(tmp_path):
    with attempts.recorded(tmp_path / ".attempts" / "b") as beside:
        beside.finished = False
    with attempts.recorded(tmp_path / ".attempts" / "a"):
        pass
    assert [p.name for p in (tmp_path / ".attempts").iterdir()] == ["b"]


def test_the_heartbeat_keeps_a_running_try_alive(tmp_path):
    where = tmp_path / "run"
    with attempts.recorded(where, heartbeat_s=0.05):
        (path,) = where.glob("try-*.json")
        before = json.loads(path.read_text())["alive_at"]
        time.sleep(0.4)
        assert json.loads(path.read_text())["alive_at"] > before + 0.2


KILLED = """
import sys, time
from diffscale import attempts
with attempts.recorded(sys.argv[1], heartbeat_s=0.1):
    print("running", flush=True)
    time.sleep(60)
"""


def test_a_try_killed_without_warning_is_counted_to_within_its_heartbeat(tmp_path, repo_root):
    where = tmp_path / "run"
    spawned = time.time()
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(where)], cwd=repo_root, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(repo_root)})
    assert proc.stdout.readline().strip() == "running"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)  # SLURM at the time limit, after KillWait: no handler runs
    proc.wait(timeout=30)
    lived = time.time() - spawned
    (killed,) = attempts.earlier_tries(where)
    assert killed["pid"] == proc.pid
    assert lived - 0.1 - 0.5 <= killed["held_s"] <= lived  # the last heartbeat; 0.5 s: the kill and wait


def test_a_process_start_is_read_to_the_kernels_tick_not_a_whole_second(repo_root):
    """psutil's create_time adds a boot time /proc rounds to whole seconds: up to 1 s early."""
    spawned = time.time()
    out = subprocess.run([sys.executable, "-c", "from diffscale import timing; print(repr(timing.process_started()))"],
                         cwd=repo_root, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(repo_root)}, check=True)
    assert spawned - 0.02 <= float(out.stdout) <= spawned + 0.5


def test_a_retried_embedding_job_bills_its_failed_try(tmp_path, repo_root):
    """scripts/embed.py: a try that fails leaves its record; the next one writes it into timing.json."""
    from embed_data import demo_settings, make_manifest

    from diffscale.embed.stage import FAULT_ENV

    fixture = make_manifest(tmp_path / "manifest", n_synthetic=6, n_real=0)
    out = tmp_path / "embed" / "text" / "serial-pinned-w1"
    cmd = [sys.executable, "scripts/embed.py", "text", "--manifest", str(fixture.manifest), "--skipped",
           str(fixture.skipped), "--backend", "serial", "--workers", "1", "--out-dir", str(out),
           "--settings", json.dumps(demo_settings("text").to_dict())]
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    failed = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300,
                            env={**env, FAULT_ENV: "0:0:raise"})
    assert failed.returncode != 0 and not (out / "index.json").exists(), failed.stderr
    (first,) = attempts.earlier_tries(attempts.folder(out))
    done = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    timing = json.loads((out / "timing.json").read_text())
    assert [t["started_at"] for t in timing["earlier_tries"]] == [first["started_at"]]
    assert timing["earlier_tries_s"] == pytest.approx(first["held_s"]) and first["held_s"] > 0
    assert not attempts.folder(out).exists()


def test_a_try_that_stops_early_on_purpose_keeps_the_records_for_the_next(tmp_path):
    where = tmp_path / "run"
    with attempts.recorded(where) as this:
        time.sleep(0.2)
        this.finished = False  # --stop-after: the job goes on in a later invocation
    (stopped,) = attempts.earlier_tries(where)
    assert stopped["held_s"] >= 0.2
    with attempts.recorded(where) as this:
        assert [t["started_at"] for t in this.earlier] == [stopped["started_at"]]
    assert not where.exists()


def test_a_runs_time_is_exact_only_when_a_try_matches_each_earlier_invocation():
    tries = [{"started_at": 100.0, "held_s": 50.0}, {"started_at": 200.0, "held_s": 70.0}]
    exact = attempts.run_time(tries, [(200.01, 60.0)], this_s=30.0)  # try 1 failed before any checkpoint
    assert exact == {"earlier_tries": 2, "earlier_tries_s": 120.0, "job_time_s": 150.0, "job_time_whole": True}
    # a killed try's record ends at its last heartbeat, maybe before its last checkpoint: the later counts
    assert attempts.run_time(tries, [(200.0, 90.0)], this_s=30.0)["job_time_s"] == 50.0 + 90.0 + 30.0
    # an invocation no record names (an older checkpoint, the records deleted): the checkpoints' sum
    partial = attempts.run_time(tries, [(200.0, 60.0), (300.0, 40.0)], this_s=30.0)
    assert (partial["job_time_s"], partial["job_time_whole"]) == (130.0, False)
    assert attempts.run_time(tries, [(None, 60.0)], this_s=30.0)["job_time_whole"] is False
    assert attempts.run_time([], [], this_s=30.0)["job_time_s"] == 30.0
    # a record is the same invocation only to within timer rounding: one a second off is another's
    assert attempts.run_time(tries, [(201.0, 60.0)], this_s=30.0)["job_time_whole"] is False


def test_a_try_of_settings_since_changed_is_not_this_runs_cost(tmp_path):
    """A try that ran out of memory at batch 256 is not the cost of the run at 128 that follows."""
    where = tmp_path / ".attempts" / "run"
    with pytest.raises(RuntimeError):
        with attempts.recorded(where, key="batch-256"):
            raise RuntimeError("out of memory")
    with attempts.recorded(where, key="batch-128") as this:
        assert this.earlier == []
        assert [json.loads(p.read_text())["key"] for p in where.glob("try-*.json")] == ["batch-128"]


def test_a_record_it_cannot_write_never_hides_the_jobs_own_error(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with pytest.raises(RuntimeError, match="^the job's own error$"):
        with attempts.recorded(tmp_path / "run", heartbeat_s=0.01):
            monkeypatch.setattr(attempts.atomic, "write_json", disk_full)
            time.sleep(0.05)  # heartbeats that cannot write
            raise RuntimeError("the job's own error")


@pytest.mark.parametrize("ending", ["failed", "stopped early"])
def test_a_try_that_ends_between_heartbeats_is_billed_to_its_end(tmp_path, ending):
    """The last heartbeat can be up to HEARTBEAT_S old when a try fails or stops on purpose: its
    end is recorded as it happens, so the retry bills the whole try."""
    where = tmp_path / ".attempts" / "run"
    try:
        with attempts.recorded(where, heartbeat_s=1000.0) as this:
            time.sleep(0.5)
            end = time.time()
            if ending == "failed":
                raise RuntimeError("a crash")
            this.finished = False
    except RuntimeError:
        pass
    (earlier,) = attempts.earlier_tries(where)
    assert end <= earlier["alive_at"] <= time.time()  # not the start's beat, 0.5 s earlier
