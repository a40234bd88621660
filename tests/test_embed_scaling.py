import math

import pandas as pd
import pytest

from diffscale.embed.scaling import (figure_lines, findings, load_timings, long_enough, scaling_rows, shard_bound,
                                     shard_cap, write_figure, write_table)
from diffscale.errors import DataError


def _timing(backend, policy, workers, wall, startup, modality="images", threads=None, **extra):
    return {"modality": modality, "backend": backend, "policy": policy, "workers": workers, "hw": "local",
            "device": "cpu", "cores": 8, "threads_per_worker": threads or [8 // workers] * workers, "items": 100,
            "wall_s": wall, "startup_s": startup, "decode_s": 0.1, "compute_s": wall - startup - 0.2,
            "write_s": 0.1, "items_per_s": 100 / wall, "steady_items_per_s": 100 / (wall - startup),
            "peak_rss_mb": [400.0 + k for k in range(workers)], **extra}


def test_speedup_efficiency_and_karp_flatt_against_serial_one_worker():
    rows = scaling_rows([
        _timing("dask", "pinned", 4, wall=3.0, startup=1.0),
        _timing("serial", "pinned", 1, wall=10.0, startup=2.0),
        _timing("dask", "naive", 4, wall=20.0, startup=1.0, threads=[8, 8, 8, 8]),
        _timing("serial", "pinned", 1, wall=5.0, startup=1.0, modality="text"),
    ])
    assert [(r["modality"], r["backend"], r["policy"]) for r in rows] == [
        ("images", "serial", "pinned"), ("images", "dask", "pinned"), ("images", "dask", "naive"),
        ("text", "serial", "pinned")]
    serial, pinned, naive, text = rows
    assert serial["speedup"] == 1 and math.isnan(serial["karp_flatt"])
    assert pinned["speedup"] == pytest.approx(10 / 3) and pinned["efficiency"] == pytest.approx(10 / 12)
    assert pinned["karp_flatt"] == pytest.approx((0.3 - 0.25) / 0.75)
    assert pinned["steady_speedup"] == pytest.approx(8 / 2) and pinned["steady_efficiency"] == pytest.approx(1.0)
    assert pinned["steady_karp_flatt"] == pytest.approx(0.0, abs=1e-12)  # from the steady times, not end to end
    assert naive["speedup"] == pytest.approx(0.5) and naive["threads_per_worker"] == "8"
    assert pinned["threads_per_worker"] == "2" and pinned["peak_rss_mb"] == 403.0
    assert text["speedup"] == 1


def test_a_gpu_run_over_more_images_is_compared_per_image_and_has_no_cpu_efficiency():
    """CPU runs embed the first embed.scaling_images images, gpu runs all of them: 20x the images
    at 100x the rate is 100x faster per image, not the 5x its wall times say."""
    serial = _timing("serial", "pinned", 1, wall=10.0, startup=2.0, threads=[1], cpus=1)
    gpu = _timing("gpu", "pinned", 1, wall=40.0, startup=20.0, threads=[1], cpus=8, items=2000,
                  items_per_s=2000 / 40.0, steady_items_per_s=100 * 100 / 8.0)
    base, row = scaling_rows([serial, gpu])
    assert row["speedup"] == pytest.approx((2000 / 40.0) / (100 / 10.0))  # 5x per image, not 0.25x
    assert row["steady_speedup"] == pytest.approx(100.0)
    assert all(math.isnan(row[k]) for k in ("efficiency", "karp_flatt", "steady_efficiency", "steady_karp_flatt"))


def test_the_steady_window_opens_when_the_first_worker_is_ready():
    """Worker 1 ready at 3.0 s, worker 2 at 6.0 s, all done at 10 s: all items count over 7 s, not
    over the 4 s after the last worker was ready (that credited it with work done before)."""
    serial = _timing("serial", "pinned", 1, wall=12.0, startup=2.0, threads=[1], cpus=1)
    late = _timing("multiprocessing", "pinned", 2, wall=10.0, startup=6.0, threads=[1, 1], cpus=2,
                   steady_from_s=3.0, steady_items_per_s=100 / 7.0)
    base, row = scaling_rows([serial, late])
    assert row["steady_speedup"] == pytest.approx((100 / 7.0) / (100 / 10.0))
    assert row["busy_share"] == pytest.approx((0.1 + 3.8 + 0.1) / 7.0)  # the phases over the window from 3 s


def test_without_a_serial_run_speedups_are_blank():
    [row] = scaling_rows([_timing("joblib", "pinned", 2, wall=3.0, startup=1.0)])
    assert math.isnan(row["speedup"]) and math.isnan(row["steady_efficiency"])


def test_table_and_figure_files(tmp_path):
    rows = scaling_rows([_timing("serial", "pinned", 1, 10.0, 2.0), _timing("multiprocessing", "pinned", 2, 6.0, 2.0),
                         _timing("multiprocessing", "naive", 2, 9.0, 2.0, threads=[8, 8])])
    table = pd.read_csv(write_table(rows, tmp_path / "embed_scaling.csv"))
    assert list(table["backend"]) == ["serial", "multiprocessing", "multiprocessing"]
    assert {"speedup", "efficiency", "karp_flatt", "steady_speedup", "threads_per_worker"} <= set(table.columns)
    assert table["speedup"][1] == pytest.approx(10 / 6, rel=1e-5)  # six significant digits: 1.66667
    figure = write_figure(rows, tmp_path / "embed_scaling.png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baseline_is_one_cpu_and_efficiency_divides_by_cpus_not_processes():
    rows = scaling_rows([
        _timing("serial", "pinned", 1, wall=12.0, startup=2.0, threads=[1], cpus=1, processes=1),
        _timing("serial", "intraop", 4, wall=4.5, startup=2.0, threads=[4], cpus=4, processes=1),
        _timing("multiprocessing", "pinned", 4, wall=5.0, startup=2.5, threads=[1] * 4, cpus=4, processes=4),
    ])
    base, intraop, pinned = rows
    assert base["efficiency"] == 1 == base["steady_efficiency"] and base["cpus"] == 1
    assert intraop["processes"] == 1 and intraop["threads_per_worker"] == "4"
    assert intraop["steady_efficiency"] == pytest.approx(10 / 2.5 / 4)  # 4 CPUs, though 1 process
    assert pinned["steady_efficiency"] == pytest.approx(1.0)


def test_an_oversubscribed_run_has_no_efficiency_and_is_left_out_of_the_findings():
    rows = scaling_rows([
        _timing("serial", "pinned", 1, wall=12.0, startup=2.0, threads=[1], cpus=1),
        _timing("multiprocessing", "pinned", 2, wall=7.0, startup=2.0, threads=[1, 1], cpus=2),
        _timing("multiprocessing", "pinned", 4, wall=4.0, startup=2.0, threads=[1] * 4, cpus=4, oversubscribed=True),
    ])
    over = rows[-1]
    assert over["oversubscribed"] and over["speedup"] == pytest.approx(3.0)
    assert math.isnan(over["efficiency"]) and math.isnan(over["steady_efficiency"]) and math.isnan(over["karp_flatt"])
    found = findings(rows)
    assert found[0] == ("images: multiprocessing pinned on 2 CPUs: steady speedup 2.00x, efficiency 100% against 1 CPU; "
                        "per item, compute costs 0.98x the CPU time it takes on 1 CPU and decode 2.00x; workers busy "
                        "100% of the steady time (1 CPU: 100%)")
    assert "on 4 CPUs" not in " ".join(found)
    assert found[-1].startswith("left out (oversubscribed") and "images multiprocessing-pinned-w4" in found[-1]


def test_where_the_efficiency_went_compute_cost_and_busy_share():
    """1 CPU: decode 1 s, compute 8 s, write 1 s of 10 s steady. 4 pinned CPUs: each worker's compute
    costs 1.25x the CPU time per item (shared memory bandwidth) and the workers wait 20 % of the time:
    efficiency = 0.8 / (0.1 * 1 + 0.8 * 1.25 + 0.1 * 1) = 2/3, what the steady times give."""
    base = _timing("serial", "pinned", 1, wall=12.0, startup=2.0, threads=[1], cpus=1)
    base.update(decode_s=1.0, compute_s=8.0, write_s=1.0)
    four = _timing("multiprocessing", "pinned", 4, wall=2.0 + 3.75, startup=2.0, threads=[1] * 4, cpus=4)
    four.update(decode_s=0.25, compute_s=2.5, write_s=0.25)
    one, pinned = scaling_rows([base, four])
    assert one["compute_cost_vs_1cpu"] == 1 == one["prepare_cost_vs_1cpu"] and one["busy_share"] == 1
    assert pinned["compute_cost_vs_1cpu"] == pytest.approx(1.25) and pinned["prepare_cost_vs_1cpu"] == pytest.approx(1)
    assert pinned["busy_share"] == pytest.approx(0.8)
    assert pinned["steady_efficiency"] == pytest.approx(0.8 / (0.1 + 0.8 * 1.25 + 0.1)) == pytest.approx(2 / 3)
    assert findings([one, pinned])[0].endswith(
        "; per item, compute costs 1.25x the CPU time it takes on 1 CPU and decode 1.00x; workers busy 80% of the "
        "steady time (1 CPU: 100%)")


def test_load_timings_names_the_bad_file(tmp_path):
    bad = tmp_path / "timing.json"
    bad.write_text("{")
    with pytest.raises(DataError, match="timing.json: not valid JSON"):
        load_timings([bad])
    with pytest.raises(DataError, match="timing file not found"):
        load_timings([tmp_path / "missing.json"])


def test_the_slurm_queue_wait_is_shown_not_charged():
    # the stage keeps queue_wait_s out of wall_s (diffscale.embed.dask_slurm); older runs have none
    slurm = {**_timing("dask", "pinned", 2, wall=6.0, startup=2.0), "queue_wait_s": 40.0}
    rows = scaling_rows([_timing("serial", "pinned", 1, wall=10.0, startup=2.0), slurm])
    assert [r["queue_wait_s"] for r in rows] == [0.0, 40.0]
    assert rows[1]["speedup"] == pytest.approx(10 / 6)


def test_where_dask_workers_ran_and_what_their_slurm_jobs_held_reach_the_table():
    jobs = [{"job_id": "7", "partition": "cpu", "cpus": 4, "held_s": 30.0},
            {"job_id": "8", "partition": "cpu", "cpus": 4, "held_s": 31.0},
            {"job_id": "9", "partition": None, "cpus": 4, "held_s": 0.0}]  # one sacct had no record of
    slurm = _timing("dask", "pinned", 2, wall=6.0, startup=2.0, cpus=8, worker_job_cpu_s=244.0,
                    backend_info={"cluster": "slurm", "jobs": jobs})
    local = _timing("dask", "naive", 2, wall=6.0, startup=2.0, backend_info={"cluster": "local"})
    rows = scaling_rows([_timing("serial", "pinned", 1, wall=10.0, startup=2.0), slurm, local])
    assert [(r["dask_cluster"], r["worker_partition"]) for r in rows] == [("", ""), ("slurm", "cpu"), ("local", "")]
    assert rows[1]["worker_job_cpu_s"] == 244.0 and math.isnan(rows[2]["worker_job_cpu_s"])
    assert rows[1]["efficiency"] == pytest.approx(10 / 6 / 8)  # the 8 CPUs its jobs held, not 2


def test_a_retried_runs_failed_tries_reach_the_table():
    tries = [{"started_at": 1.0, "alive_at": 61.0, "held_s": 60.0}, {"started_at": 99.0, "alive_at": 129.0,
                                                                    "held_s": 30.0}]
    retried = _timing("multiprocessing", "pinned", 2, wall=6.0, startup=2.0, earlier_tries=tries, earlier_tries_s=90.0)
    rows = scaling_rows([_timing("serial", "pinned", 1, wall=10.0, startup=2.0), retried])
    assert [(r["earlier_tries"], r["earlier_tries_s"]) for r in rows] == [(0, 0.0), (2, 90.0)]


def test_a_run_whose_cpus_were_smt_siblings_says_so_in_the_findings():
    rows = scaling_rows([
        _timing("serial", "pinned", 1, wall=12.0, startup=2.0, threads=[1], cpus=1, physical_cores=1),
        _timing("multiprocessing", "pinned", 4, wall=6.0, startup=2.0, threads=[1] * 4, cpus=4, physical_cores=2),
    ])
    assert [r["physical_cores"] for r in rows] == [1, 2]
    assert findings(rows)[0].startswith("images: multiprocessing pinned on 4 CPUs (on 2 physical cores: SMT "
                                        "siblings shared them): steady speedup 2.50x")
    rows[1]["physical_cores"] = 4
    assert findings(rows)[0].startswith("images: multiprocessing pinned on 4 CPUs: steady")


# --- bad timing files: one line naming the file, exit 2, neither the table nor the figure ---------


def _embed_scaling(repo_root, tmp_path, *timings):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "scripts/embed_scaling.py", "--timings", *map(str, timings),
                           "--out", str(tmp_path / "out" / "t.csv"), "--figure", str(tmp_path / "out" / "f.png")],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)


def _timing_file(folder, timing):
    import json

    folder.mkdir(parents=True)
    (folder / "timing.json").write_text(json.dumps(timing))
    return folder / "timing.json"


@pytest.mark.parametrize("drop, key", [(None, "modality"), ("wall_s", "wall_s")])
def test_a_timing_file_without_a_key_is_one_line_and_writes_nothing(repo_root, tmp_path, drop, key):
    good = _timing_file(tmp_path / "serial-pinned-w1", _timing("serial", "pinned", 1, 10.0, 2.0))
    timing = {k: v for k, v in _timing("joblib", "pinned", 2, 6.0, 2.0).items() if k != drop} if drop else {}
    bad = _timing_file(tmp_path / "joblib-pinned-w2", timing)
    proc = _embed_scaling(repo_root, tmp_path, good, bad)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {bad}: missing key {key!r}; not the timing.json of a finished embedding run\n"
    assert not (tmp_path / "out").exists()


def test_the_same_timing_file_twice_is_one_line_and_writes_nothing(repo_root, tmp_path):
    good = _timing_file(tmp_path / "serial-pinned-w1", _timing("serial", "pinned", 1, 10.0, 2.0))
    proc = _embed_scaling(repo_root, tmp_path, good, good)
    assert proc.returncode == 2
    assert proc.stderr == (f"error: {tmp_path / 'serial-pinned-w1' / 'timing.json'}: timing file given twice; "
                           "each run is one row of the table\n")
    assert not (tmp_path / "out").exists()


def test_a_copied_run_is_one_line_naming_both_files(tmp_path):
    first = _timing_file(tmp_path / "a" / "serial-pinned-w1", _timing("serial", "pinned", 1, 10.0, 2.0))
    copy = _timing_file(tmp_path / "b" / "serial-pinned-w1", _timing("serial", "pinned", 1, 11.0, 2.0))
    with pytest.raises(DataError) as info:
        load_timings([first, copy])
    assert str(info.value) == (f"{copy}: the same run (local images serial-pinned-w1) as {first}; "
                               "each run is one row of the table")


def test_an_uneven_shard_split_bounds_the_speedup_and_the_findings_say_so():
    base = _timing("serial", "pinned", 1, wall=14.0, startup=2.0, threads=[1], cpus=1, per_worker=[{"items": 100}])
    two = _timing("multiprocessing", "pinned", 2, wall=10.0, startup=2.0, threads=[1, 1], cpus=2, processes=2,
                  per_worker=[{"items": 64}, {"items": 36}])
    rows = scaling_rows([base, two])
    assert rows[0]["shard_bound"] == 1 and rows[1]["shard_bound"] == pytest.approx(100 / 64)
    assert findings(rows)[0].startswith("images: multiprocessing pinned on 2 CPUs: steady speedup 1.50x (its shards "
                                        "allow at most 1.56x), efficiency 75%")


def test_short_steady_windows_and_compute_times_carry_no_claim():
    """The demo's windows are tens of milliseconds: start-up skew and timer noise, not scaling."""
    base = _timing("serial", "pinned", 1, wall=2.5, startup=2.0, threads=[1], cpus=1)
    two = _timing("multiprocessing", "pinned", 2, wall=2.3, startup=2.0, threads=[1, 1], cpus=2)
    assert findings(scaling_rows([base, two]))[0] == ("images: multiprocessing pinned on 2 CPUs: steady windows under "
                                                      "1 s; too short to measure steady scaling (use more images)")
    base = _timing("serial", "pinned", 1, wall=12.0, startup=2.0, threads=[1], cpus=1)
    two = _timing("multiprocessing", "pinned", 2, wall=7.0, startup=2.0, threads=[1, 1], cpus=2)
    base["compute_s"] = two["compute_s"] = 0.5  # long windows, but the model's part of them is too short to compare
    found = findings(scaling_rows([base, two]))[0]
    assert found.startswith("images: multiprocessing pinned on 2 CPUs: steady speedup") and "compute costs" not in found


def test_a_table_without_the_window_columns_is_not_called_short():
    from diffscale.embed.scaling import long_enough

    old = {"wall_s": 30.0}  # a CSV from before steady_from_s and compute_s
    assert long_enough(old, old, "steady") and long_enough(old, old, "compute")
    assert not long_enough({"wall_s": 3.0, "steady_from_s": 2.5}, old, "steady")


def test_a_finding_quotes_the_most_cpus_a_policy_ran_on():
    rows = scaling_rows([_timing("serial", "pinned", 1, wall=10.0, startup=2.0, threads=[1], cpus=1),
                         _timing("multiprocessing", "pinned", 2, wall=6.0, startup=2.0, threads=[1, 1], cpus=2),
                         _timing("multiprocessing", "pinned", 4, wall=4.0, startup=2.0, threads=[1] * 4, cpus=4)])
    found = [f for f in findings(rows) if "multiprocessing pinned" in f]
    assert len(found) == 1 and "on 4 CPUs" in found[0] and "steady speedup 4.00x" in found[0]


def test_only_a_split_well_below_the_process_count_caps_the_speedup():
    assert shard_cap({"shard_bound": 4.0, "processes": 4}) is None  # an even split
    assert shard_cap({"shard_bound": 3.9, "processes": 4}) is None  # within 5 %: rounding, not a cap
    assert shard_cap({"shard_bound": 2.0, "processes": 4}) == 2.0
    assert shard_cap({"processes": 4}) is None


def test_a_comparison_needs_a_long_enough_window_on_both_sides():
    long_row, short_base = {"wall_s": 10.0, "steady_from_s": 2.0}, {"wall_s": 3.0, "steady_from_s": 2.5}
    assert long_enough(long_row, long_row, "steady")
    assert not long_enough(long_row, short_base, "steady") and not long_enough(short_base, long_row, "steady")


def test_one_file_by_two_spellings_is_given_twice_and_runs_differing_in_n_are_two_rows(tmp_path):
    two = _timing_file(tmp_path / "multiprocessing-pinned-w2", _timing("multiprocessing", "pinned", 2, 6.0, 2.0))
    four = _timing_file(tmp_path / "multiprocessing-pinned-w4", _timing("multiprocessing", "pinned", 4, 4.0, 2.0))
    assert [t["workers"] for t in load_timings([two, four])] == [2, 4]
    again = tmp_path / "multiprocessing-pinned-w4" / ".." / "multiprocessing-pinned-w2" / "timing.json"
    with pytest.raises(DataError, match=r"timing file given twice; each run is one row of the table$"):
        load_timings([two, again])


def test_a_window_of_exactly_the_shortest_time_is_long_enough():
    exact = {"wall_s": 3.0, "steady_from_s": 2.0, "compute_s": 1.0}
    assert long_enough(exact, exact, "steady") and long_enough(exact, exact, "compute")


def test_the_shard_bound_of_a_run_that_embedded_nothing_is_unknown():
    assert math.isnan(shard_bound({"items": 0, "per_worker": [{"items": 0}, {"items": 0}]}))
    assert math.isnan(shard_bound({"items": 8, "per_worker": []}))
    assert shard_bound({"items": 12, "per_worker": [{"items": 8}, {"items": 4}]}) == 1.5


def test_a_split_caps_the_speedup_below_95_percent_of_the_processes():
    assert shard_cap({"shard_bound": 3.7, "processes": 4}) == 3.7
    assert shard_cap({"shard_bound": 3.8, "processes": 4}) is None  # exactly 95 %


def test_threads_per_worker_are_listed_worker_by_worker_when_they_differ():
    [row] = scaling_rows([_timing("multiprocessing", "naive", 3, 6.0, 2.0, threads=[1, 2, 1])])
    assert row["threads_per_worker"] == "1/2/1"


def test_a_timing_from_before_cpus_and_processes_has_one_of_each_per_worker():
    [row] = scaling_rows([_timing("joblib", "pinned", 4, 6.0, 2.0)])
    assert (row["cpus"], row["processes"]) == (4, 4)


def test_a_run_with_no_steady_window_has_no_busy_share():
    base = _timing("serial", "pinned", 1, wall=10.0, startup=2.0, threads=[1], cpus=1)
    closed = _timing("multiprocessing", "pinned", 2, wall=3.0, startup=2.0, threads=[1, 1], cpus=2, steady_from_s=3.0)
    assert math.isnan(scaling_rows([base, closed])[1]["busy_share"])


def test_the_findings_project_the_full_study_from_each_modality():
    images = _timing("serial", "pinned", 1, 10.0, 2.0, projected_full_gb=1.5, bytes_per_item=16384, bytes_per_image=16384)
    text = _timing("serial", "pinned", 1, 10.0, 2.0, modality="text", projected_full_gb=0.25, bytes_per_item=400,
                   bytes_per_image=2000)
    older = _timing("serial", "pinned", 1, 10.0, 2.0, modality="audio")  # a run without the projection
    assert findings(scaling_rows([images, text, older]))[-1] == (
        "projected full-study shards at these settings: images 1.50 GB (16384 B per image), text 0.25 GB "
        "(2000 B per image); total 1.75 GB")


def test_the_figure_draws_each_policy_by_n_without_the_baseline_or_oversubscribed_runs():
    rows = scaling_rows([
        _timing("serial", "pinned", 1, wall=12.0, startup=2.0, threads=[1], cpus=1),
        _timing("multiprocessing", "pinned", 4, wall=4.0, startup=2.0, threads=[1] * 4, cpus=4),
        _timing("multiprocessing", "pinned", 2, wall=7.0, startup=2.0, threads=[1, 1], cpus=2),
        _timing("multiprocessing", "pinned", 8, wall=4.0, startup=2.0, threads=[1] * 8, cpus=8, oversubscribed=True),
        _timing("serial", "intraop", 2, wall=8.0, startup=2.0, threads=[2], cpus=2),
        _timing("serial", "pinned", 1, wall=5.0, startup=1.0, modality="text"),
    ])
    assert figure_lines(rows, "images", "steady_speedup") == {
        ("serial", "intraop"): [(2, pytest.approx(10 / 6))],
        ("multiprocessing", "pinned"): [(2, pytest.approx(2.0)), (4, pytest.approx(5.0))]}
    assert list(figure_lines(rows[::-1], "images", "steady_speedup")) == [("serial", "intraop"), ("multiprocessing", "pinned")]
    assert figure_lines(rows[::-1], "images", "steady_speedup") == figure_lines(rows, "images", "steady_speedup")
    assert figure_lines(rows, "text", "speedup") == {}
