"""The study-1 findings and embedding table, sentence by sentence: what each says for a change
in the tables a user could make (another GPU count, an older CSV, a short run)."""

from __future__ import annotations

import pandas as pd
import pytest

from diffscale.report import fmt


def _embed(results):
    path = results / "bench" / "embed_scaling.csv"
    return path, pd.read_csv(path)


def _finding(page, start: str) -> str:
    return next(f["text"] for f in page.findings if f["text"].startswith(start))


def _cost(page, label: str, table: str = "embed-images") -> str:
    rows = next(t for t in page.tables if t["id"] == table)["rows"]
    return next(c["value"] for row in rows if row[0]["text"] == label for c in row if c["col"] == "cost_per_1k")


def test_the_coco_finding_gives_the_kept_share_of_the_input(results, build):
    assert _finding(build(results), "COCO filter").startswith(
        "COCO filter: 600 of 1,000 images (60 %) are people-centric (a person in enough of their captions).")


def test_the_gpu_run_is_labelled_gpu_and_the_gpu_finding_compares_steady_rates_too(results, build):
    page = build(results)
    rows = next(t for t in page.tables if t["id"] == "embed-images")["rows"]
    assert rows[-1][0]["text"] == "gpu"  # one process per device: no thread policy to name
    _, frame = _embed(results)
    images = frame[frame["modality"] == "images"]
    best = images[images["backend"] != "gpu"].loc[lambda f: f["items_per_s"].idxmax()]
    gpu = images[images["backend"] == "gpu"].iloc[0]
    steady = fmt.ratio(gpu["steady_items_per_s"] / best["steady_items_per_s"])
    assert steady == "3.9×"  # the GPU is faster without start-up, not slower
    assert f"in images per second end to end, {steady} without start-up." in _finding(page, "VAE latents: 1 GPU")


def test_a_run_on_two_gpus_is_billed_for_both(results, build):
    path, frame = _embed(results)
    gpu = (frame["modality"] == "images") & (frame["backend"] == "gpu")
    frame.loc[gpu, "workers"] = 2
    frame.to_csv(path, index=False)
    row = frame[gpu].iloc[0]
    assert float(_cost(build(results), "gpu")) == pytest.approx(2.50 * 2 * row["wall_s"] / 3600 / row["items"] * 1000)


def test_the_gpu_finding_quotes_the_fewest_gpus(results, build):
    path, frame = _embed(results)
    gpu = frame[(frame["modality"] == "images") & (frame["backend"] == "gpu")]
    four = gpu.assign(workers=4, items_per_s=gpu["items_per_s"] * 3, run="embed/images/gpu-pinned-w4")
    pd.concat([frame, four]).to_csv(path, index=False)
    assert _finding(build(results), "VAE latents: 1").startswith("VAE latents: 1 GPU (a100, 1,000 images) = 2.9× the best")


def test_a_dask_run_without_a_cluster_cell_is_billed_as_local(results, build):
    """An older table, or an empty CSV cell: the workers ran in the run's own job."""
    path, frame = _embed(results)
    joblib = (frame["modality"] == "images") & (frame["backend"] == "joblib") & (frame["policy"] == "pinned") \
        & (frame["workers"] == 2)
    frame.loc[joblib, "backend"] = "dask"
    frame["dask_cluster"] = ""
    frame.to_csv(path, index=False)
    row = frame[joblib].iloc[0]
    assert float(_cost(build(results), "dask · pinned")) == pytest.approx(
        0.40 * 2 / 8 * row["wall_s"] / 3600 / row["items"] * 1000)


def test_a_table_marking_oversubscription_with_1_and_0_is_read(results, build):
    path, frame = _embed(results)
    over = (frame["backend"] == "joblib") & (frame["policy"] == "pinned") & (frame["workers"] == 8)
    frame["oversubscribed"] = over.astype(int)
    frame.to_csv(path, index=False)
    labels = [row[0]["text"] for row in next(t for t in build(results).tables if t["id"] == "embed-images")["rows"]]
    assert labels.count("joblib · pinned (oversubscribed: fewer CPUs than named)") == 1
    assert labels.count("joblib · pinned") == 1


def test_a_short_steady_window_gives_no_steady_speedup_even_when_the_table_has_one(results, build):
    path, frame = _embed(results)
    frame["steady_from_s"] = frame["wall_s"] - 0.05
    frame["steady_speedup"] = 3.0
    frame.to_csv(path, index=False)
    text = _finding(build(results), "VAE latents, 8 CPUs")
    assert "without start-up" not in text
    assert "; steady windows under 1 s: too short for a steady figure or for where the time went." in text


def test_the_intraop_part_quotes_the_run_on_the_most_cpus(results, build):
    path, frame = _embed(results)
    serial = frame[(frame["modality"] == "images") & (frame["backend"] == "serial")].iloc[0]
    intraop = [serial.to_dict() | {"policy": "intraop", "workers": n, "cpus": n, "speedup": s,
                                   "items_per_s": serial["items_per_s"] * s, "run": f"embed/images/serial-intraop-w{n}"}
               for n, s in ((2, 1.9), (8, 1.2))]  # faster on 2 CPUs than on 8
    pd.concat([frame, pd.DataFrame(intraop)]).to_csv(path, index=False)
    assert "; one process × 8 threads (intraop) 1.2×" in _finding(build(results), "VAE latents, 8 CPUs")


def test_the_scaling_finding_names_the_serial_baseline_among_its_runs(results, build):
    text = _finding(build(results), "VAE latents, 8 CPUs")
    assert text.endswith("from runs: embed/images/multiprocessing-pinned-w8, embed/images/multiprocessing-naive-w8, "
                         "embed/images/serial-pinned-w1")


def test_parallel_runs_on_one_cpu_only_say_one_cpu(results, build):
    path, frame = _embed(results)
    keep = (frame["backend"].isin(["serial", "gpu"])) | (frame["workers"] == 2)
    frame = frame[keep].assign(workers=lambda f: f["workers"].where(f["backend"].isin(["serial", "gpu"]), 1))
    frame = frame.drop_duplicates(["modality", "backend", "policy", "workers"])
    frame.to_csv(path, index=False)
    assert _finding(build(results), "VAE latents, 1 CPU").startswith("VAE latents, 1 CPU: pinned workers")


def _projected(frame, images=48000):
    frame["projected_images"] = images
    frame["bytes_per_item"] = frame["modality"].map({"images": 2048, "text": 1480})
    frame["bytes_per_image"] = frame["modality"].map({"images": 2048, "text": 7400})  # 5 captions an image
    frame["projected_full_gb"] = frame["modality"].map({"images": 0.1, "text": 0.35})
    return frame


def test_a_cost_row_without_a_steady_rate_gives_no_full_study_time(results, build):
    path, frame = _embed(results)
    frame = _projected(frame)
    frame.loc[frame["backend"] == "serial", "steady_items_per_s"] = float("nan")
    frame.to_csv(path, index=False)
    text = _finding(build(results), "Text embeddings: cost per 1,000")
    assert "CPU $0.00028 (serial, 1 worker, cpu; start-up 5.0 % of its wall time)" in text
    assert "GPU $0.00079 (gpu, 1 GPU, a100; start-up 53 % of its wall time; the full study's 240,000 captions in" in text


def test_a_small_study_gives_its_caption_count_unrounded(results, build):
    path, frame = _embed(results)
    _projected(frame, images=96).to_csv(path, index=False)
    assert "; the full study's 480 captions in " in _finding(build(results), "Text embeddings: cost per 1,000")


def test_the_disk_projection_quotes_the_largest_run_and_needs_both_modalities(results, build):
    path, frame = _embed(results)
    frame = _projected(frame)
    frame.loc[(frame["modality"] == "images") & (frame["backend"] == "gpu"), "projected_full_gb"] = 0.2
    frame.to_csv(path, index=False)
    page = build(results)
    assert _finding(page, "VAE latents: the full").startswith("VAE latents: the full people-centric study (48,000 "
                                                              "images) would take 0.200 GB on disk")
    assert _finding(page, "Embeddings of the full study").startswith("Embeddings of the full study on disk, with these "
                                                                     "runs' models and dtype: latents 0.200 GB + text 0.350 GB")
    frame.loc[frame["modality"] == "text", "projected_full_gb"] = float("nan")  # text not projected: no total
    frame.to_csv(path, index=False)
    page = build(results)
    assert not [f for f in page.findings if f["text"].startswith("Embeddings of the full study")]
    assert _finding(page, "VAE latents: the full")


def test_the_speedup_figure_draws_intraop_and_leaves_out_the_baseline_and_oversubscribed_runs(results, build,
                                                                                            monkeypatch):
    from diffscale.report import plots

    drawn = {}

    def speedup(series, title, *args, **kwargs):
        drawn[title.split(":")[0]] = series
        return plots.Drawing(lambda: b"", (), {})

    monkeypatch.setattr(plots, "speedup", speedup)
    path, frame = _embed(results)
    serial = frame[(frame["modality"] == "images") & (frame["backend"] == "serial")].iloc[0]
    intraop = serial.to_dict() | {"policy": "intraop", "workers": 2, "cpus": 2, "speedup": 1.5,
                                  "run": "embed/images/serial-intraop-w2"}
    frame = pd.concat([frame, pd.DataFrame([intraop])])
    frame["oversubscribed"] = (frame["backend"] == "joblib") & (frame["workers"] == 8)
    no_speedup = (frame["backend"] == "multiprocessing") & (frame["policy"] == "naive") & (frame["workers"] == 2)
    frame.loc[no_speedup, "speedup"] = float("nan")
    frame.to_csv(path, index=False)
    build(results)
    series = drawn["VAE latents"]
    assert sorted(series) == ["gpu (x = GPUs)", "joblib naive", "joblib pinned", "multiprocessing naive",
                              "multiprocessing pinned", "serial intraop"]
    assert series["serial intraop"] == [(2.0, 1.5)] and [x for x, _ in series["joblib pinned"]] == [2.0]
    assert [x for x, _ in series["multiprocessing naive"]] == [8.0]  # the w2 run has no speedup to draw


def test_a_naive_run_with_the_pinned_threads_has_nothing_to_explain(results, build):
    path, frame = _embed(results)
    same = (frame["backend"] == "joblib") & (frame["policy"] == "naive") & (frame["workers"] == 2)
    frame.loc[same, "threads_per_worker"] = 1
    frame.to_csv(path, index=False)
    rows = next(t for t in build(results).tables if t["id"] == "embed-oversubscription")["rows"]
    shown = [tuple(c["text"] for c in row[:3]) for row in rows]
    assert ("images", "joblib", "2") not in shown and ("images", "joblib", "8") in shown
    assert ("images", "multiprocessing", "2") in shown


def test_the_oversubscription_table_counts_threads_per_cpu_and_names_the_largest_slowdown(results, build):
    page = build(results)
    rows = next(t for t in page.tables if t["id"] == "embed-oversubscription")["rows"]
    per_cpu = {tuple(c["text"] for c in row[:3]): next(c["text"] for c in row if c["col"] == "threads_per_cpu")
               for row in rows}
    assert per_cpu[("images", "joblib", "8")] == "8.0" and per_cpu[("images", "joblib", "2")] == "2.0"
    _, frame = _embed(results)
    wall = frame.set_index(["modality", "backend", "policy", "workers"])["wall_s"]
    worst = wall[("images", "multiprocessing", "naive", 8)] / wall[("images", "multiprocessing", "pinned", 8)]
    assert fmt.ratio(worst) == "7.6×"
    assert f"the largest slowdown here is 7.6× (multiprocessing, 8 workers, images)." in " ".join(page.sections["embed"])


def test_the_multi_gpu_finding_leaves_out_a_precision_run_on_one_gpu_only(results, build):
    texts = [f["text"].split(" details")[0] for f in build(results).findings
             if f["text"].startswith(("U-Net training on a100:", "U-Net training on a40:"))]
    assert texts == ["U-Net training on a100: fp32 on 4 GPUs 3.8× one (94 % efficiency per GPU).",
                     "U-Net training on a40: fp32 on 4 GPUs 3.8× one (94 % efficiency per GPU)."]  # bf16 ran on 1
