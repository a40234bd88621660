"""The report built from fixture tables: every section, embedded images, the numbers shown equal
the CSVs, findings are computed, a missing study is one line, short tables stay short."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from report_data import HARDWARE, amp_rows

from diffscale import vocab
from diffscale.report import fmt
from diffscale.report.html import build_report

SECTIONS = ["findings", "cost", "coco", "embed", "train", "flux", "ddpm", "models", "provenance"]
MAX_SHORT_COLUMNS = 10  # the most columns any short table chooses (training: with its job time)
STUDY_TABLES = {"coco": ["coco_filter.csv"], "embed": ["embed_scaling.csv"], "train": ["train_unet.csv"],
                "flux": ["flux_train.csv", "flux_loss.csv", "flux_quality.csv", "flux_infer.csv", "flux_samples.png"],
                "ddpm": ["ddpm_profile.csv", "ddpm_batch.csv", "ddpm_amp.csv", "ddpm_workers.csv", "ddpm_compile.csv",
                         "ddpm_peer.csv"]}
# short table id → its CSV (rows in CSV order; profile tables are a top-10 slice per sort_by)
TABLE_CSV = {"embed-images": ("embed_scaling.csv", {"modality": "images"}),
             "embed-text": ("embed_scaling.csv", {"modality": "text"}),
             "train-unet": ("train_unet.csv", {}), "flux-train": ("flux_train.csv", {}),
             "flux-quality": ("flux_quality.csv", {}), "flux-infer": ("flux_infer.csv", {}),
             "ddpm-batch": ("ddpm_batch.csv", {}), "ddpm-amp": ("ddpm_amp.csv", {}),
             "ddpm-peer": ("ddpm_peer.csv", {}), "ddpm-profile-device": ("ddpm_profile.csv", {"sort_by": "device"}),
             "models": ("models.csv", {})}


def test_every_section_is_present_with_content(results, build):
    page = build(results)
    for section in SECTIONS:
        assert section in page.sections, section
    for study in ("coco", "embed", "train", "flux", "ddpm"):
        assert not page.notices.get(study), (study, page.notices.get(study))
        assert any(t["section"] == study and not t["in_details"] for t in page.tables), study
    assert {f["section"] for f in page.findings} == {"coco", "embed", "train", "flux", "ddpm"}


def test_every_image_is_an_embedded_png(results, build):
    page = build(results, draw=True)
    assert len(page.images) >= 20
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def _parse(text: str) -> float | None:
    """A formatted cell back to a number: '$0.12' '6.1×' '76 %' '1,234' '–'."""
    if text == fmt.MISSING:
        return None
    cleaned = text.replace("$", "").replace("×", "").replace("%", "").replace(",", "").strip()
    return float(cleaned)


def test_numbers_in_the_tables_equal_the_csvs(results, build):
    page = build(results)
    checked = 0
    for table in page.tables:
        if table["id"] not in TABLE_CSV:
            continue
        name, where = TABLE_CSV[table["id"]]
        frame = pd.read_csv(results / "bench" / name)
        for column, value in where.items():
            frame = frame[frame[column] == value]
        if table["id"].startswith("ddpm-profile"):
            frame = frame.sort_values("rank").head(10)
        assert len(table["rows"]) == len(frame), table["id"]
        for row, (_, expected) in zip(table["rows"], frame.iterrows()):
            for cell in row:
                if cell["col"] not in frame.columns:
                    continue  # a column the report computed (cost, label)
                want = expected[cell["col"]]
                number = fmt.number(want) if not isinstance(want, (str, bool, np.bool_)) else None
                if number is None:
                    assert cell["text"] in (str(want), fmt.MISSING, fmt.yes_no(want)), (table["id"], cell)
                    continue
                assert float(cell["value"]) == pytest.approx(number, rel=1e-9), (table["id"], cell)
                if cell["col"] == "karp_flatt" and number > 1:  # a slowdown: no serial fraction to show
                    assert cell["text"] == fmt.MISSING, (table["id"], cell)
                    continue
                shown = _parse(cell["text"])
                scale = 100 if cell["text"].endswith("%") and cell["col"] != "pct" else 1
                assert shown == pytest.approx(number * scale, rel=0.051, abs=1e-9), (table["id"], cell)
                checked += 1
    assert checked > 300


def test_costs_follow_the_stated_formula(results, build):
    page = build(results)
    table = next(t for t in page.tables if t["id"] == "embed-images")
    frame = pd.read_csv(results / "bench" / "embed_scaling.csv")
    frame = frame[frame["modality"] == "images"]
    for row, (_, csv) in zip(table["rows"], frame.iterrows()):
        cost = next(c for c in row if c["col"] == "cost_per_1k")
        if csv["backend"] == "gpu":  # 1 GPU share of a100 at $2.50/h
            want = 2.50 * 1 * csv["wall_s"] / 3600 / csv["items"] * 1000
        else:  # a scaling run w{N} asks exactly N CPUs; one share is the entry's 8 CPUs at $0.40/h
            want = 0.40 * csv["workers"] / 8 * csv["wall_s"] / 3600 / csv["items"] * 1000
        assert float(cost["value"]) == pytest.approx(want)
    text = " ".join(page.sections["cost"])
    assert "price_per_hour" in text and "start-up" in text and "$2.50" in text


FINDING_CHANGES = [  # (table, column, section): scaling the column must change that section's findings
    ("coco_filter.csv", "count", "coco"),
    ("embed_scaling.csv", "speedup", "embed"),
    ("embed_scaling.csv", "items_per_s", "embed"),
    ("embed_scaling.csv", "wall_s", "embed"),
    ("train_unet.csv", "samples_per_s", "train"),
    ("train_unet.csv", "speedup", "train"),
    ("flux_train.csv", "speedup", "flux"),
    ("flux_train.csv", "total_s", "flux"),
    ("flux_quality.csv", "psnr", "flux"),
    ("flux_infer.csv", "images_per_s", "flux"),
    ("ddpm_profile.csv", "pct", "ddpm"),
    ("ddpm_batch.csv", "images_per_s", "ddpm"),
    ("ddpm_amp.csv", "vs_baseline", "ddpm"),
    ("ddpm_workers.csv", "data_wait_frac", "ddpm"),
    ("ddpm_compile.csv", "break_even_steps", "ddpm"),
    ("ddpm_peer.csv", "ratio_to_peer", "ddpm"),
]


@pytest.mark.parametrize("name,column,section", FINDING_CHANGES)
def test_each_finding_is_computed_from_its_csv(results, build, copy_results, name, column, section):
    before = [f["text"] for f in build(results).findings if f["section"] == section]
    changed = copy_results(results, "changed")
    frame = pd.read_csv(changed / "bench" / name)
    frame[column] = frame[column] * np.linspace(0.5, 1.5, len(frame))  # changes values and their ratios
    frame.to_csv(changed / "bench" / name, index=False)
    after = [f["text"] for f in build(changed).findings if f["section"] == section]
    assert before and after != before


def test_findings_link_to_their_section_and_name_their_runs(results, build):
    page = build(results)
    flux = [f for f in page.findings if f["section"] == "flux"]
    assert any("from runs: flux/train/" in f["text"] for f in flux)
    assert all("demo" not in f["text"] for f in page.findings)
    demo = build(results, demo=True)
    assert all("demo" in f["text"] for f in demo.findings)
    assert "Demo run" in " ".join(demo.sections["findings"]) or "demo run" in " ".join(demo.sections["findings"])


@pytest.mark.parametrize("study", ["coco", "embed", "train", "flux", "ddpm"])
def test_a_study_that_has_not_run_is_one_line(results, build, study):
    for name in STUDY_TABLES[study]:
        (results / "bench" / name).unlink()
    page = build(results)
    assert len(page.notices[study]) == 1
    assert "not run" in page.notices[study][0].lower()
    assert not [t for t in page.tables if t["section"] == study]
    assert not [f for f in page.findings if f["section"] == study]
    assert study in page.sections  # the section is still there, announcing it


def test_no_results_at_all_still_builds(tmp_path, build):
    (tmp_path / "results").mkdir()
    page = build(tmp_path / "results", hardware={})
    for study in ("coco", "embed", "train", "flux", "ddpm"):
        assert len(page.notices[study]) == 1
    assert "No study has produced results yet." in " ".join(page.sections["findings"])


@pytest.mark.parametrize("name,column,section", [("embed_scaling.csv", "speedup", "embed"),
                                                  ("flux_train.csv", "steps_per_s", "flux"),
                                                  ("ddpm_amp.csv", "loss_end", "ddpm"),
                                                  ("flux_quality.csv", "psnr", "flux")])
def test_a_missing_required_column_is_one_line_in_its_section(results, build, name, column, section):
    path = results / "bench" / name
    pd.read_csv(path).drop(columns=[column]).to_csv(path, index=False)
    page = build(results)
    lines = [n for n in page.notices.get(section, []) if column in n]
    assert len(lines) == 1 and name in lines[0] and "lacks the required column" in lines[0]
    assert "skipped" in lines[0].lower()


def test_a_missing_optional_column_is_left_out(results, build):
    path = results / "bench" / "embed_scaling.csv"
    pd.read_csv(path).drop(columns=["karp_flatt"]).to_csv(path, index=False)
    page = build(results)
    table = next(t for t in page.tables if t["id"] == "embed-images")
    assert "Karp–Flatt" not in table["head"]


def test_short_tables_keep_their_chosen_columns_and_full_ones_hide(results, build):
    path = results / "bench" / "embed_scaling.csv"  # every optional column a real run's table has
    pd.read_csv(path).assign(physical_cores=2, compute_cost_vs_1cpu=1.1).to_csv(path, index=False)
    page = build(results)
    outside = [t for t in page.tables if not t["in_details"]]
    assert outside and all(len(t["head"]) <= MAX_SHORT_COLUMNS for t in outside)
    assert all("short" in t["class"] for t in outside)
    embed = next(t for t in outside if t["id"] == "embed-images")
    assert embed["head"][:6] == ["backend · threads", "workers (CPUs; GPUs for gpu)", "physical cores", "images",
                                 "speedup", "efficiency"]  # a gpu run may embed more items than the scaling runs
    full = [t for t in page.tables if t["in_details"]]
    assert any(len(t["head"]) > MAX_SHORT_COLUMNS for t in full)  # the whole CSV is still there


def test_full_tables_download_as_csv(results, tmp_path):
    out = build_report(results, tmp_path / "r.html", hardware={})
    text = out.read_text()
    links = dict(re.findall(r'download="([^"]+)" href="data:text/csv;base64,([^"]+)"', text))
    assert {"embed_scaling.csv", "train_unet.csv", "flux_train.csv", "ddpm_batch.csv"} <= set(links)
    import io

    back = pd.read_csv(io.StringIO(base64.b64decode(links["flux_train.csv"]).decode()))
    assert back.equals(pd.read_csv(results / "bench" / "flux_train.csv"))


def test_quality_figures_from_random_weights_say_so(results, build):
    page = build(results, draw=True)
    flux = " ".join(page.sections["flux"])
    assert flux.count("random weights: timing only") >= 5  # loss, PSNR, SSIM, samples, table headers
    heads = next(t for t in page.tables if t["id"] == "flux-quality")["head"]
    assert any("random weights: timing only" in h for h in heads)


def test_superlinear_speedup_with_changed_per_device_work_is_flagged(results, build, copy_results):
    changed = copy_results(results, "superlinear")
    path = changed / "bench" / "train_unet.csv"
    frame = pd.read_csv(path)
    frame.loc[(frame["gpus"] == 4) & (frame["hw"] == "a100"), "speedup"] = 4.6
    frame.to_csv(path, index=False)
    page = build(changed)
    text = " ".join(page.sections["train"])
    # the global batch is fixed: 4 GPUs each take a quarter of it (strong scaling)
    assert ("Superlinear speedup flagged: a100 fp32, 4 devices, 4.6×: the same global work split over 4 devices "
            "(256 to 64 samples per device per step); a smaller share per device can fit its caches better, but "
            "check the runs before trusting it.") in text
    assert any("4.6× one" in f["text"] and "superlinear" in f["text"] for f in page.findings)
    assert "Superlinear" not in " ".join(build(results).sections["train"])


def test_oversubscription_is_explained_by_naive_against_pinned(results, build):
    text = " ".join(build(results).sections["embed"])
    assert "naive against pinned" in text and "threads" in text
    finding = next(f["text"] for f in build(results).findings if f["section"] == "embed")
    assert "the library defaults (multiprocessing, naive: 8 threads in each of 8 workers) 0.80×" in finding


def test_provenance_sits_beside_each_study(results, build):
    text = " ".join(build(results).sections["flux"])
    assert "a100/4242" in text and "torch 2.11.0" in text and "commit 0123456789ab" in text
    assert "flux_transformer random:tiny" in text


def test_several_hardware_keys_are_compared_within_their_own(results, build):
    path = results / "bench" / "ddpm_amp.csv"
    frame = pd.read_csv(path)
    a40 = frame[frame["precision"] != "tf32"].assign(hw="a40", images_per_s=frame["images_per_s"] / 2,
                                                      run=frame["run"].str.replace("a100", "a40"))
    rows = amp_rows([dict(r) for r in pd.concat([frame, a40]).to_dict("records")])
    pd.DataFrame(rows).to_csv(path, index=False)
    page = build(results)
    table = next(t for t in page.tables if t["id"] == "ddpm-amp")
    assert table["head"][0] == "hardware"
    ratios = {(row[0]["text"], row[1]["text"]): c["text"] for row in table["rows"] for c in row
              if c["col"] == "vs_baseline"}
    # a100 against its tf32 run (1.6x fp32's images/s); a40 ran no tf32, so against its fp32 run
    assert ratios == {("a100", "bf16"): "1.5×", ("a100", "fp16"): "1.4×", ("a100", "fp32"): "0.62×",
                      ("a100", "tf32"): "1.0×", ("a40", "bf16"): "2.4×", ("a40", "fp16"): "2.3×",
                      ("a40", "fp32"): "1.0×"}
    assert [f["text"] for f in page.findings if "trains at" in f["text"]] == [
        "DDPM on a100: bf16 trains at 1.5× the tf32 (fp32 on TF32 tensor cores) throughput. details"
        "from runs: ddpm/a100/bf16",
        "DDPM on a40: bf16 trains at 2.4× the fp32 (TF32 off) throughput. detailsfrom runs: ddpm/a40/bf16"]


def test_issue_12_columns_explain_storage_and_oversubscription(results, build):
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    frame["bytes_per_item"] = 16384
    frame["projected_full_gb"] = 1.3
    frame.to_csv(path, index=False)
    frame["bytes_per_image"] = [16384 if m == "images" else 5 * 20480 for m in frame["modality"]]
    frame["projected_images"] = 48000
    frame["projected_full_gb"] = [0.79 if m == "images" else 4.9 for m in frame["modality"]]
    frame["tokens_per_caption"] = [None if m == "images" else 13.5 for m in frame["modality"]]
    frame["bytes_per_token"] = [None if m == "images" else 1536 for m in frame["modality"]]
    over = (frame["backend"] == "joblib") & (frame["workers"] == 8)  # 8 CPUs named on a machine with fewer
    frame.loc[over, "oversubscribed"] = True
    frame.loc[over, "speedup"] = 50.0  # a claim the findings must not repeat
    frame.to_csv(path, index=False)
    page = build(results)
    texts = [f["text"] for f in page.findings]
    assert any("VAE latents: the full people-centric study (48,000 images) would take 0.790 GB on disk with this "
               "run's model and dtype (16.0 KiB per image)." in t for t in texts)
    assert any("Text embeddings: the full people-centric study (48,000 images) would take 4.90 GB on disk with this "
               "run's model and dtype (16.0 KiB per caption, 100 KiB per image, 13.5 real tokens per caption, 1,536 bytes each)." in t
               for t in texts)
    assert any(t.startswith("Embeddings of the full study on disk, with these runs' models and dtype: latents 0.790 GB "
                            "+ text 4.90 GB = 5.69 GB")
               for t in texts)
    assert not any("50.0×" in t or "50×" in t for t in texts)
    main = next(t for t in page.tables if t["id"] == "embed-images")
    labels = {(row[0]["text"], row[1]["text"]) for row in main["rows"]}
    assert {("joblib · pinned (oversubscribed: fewer CPUs than named)", "8"), ("multiprocessing · pinned", "8"),
            ("joblib · pinned", "2")} <= labels
    table = next(t for t in page.tables if t["id"] == "embed-oversubscription")
    assert "oversubscribed" in table["head"]
    assert {c["text"] for row in table["rows"] for c in row if c["col"] == "oversubscribed"} == {"yes", "no"}


def test_the_pinned_finding_says_what_the_cores_shared(results, build):
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    frame["compute_cost_vs_1cpu"] = 1.0
    frame.loc[(frame["backend"] == "multiprocessing") & (frame["policy"] == "pinned") & (frame["workers"] == 8),
              "compute_cost_vs_1cpu"] = 1.25
    frame.to_csv(path, index=False)
    page = build(results)
    found = [f["text"] for f in page.findings if ", 8 CPUs:" in f["text"]]
    assert len(found) == 2 and all("each pinned worker's compute took 1.2× the CPU time per item it takes alone" in f
                         for f in found)
    table = next(t for t in page.tables if t["id"] == "embed-images")
    assert "compute CPU time per item vs 1 CPU" in table["head"]
    frame["compute_s"] = 0.5  # under a second of compute: timer noise, no claim
    frame.to_csv(path, index=False)
    assert not [f for f in build(results).findings if "each pinned worker's compute" in f["text"]]


def test_short_steady_windows_make_no_steady_claim_and_an_uneven_split_is_named(results, build):
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    frame["steady_from_s"] = frame["wall_s"] - 0.05  # the demo's: tens of milliseconds
    pinned = (frame["backend"] == "multiprocessing") & (frame["policy"] == "pinned") & (frame["workers"] == 8)
    frame["processes"], frame["shard_bound"] = frame["workers"], frame["workers"]
    frame.loc[pinned, "shard_bound"] = 5.0
    frame.to_csv(path, index=False)
    found = [f["text"] for f in build(results).findings if ", 8 CPUs:" in f["text"]]
    assert len(found) == 2 and all("without start-up" not in f and "steady windows under 1 s: too short" in f
                                   and "(its shards allow at most 5.0×: uneven shares)" in f for f in found)


def test_a_pinned_run_on_smt_siblings_says_so_in_its_finding_and_table(results, build):
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    frame["physical_cores"] = frame["cpus"] if "cpus" in frame else frame["workers"]
    frame.loc[(frame["backend"] == "multiprocessing") & (frame["policy"] == "pinned") & (frame["workers"] == 8),
              "physical_cores"] = 4
    frame.to_csv(path, index=False)
    page = build(results)
    found = [f["text"] for f in page.findings if ", 8 CPUs:" in f["text"]]
    assert len(found) == 2 and all("efficiency) (on 4 physical cores: SMT siblings shared them)" in f for f in found)
    table = next(t for t in page.tables if t["id"] == "embed-images")
    assert "physical cores" in table["head"]
    assert "4" in [c["text"] for row in table["rows"] for c in row if c["col"] == "physical_cores"]


def test_values_of_an_unexpected_kind_break_only_their_section(results, build):
    path = results / "bench" / "flux_infer.csv"
    frame = pd.read_csv(path)
    frame["images_per_s"] = "fast"
    frame.to_csv(path, index=False)
    page = build(results)
    assert len(page.notices["flux"]) == 1 and "Not built" in page.notices["flux"][0]
    assert not page.notices.get("ddpm") and any(f["section"] == "ddpm" for f in page.findings)


def test_the_compile_verdict_of_the_study_is_shown_when_it_gives_one(results, build):
    path = results / "bench" / "ddpm_compile.csv"
    frame = pd.read_csv(path)
    frame["pays_off"] = ["baseline", "never (no per-step saving)"]
    frame.to_csv(path, index=False)
    table = next(t for t in build(results).tables if t["id"] == "ddpm-compile")
    assert [c["text"] for row in table["rows"] for c in row if c["col"] == "pays_off"] == [
        "baseline", "never (no per-step saving)"]


def test_inference_batches_that_ran_out_of_memory_are_shown_as_such(results, build):
    path = results / "bench" / "flux_infer.csv"
    frame = pd.read_csv(path)
    frame["status"] = "ok"
    oom = frame.iloc[[-1]].assign(batch_size=16, status="oom", images_per_s=float("nan"), denoise_s=float("nan"),
                                  decode_s=float("nan"), first_image_s=float("nan"))
    pd.concat([frame, oom]).to_csv(path, index=False)
    page = build(results, draw=True)
    table = next(t for t in page.tables if t["id"] == "flux-infer")
    assert [c["text"] for c in table["rows"][-1] if c["col"] in ("status", "images_per_s")] == ["–", "oom"]
    assert not page.notices.get("flux")


def test_fusing_and_quality_findings_compare_like_with_like(results, build):
    path = results / "bench" / "flux_infer.csv"
    frame = pd.read_csv(path)  # a100: fused 2.0 against unfused 1.6 images/s at each batch (1.25x)
    a40 = frame.assign(hw="a40", images_per_s=frame["images_per_s"] * 1.875)
    a40.loc[a40["model"] == "lora", "images_per_s"] = 2.0  # a40: fused 3.75 against 2.0 (1.875x)
    pd.concat([frame, a40]).to_csv(path, index=False)
    path = results / "bench" / "flux_quality.csv"
    frame = pd.read_csv(path)
    other = frame.assign(gpus=2, psnr=frame["psnr"] - 2, ssim=frame["ssim"] - 0.1, run="flux/train/a100/g2-s1000")
    pd.concat([frame, other]).to_csv(path, index=False)
    texts = [f["text"].split(" details")[0] for f in build(results).findings]
    # matched pairs (1.25, 1.25, 1.875, 1.875), not the best fused (3.75) over the best unfused (2.0)
    assert ("FLUX inference: fusing the LoRA into the weights gives 1.6× the throughput of the unfused adapter "
            "(median of 4 matched settings, 1.2×–1.9×).") in texts
    assert ("FLUX LoRA quality at step 1000: PSNR 21.0 dB, SSIM 0.350 (median of 2 runs; PSNR 20.0–22.0, "
            "SSIM 0.300–0.400) (random weights: timing only).") in texts
    pd.concat([frame, frame.assign(gpus=2, run="flux/train/a100/g2-s1000")]).to_csv(path, index=False)
    texts = [f["text"].split(" details")[0] for f in build(results).findings]
    assert ("FLUX LoRA quality at step 1000: PSNR 22.0 dB, SSIM 0.400 (2 runs, all the same) (random weights: "
            "timing only).") in texts


def test_the_workers_finding_weighs_throughput_per_hardware(results, build):
    path = results / "bench" / "ddpm_workers.csv"
    frame = pd.read_csv(path)  # a100: 0, 2, 4 workers at 768, 1152, 1280 images/s
    slow = frame.assign(hw="a40", images_per_s=[500.0, 400.0, 300.0], run=frame["run"].str.replace("a100", "a40"))
    pd.concat([frame, slow]).to_csv(path, index=False)
    texts = [f["text"].split(" details")[0] for f in build(results).findings if "loader workers" in f["text"]]
    assert texts == ["DDPM on a100: 4 loader workers train at 1,280 images/s, 1.7× 0 workers' 768; they wait 8.0 % "
                     "of each step for data (0 workers: 40 % of each step).",
                     "DDPM on a40: more loader workers did not speed training up: 0 workers were fastest (500 "
                     "images/s, waiting 40 % of each step for data)."]


def test_ddpm_batch_cost_is_per_image_not_per_step(results, build):
    table = next(t for t in build(results).tables if t["id"] == "ddpm-batch")
    assert "$ per 1M images" in table["head"]
    cost = {(row[0]["text"], row[1]["text"]): c["text"] for row in table["rows"] for c in row if c["col"] == "cost"}
    # $2.50 per GPU-hour: 1 GPU, batch 128 at 1,280 images/s: (8 s + 1e6 / 1280 s) = $0.55; 4 GPUs at
    # 3.5x: 4 x (8 + 1e6 / 4480) s = $0.64 (per step, 4 GPUs would have looked 3.5x dearer)
    assert cost[("1", "128")] == "$0.55" and cost[("4", "128")] == "$0.64"


def test_a_ddpm_window_whose_blocks_disagree_is_flagged(results, build):
    path = results / "bench" / "ddpm_workers.csv"
    frame = pd.read_csv(path)
    frame["block_spread"] = [1.02, 1.8, 1.1]  # the 2-worker run was disturbed
    frame.to_csv(path, index=False)
    text = " ".join(build(results).sections["ddpm"])
    assert ("Noisy window flagged: ddpm/a100/nw2: its slowest timed block took 1.8× its fastest (above 1.25×); "
            "the table shows the median block, but re-run it before trusting the comparison.") in text
    assert text.count("Noisy window flagged") == 1


@pytest.mark.parametrize("cifar, shown", [
    ({"format": "python archive", "images": 50000, "classes": {"cat": 5000, "dog": 5000}},
     "CIFAR-10 (python archive): 50,000 training images in 2 classes"),
    ({"format": "image folder", "images": 50000, "classes": {}},  # Kaggle's flat train/*.png
     "CIFAR-10 (image folder): 50,000 training images, unlabelled"),
])
def test_the_inputs_name_the_cifar_format_and_its_labels(results, tmp_path, cifar, shown):
    import json

    (results / "data").mkdir(exist_ok=True)
    (results / "data" / "summary.json").write_text(json.dumps(
        {"coco": {"images": 3, "captions": 15}, "cifar": cifar, "subject": {"images": 6}}))
    page = build_report(results, tmp_path / "r.html", hardware=HARDWARE, draw=False).read_text()
    assert f"<li>{shown}</li>" in page


def _benchmarked(results, job: str, seconds: float) -> None:
    """Snakemake's benchmark file of `job` (a diffscale.vocab *_JOB name): its last try took `seconds`."""
    path = Path(vocab.benchmark_path(job, str(results)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\n{seconds}\t0:01:40\n")


def _flux_job(row) -> str:
    return vocab.FLUX_JOB.format(hw=row["hw"], gpus=int(row["gpus"]), steps=int(row["steps"]))


def test_a_resumed_training_run_is_billed_for_all_its_segments(results, build):
    """Snakemake's benchmark file of a resumed job holds only its last invocation."""
    path = results / "bench" / "train_unet.csv"
    frame = pd.read_csv(path)
    frame["job_time_s"] = 5000.0
    frame["resumed"] = [i == 0 for i in range(len(frame))]
    frame.to_csv(path, index=False)
    for _, r in frame.iterrows():  # every job's last invocation: 100 s
        _benchmarked(results, vocab.TRAIN_JOB.format(hw=r["hw"], precision=r["precision"], gpus=int(r["gpus"])), 100.0)
    page = build(results)
    table = next(t for t in page.tables if t["id"] == "train-unet")
    costs = [float(c["value"]) for row in table["rows"] for c in row if c["col"] == "cost_per_1k_steps"]
    price = {"a100": 2.50, "a40": 1.10}
    want = [price[r["hw"]] * r["gpus"] * (5000.0 if r["resumed"] else 100.0) / 3600 / r["steps"] * 1000
            for _, r in frame.iterrows()]
    assert costs == pytest.approx(want)
    held = [float(c["value"]) for row in table["rows"] for c in row if c["col"] == "job_s"]
    assert held == [5000.0 if r["resumed"] else 100.0 for _, r in frame.iterrows()]  # the full run's time per hardware

    # a resumed run's cost is a lower bound: the cheapest finding picks among the runs billed whole
    frame["job_time_s"] = 1.0  # the resumed run would look cheapest
    frame.to_csv(path, index=False)
    cheapest = next(f["text"] for f in build(results).findings if "U-Net training: cheapest" in f["text"])
    resumed = frame.iloc[0]
    assert f"train/unet/{resumed['hw']}/{resumed['precision']}-g{resumed['gpus']}" not in cheapest
    assert "at least" not in cheapest


def test_runs_that_accumulate_micro_batches_are_named_beside_the_training_table(results, build):
    """A matrix entry's grad_accum (the full study's K80 and 1-GPU runs): same global batch, smaller pieces."""
    path = results / "bench" / "train_unet.csv"
    frame = pd.read_csv(path)
    frame.loc[(frame["hw"] == "a40") & (frame["gpus"] == 1), "micro_batch"] = 128
    frame.loc[(frame["hw"] == "a40") & (frame["gpus"] == 4), "micro_batch"] = 16
    frame.loc[(frame["hw"] == "a40") & (frame["gpus"] == 4), "speedup"] = 4.6
    frame.to_csv(path, index=False)
    page = build(results)
    assert page.notices["train"] == [
        "Every run trains on the same global batch of 256; these take it in several micro-batches per device and "
        "step: a40 g1: 2 x 128, a40 g4: 4 x 16 (grad_accum, for memory; the others take it in one)."]
    # a superlinear 4 GPUs is still the same global work split over them, not a changed workload
    assert ("a40 fp32, 4 devices, 4.6×: the same global work split over 4 devices (256 to 64 samples per device "
            "per step)") in " ".join(page.sections["train"])


def test_a_ddpm_difference_within_two_runs_of_the_same_settings_is_not_resolved(results, build):
    """The peer race's "ours" repeats the sweeps' baseline; here it ran 1.3x faster, so compile's 1.25x is
    noise while the workers' 1.67x (4 against 0) and bf16's 2.4x stand."""
    path = results / "bench" / "ddpm_peer.csv"
    frame = pd.read_csv(path)
    frame.loc[frame["impl"] == "ours", ["images_per_s", "steps_per_s"]] = [1280 * 1.3, 13.0]
    frame.to_csv(path, index=False)
    amp = results / "bench" / "ddpm_amp.csv"  # a second, closer pair of repeats: the wider one is the noise
    rows = pd.read_csv(amp)
    again = rows[rows["precision"] == "bf16"].assign(run="ddpm/a100/bf16-again",
                                                     images_per_s=lambda f: f["images_per_s"] * 1.1)
    pd.concat([rows, again]).to_csv(amp, index=False)
    page = build(results)
    texts = [f["text"].split(" details")[0] for f in page.findings if f["text"].startswith("DDPM")]
    noise = " (within the run-to-run noise, 30 %: not resolved)"
    # what a run needs: the fewest workers within that noise of the best (not within 5 %)
    assert "2 workers come within 30 % of it (1,152)" in next(t for t in texts if "loader workers" in t)
    assert [t for t in texts if noise in t] == [
        "DDPM: torch.compile against eager, over a training run of 5,000 steps: default compiles in 60.0 s, saves "
        f"20.0 ms per step and pays off after 3,000 steps, 40.0 s (8.0 %) less over the run{noise}."]
    text = " ".join(page.sections["ddpm"])
    assert "Run-to-run noise: two runs of the same settings (ddpm/a100/ours, ddpm/a100/" in text
    assert "differ by 30 % in images/s" in text
    batch = results / "bench" / "ddpm_batch.csv"  # only 1-GPU rows: the best one's 1.0x compares nothing
    pd.read_csv(batch).query("gpus == 1").to_csv(batch, index=False)
    best = next(f["text"] for f in build(results).findings if f["text"].startswith("DDPM: most images/s"))
    assert "1 GPU × batch" in best and "not resolved" not in best


def test_the_compile_finding_names_every_mode_per_hardware_with_the_tables_verdict(results, build):
    path = results / "bench" / "ddpm_compile.csv"
    frame = pd.read_csv(path)  # a100: off, and default saving 20 ms per step for 60 s: pays off after 3,000
    a40 = frame.assign(hw="a40", run=frame["run"].str.replace("a100", "a40"))
    a40.loc[1, ["saving_per_step_s", "break_even_steps"]] = [0.000004, 15_000_000]  # saves little: not in 5,000
    slower = frame.iloc[[1]].assign(compile="reduce-overhead", saving_per_step_s=-0.001, break_even_steps=float("nan"),
                                    run="ddpm/a100/c2")
    pd.concat([frame, slower, a40]).to_csv(path, index=False)
    texts = [f["text"].split(" details")[0] for f in build(results).findings if "torch.compile" in f["text"]]
    assert texts == [
        "DDPM on a100: torch.compile against eager, over a training run of 5,000 steps: default compiles in 60.0 s, "
        "saves 20.0 ms per step and pays off after 3,000 steps, 40.0 s (8.0 %) less over the run; reduce-overhead compiles in 60.0 s and runs 1.00 ms "
        "per step slower: it never pays off.",
        "DDPM on a40: torch.compile against eager, over a training run of 5,000 steps: default compiles in 60.0 s and "
        "saves 0.00400 ms per step, but would pay off only after 15,000,000 steps: not within the run."]


def test_the_peer_finding_names_the_settings_of_every_ratio(results, build):
    path = results / "bench" / "ddpm_peer.csv"
    frame = pd.read_csv(path).assign(precision="bf16")  # a100 bf16/off: ours 1.15x the peer
    fp32 = frame.assign(precision="fp32", ratio_to_peer=[1.25, 1.0], run=frame["run"] + "-fp32")
    pd.concat([frame, fp32]).to_csv(path, index=False)
    texts = [f["text"].split(" details")[0] for f in build(results).findings if "peer" in f["text"]]
    assert texts == ["DDPM: our loop's images/s against the peer implementation's, each at the same settings: 1.1× "
                     "at bf16, compile off; 1.2× at fp32, compile off."]


def test_a_fine_tune_is_billed_for_its_whole_job_not_its_timed_phases(results, build):
    """Snakemake's benchmark of a FLUX job holds the interpreter, imports and process start-up the
    loop's phases miss; a run without one (made by hand) falls back to the phases' sum."""
    frame = pd.read_csv(results / "bench" / "flux_train.csv")
    job = {}
    for _, r in frame[frame["hw"] == "a100"].iterrows():  # a40 has no benchmark files
        job[int(r["gpus"])] = float(r["total_s"]) + 30.0
        _benchmarked(results, _flux_job(r), job[int(r["gpus"])])
    page = build(results)
    table = next(t for t in page.tables if t["id"] == "flux-train")
    cost = {(row[0]["text"], row[1]["text"]): float(c["value"]) for row in table["rows"] for c in row
            if c["col"] == "cost"}
    assert cost[("a100", "2")] == pytest.approx(2.50 * 2 * job[2] / 3600)
    a40 = frame[(frame["hw"] == "a40") & (frame["gpus"] == 1)].iloc[0]
    assert cost[("a40", "1")] == pytest.approx(1.10 * float(a40["total_s"]) / 3600)
    cheapest = next(f["text"] for f in page.findings if "cheapest fine-tune" in f["text"])
    assert "job time" in cheapest and "start-up included" in cheapest


def test_a_resumed_fine_tune_is_billed_for_all_its_invocations_and_is_not_the_cheapest(results, build):
    """Snakemake's benchmark of a resumed FLUX job holds only its last invocation; the run's own
    job_time_s sums them all, and is still only a lower bound."""
    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    frame["job_time_s"] = 900.0
    frame["resumed"] = (frame["hw"] == "a100") & (frame["gpus"] == 2)
    frame.to_csv(path, index=False)
    for _, r in frame.iterrows():  # every job's last invocation: 100 s
        _benchmarked(results, _flux_job(r), 100.0)
    table = next(t for t in build(results).tables if t["id"] == "flux-train")
    cost = {(row[0]["text"], row[1]["text"]): float(c["value"]) for row in table["rows"] for c in row
            if c["col"] == "cost"}
    assert cost[("a100", "2")] == pytest.approx(2.50 * 2 * 900.0 / 3600)
    assert cost[("a100", "1")] == pytest.approx(2.50 * 100.0 / 3600)

    frame["job_time_s"] = 1.0  # the resumed run would look cheapest
    frame.to_csv(path, index=False)
    cheapest = next(f["text"] for f in build(results).findings if "cheapest fine-tune" in f["text"])
    assert "2 GPUs" not in cheapest and "at least" not in cheapest
    frame["resumed"] = True  # every run resumed: the cheapest is named as a lower bound
    frame.to_csv(path, index=False)
    cheapest = next(f["text"] for f in build(results).findings if "cheapest fine-tune" in f["text"])
    assert "cheapest fine-tune of 1000 steps at least $" in cheapest


def test_a_fine_tune_whose_tries_were_all_recorded_is_billed_whole(results, build):
    """A resumed (or retried) run whose tries' records cover every invocation (diffscale.attempts):
    the last try's benchmark plus the earlier tries' seconds, exact, so no "at least"."""
    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    frame["resumed"], frame["job_time_whole"] = True, True
    frame["earlier_tries"], frame["earlier_tries_s"], frame["job_time_s"] = 1, 3600.0, 1.0
    frame.to_csv(path, index=False)
    for _, r in frame.iterrows():  # every job's last invocation: 100 s
        _benchmarked(results, _flux_job(r), 100.0)
    page = build(results)
    table = next(t for t in page.tables if t["id"] == "flux-train")
    cost = {(row[0]["text"], row[1]["text"]): float(c["value"]) for row in table["rows"] for c in row
            if c["col"] == "cost"}
    assert cost[("a100", "2")] == pytest.approx(2.50 * 2 * (100.0 + 3600.0) / 3600)
    cheapest = next(f["text"] for f in page.findings if "cheapest fine-tune" in f["text"])
    assert "at least" not in cheapest
    # run by hand (no benchmark): its own job_time_s, which holds every invocation already; the
    # timed phases resume with the run, so adding the earlier tries to them would count those twice
    for bench in (results / "benchmarks" / "flux").rglob("*.tsv"):
        bench.unlink()
    frame["job_time_s"] = 3750.0
    frame.to_csv(path, index=False)
    table = next(t for t in build(results).tables if t["id"] == "flux-train")
    cost = {(row[0]["text"], row[1]["text"]): float(c["value"]) for row in table["rows"] for c in row
            if c["col"] == "cost"}
    assert cost[("a100", "2")] == pytest.approx(2.50 * 2 * 3750.0 / 3600)


def test_the_inference_finding_names_the_hardware_and_dtype_of_its_best_rate(results, build):
    text = next(f["text"] for f in build(results).findings if "FLUX inference: best" in f["text"])
    # the fixture's fastest rows: a100 bf16, base or fused weights at 2 images/s
    assert text.startswith("FLUX inference: best 2.00 images/s (a100, bf16, base weights, batch 1); first image after")


@pytest.mark.parametrize("per_device, why", [
    ([8, 4], "the same global work split over 2 devices (8 to 4 images per device per step)"),
    ([8, 2], "per-device work changed from 8 to 2 images per device per step between the runs, so this compares "
             "different workloads"),
    ([8, 8], "per-device work unchanged: check the runs before trusting it")])
def test_a_superlinear_speedup_is_explained_by_how_the_work_was_split(per_device, why):
    from diffscale.report.page import superlinear

    frame = pd.DataFrame({"hw": ["a100", "a100"], "gpus": [1, 2], "speedup": [1.0, 2.5]})
    note = superlinear(frame, "gpus", ["hw"], pd.Series(per_device), "images per device per step")
    assert note.startswith("<p class=\"warn\">Superlinear speedup flagged: a100, 2 devices, 2.5×: " + why)


def test_the_gpu_against_cpu_finding_names_what_each_rate_was_measured_on(results, build):
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    frame["dtype"] = ["bf16" if b == "gpu" else "fp32" for b in frame["backend"]]
    gpu = (frame["backend"] == "gpu") & (frame["modality"] == "images")
    frame.loc[gpu, ["items", "items_per_s", "steady_items_per_s"]] = [20_000, 20_000 / 57.0, 20_000 / 54.0]
    frame.to_csv(path, index=False)
    text = next(f["text"] for f in build(results).findings if f["text"].startswith("VAE latents: 1 GPU"))
    best = frame[(frame["modality"] == "images") & (frame["backend"] != "gpu")]["items_per_s"].max()
    assert text.startswith(f"VAE latents: 1 GPU (a100, bf16, 20,000 images) = {fmt.ratio((20_000 / 57.0) / best)} the best "
                           "CPU run (")
    assert "; cpu, fp32, 1,000 images) in images per second end to end" in text


def test_an_embedding_run_is_billed_for_its_whole_job_and_its_failed_tries(results, build):
    """timing.json's wall_s leaves out process start, imports, the input plan and shutdown;
    Snakemake's benchmark holds the last try only, so the failed tries before it are added."""
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    is_serial = (frame["modality"] == "images") & (frame["backend"] == "serial")
    serial = frame[is_serial].iloc[0]
    _benchmarked(results, vocab.EMBED_JOB.format(modality="images", backend="serial", policy="pinned", workers=1),
                 serial["wall_s"] + 50)

    def cost() -> float:
        table = next(t for t in build(results).tables if t["id"] == "embed-images")
        return next(float(c["value"]) for row in table["rows"] if row[0]["text"] == "serial" for c in row
                    if c["col"] == "cost_per_1k")

    assert cost() == pytest.approx(0.40 / 8 * (serial["wall_s"] + 50) / 3600 / serial["items"] * 1000)
    frame.loc[is_serial, ["earlier_tries", "earlier_tries_s"]] = [1, 3600.0]  # a first try killed at 1 h
    frame.to_csv(path, index=False)
    assert cost() == pytest.approx(0.40 / 8 * (serial["wall_s"] + 50 + 3600) / 3600 / serial["items"] * 1000)


def test_dask_on_slurm_bills_its_worker_jobs_at_their_partitions_price(results, build):
    """The submitting job asked for 1 CPU; its worker jobs' CPU-seconds are billed at the price
    per CPU of their partition's CPU entry. Workers of a running scheduler, or on a partition
    the table cannot price, give no cost rather than a guess."""
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    joblib = (frame["modality"] == "images") & (frame["backend"] == "joblib")
    picked = frame[joblib].index[:3]
    assert len(picked) == 3
    frame.loc[picked, "backend"] = "dask"
    frame.loc[picked, "dask_cluster"] = ["slurm", "address", "slurm"]
    frame.loc[picked, "worker_job_cpu_s"] = [7200.0, float("nan"), 7200.0]
    frame.loc[picked, "worker_partition"] = ["cpu", "", "a100"]
    frame.to_csv(path, index=False)
    table = next(t for t in build(results).tables if t["id"] == "embed-images")
    shown = [row for row in table["rows"] if row[0]["text"].startswith("dask")]
    costs = [next(c for c in row if c["col"] == "cost_per_1k") for row in shown]
    slurm = frame.loc[picked[0]]
    own, workers = 0.40 / 8 * 1 * slurm["wall_s"] / 3600, 0.40 / 8 * 7200.0 / 3600
    assert float(costs[0]["value"]) == pytest.approx((own + workers) / slurm["items"] * 1000)
    assert [c["text"] for c in costs[1:]] == [fmt.MISSING, fmt.MISSING]  # address; a GPU partition


def test_the_multi_gpu_finding_gives_every_precision_of_a_hardware(results, build):
    path = results / "bench" / "train_unet.csv"
    frame = pd.read_csv(path)
    a100 = frame[(frame["hw"] == "a100") & (frame["precision"] == "fp32")]
    bf16 = a100.assign(precision="bf16", speedup=a100["speedup"] * 0.9, efficiency=a100["efficiency"] * 0.9)
    pd.concat([frame[~((frame["hw"] == "a100") & (frame["precision"] == "bf16"))], bf16]).to_csv(path, index=False)
    texts = [f["text"].split(" details")[0] for f in build(results).findings if f["text"].startswith("U-Net training on a100:")]
    assert texts == ["U-Net training on a100: fp32 on 4 GPUs 3.8× one (94 % efficiency per GPU); bf16 on 4 GPUs 3.4× "
                     "one (84 % efficiency per GPU)."]


def test_a_cpu_run_states_its_cpus_and_efficiency_per_cpu(results, build):
    """2 processes x 1 thread on the 2 CPUs one process x 2 threads had: efficiency per CPU."""
    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    cpu = frame[frame["hw"] == "a40"].head(2).assign(hw="cpu", cpus=2, speedup=[1.0, 1.3], efficiency=[1.0, 1.3],
                                                   device="cpu")
    pd.concat([frame[frame["hw"] != "a40"], cpu]).to_csv(path, index=False)
    page = build(results)
    texts = [f["text"].split(" details")[0] for f in page.findings if f["text"].startswith("FLUX LoRA on cpu:")]
    assert texts == ["FLUX LoRA on cpu: 2 processes (2 CPUs) 1.3× one (130 % efficiency per CPU, 1000 steps)."]
    assert any("FLUX LoRA on a100: 4 GPUs 3.2× one (80 % efficiency per GPU" in f["text"] for f in page.findings)
    pd.read_csv(path).drop(columns=["cpus"]).to_csv(path, index=False)  # a table from before it had the column
    texts = [f["text"].split(" details")[0] for f in build(results).findings if f["text"].startswith("FLUX LoRA on cpu:")]
    assert texts == ["FLUX LoRA on cpu: 2 processes 1.3× one (130 % efficiency per process, 1000 steps)."]


def test_a_compile_mode_without_an_eager_run_on_its_hardware_says_so(results, build):
    path = results / "bench" / "ddpm_compile.csv"
    frame = pd.read_csv(path)
    frame["pays_off"] = ["baseline", "yes"]
    alone = frame.iloc[[1]].assign(hw="a40", saving_per_step_s=float("nan"), break_even_steps=float("nan"),
                                   pays_off="baseline", run="ddpm/a40/c1")  # the a40 sweep lost its eager run
    pd.concat([frame, alone]).to_csv(path, index=False)
    text = next(f["text"] for f in build(results).findings if f["text"].startswith("DDPM on a40: torch.compile"))
    assert "default compiles in 60.0 s; no eager run on this hardware to compare it with." in text


def test_the_precision_finding_counts_processes_on_a_cpu_hardware_key(results, build):
    path = results / "bench" / "train_unet.csv"
    pd.read_csv(path).assign(hw=lambda f: f["hw"].replace({"a40": "cpu"})).to_csv(path, index=False)
    texts = [f["text"] for f in build(results).findings if "the fp32 throughput" in f["text"]]
    assert any(t.startswith("U-Net training on cpu, 1 process: bf16 runs at") for t in texts)
    assert any(t.startswith("U-Net training on a100, 1 GPU: bf16 runs at") for t in texts)


def test_a_cheapest_run_names_the_runs_within_five_percent_of_it_as_a_tie():
    from diffscale.report.page import tied

    frame = pd.DataFrame({"name": ["a", "b", "c", "d"], "cost": [1.0, 1.04, 1.2, None]})
    label = lambda r: r["name"]  # noqa: E731
    assert tied(frame, "cost", frame.loc[0], label) == "; b within 5 % of it: a tie"
    assert tied(frame, "cost", frame.loc[2], label) == ""  # 1.04 is 13 % below
    assert tied(frame.assign(cost=[1.0, 1.0, 1.049, None]), "cost", frame.loc[0], label) == "; b and c within 5 % of it: a tie"
    free = frame.assign(cost=[0.0, 0.0, 1.0, None])  # hardware priced at $0
    assert tied(free, "cost", free.loc[0], label) == "; b within 5 % of it: a tie"


def test_the_disk_projection_meets_the_original_37_gb_only_with_real_model_widths(results, build):
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    frame["projected_full_gb"] = frame["modality"].map({"images": 0.1, "text": 0.35})
    frame.to_csv(path, index=False)
    storage = lambda: next(f["text"] for f in build(results).findings if "Embeddings of the full study" in f["text"])  # noqa: E731
    assert ("with the tiny test models (vae random:tiny, text_encoder random:tiny), far narrower than the real ones: "
            "not comparable with the original study's 37.7 GB") in storage()
    models = pd.read_csv(results / "bench" / "models.csv")
    models["spec"] = models["spec"].str.replace("random:tiny", "random:sd-vae-ft-mse")
    models.to_csv(results / "bench" / "models.csv", index=False)
    assert "(the original study's text embeddings alone were a 37.7 GB pickle, over its disk quota)" in storage()


def test_a_study_without_a_gpu_run_says_its_gpu_side_is_not_measured(results, build):
    page = build(results)
    assert not [n for notes in page.notices.values() for n in notes if n.startswith("No GPU run")]
    path = results / "bench" / "flux_train.csv"
    pd.read_csv(path).assign(hw="cpu").to_csv(path, index=False)  # the fixture's CPU hardware key
    path = results / "bench" / "train_unet.csv"  # its device column names the CPU model, not "cpu"
    pd.read_csv(path).assign(hw="cpu", device="AMD EPYC").to_csv(path, index=False)
    page = build(results)
    assert [n for n in page.notices["train"] if n.startswith("No GPU run")]
    notes = page.notices["flux"]
    assert ("No GPU run in these results: fine-tuning speed across GPU types (A40, A100) and counts is not measured "
            "here (run config/full.yaml on a cluster, or name a GPU hardware key in your config).") in notes


def test_an_embedding_cost_says_how_much_of_its_job_was_start_up(results, build):
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    frame["startup_s"] = frame["wall_s"] * 0.97  # a demo-sized run: start-up is nearly all of it
    frame.to_csv(path, index=False)
    found = next(f["text"] for f in build(results).findings if "cost per 1,000 images" in f["text"])
    assert re.search(r"CPU \$[0-9.]+ \([^)]*; start-up 97 % of its wall time", found), found


def test_hardware_keys_are_compared_at_the_same_settings(results, build):
    """The studies' question across hardware (A40 against A100, a CPU key): each key's rate at the
    same settings on one device, the fastest first, a gap under 5 % read as level."""
    def across(page, study):
        return next(f["text"].split(" details")[0] for f in page.findings if f["text"].startswith(study + " across"))

    page = build(results)
    assert across(page, "U-Net training") == (
        "U-Net training across hardware, samples/s and $ per 1,000 steps (start-up included): fp32 on 1 GPU: a100 at "
        "400 is 1.8× a40 at 220 ($0.44, $0.36 per 1,000 steps); bf16 on 1 GPU: a100 at 900 is 1.8× a40 at 495 ($0.20, "
        "$0.16 per 1,000 steps).")
    # FLUX at its steady rate: 1,000 steps of a100's 2.00 steps/s at $2.50 an hour is $0.35
    assert across(page, "FLUX LoRA").startswith(
        "FLUX LoRA across hardware, steady steps/s and $ per 1,000 steps at that rate (each key's longest run): 1 GPU: "
        "a100 at 2.00 is 1.8× a40 at 1.10 ($0.35, $0.28 per 1,000 steps); 2 GPUs: a100 at 3.60 is 1.8× a40 at 1.98 "
        "($0.39, $0.31 per 1,000 steps); 4 GPUs:")
    assert not any(f["text"].startswith("DDPM across") for f in page.findings)  # one hardware key: nothing to compare

    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    a40 = frame["hw"] == "a40"
    frame.loc[a40, "steps_per_s"] = frame.loc[a40, "steps_per_s"] / 1.1 * 1.95  # within 5 % of the a100
    cpu = frame[a40 & (frame["gpus"] == 1)].assign(hw="cpu", steps=20, steps_per_s=0.004, cpus=8, run="cpu/g1-s20")
    pd.concat([frame, cpu]).to_csv(path, index=False)
    assert across(build(results), "FLUX LoRA").startswith(
        "FLUX LoRA across hardware, steady steps/s and $ per 1,000 steps at that rate (each key's longest run): 1 GPU: "
        "a100 at 2.00 is level with a40 at 1.95 (within 5 %), 500× cpu on 8 CPUs at 0.00400 ($0.35, $0.16, $27.8 per "
        "1,000 steps); 2 GPUs:")

    path = results / "bench" / "ddpm_batch.csv"
    frame = pd.read_csv(path)
    a40 = frame.assign(hw="a40", images_per_s=frame["images_per_s"] / 2, run=frame["run"].str.replace("a100", "a40"))
    pd.concat([frame, a40]).to_csv(path, index=False)
    finding = next(f for f in build(results).findings if f["text"].startswith("DDPM across"))
    assert finding["text"].split(" details")[0].startswith(
        "DDPM across hardware, images/s and $ per 1M images (fp32, 4 loader workers, eager): batch 64 on 1 GPU: a100 at "
        "640 is 2.0× a40 at 320 ($")
    assert "ddpm/a40/b128-g1" in finding["text"] and "b128-g2" not in finding["text"]
    pd.read_csv(path).iloc[::-1].to_csv(path, index=False)  # multi-GPU rows first: still the 1-GPU rates
    text = across(build(results), "DDPM")
    assert "batch 64 on 1 GPU: a100 at 640 is 2.0× a40 at 320 (" in text
    assert "batch 128 on 1 GPU: a100 at 1,280 is 2.0× a40 at 640 (" in text


def test_the_cheapest_fine_tune_is_named_per_step_count(results, build):
    """A 20-step fine-tune is cheaper than a 1,000-step one on any hardware: costs compare within a step count."""
    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    short_runs = frame[frame["gpus"] == 4].assign(steps=20, run=lambda f: f["hw"] + "/g4-s20")
    alone = frame[(frame["hw"] == "a40") & (frame["gpus"] == 1)].assign(hw="cpu", steps=30, run="cpu/g1-s30")
    pd.concat([frame, short_runs, alone]).to_csv(path, index=False)
    text = next(f["text"] for f in build(results).findings if "cheapest fine-tune" in f["text"]).split(" details")[0]
    assert text.startswith("FLUX LoRA: cheapest fine-tune of 20 steps $")
    assert "(a40, 4 GPUs;" in text and "; of 1000 steps $0.30 (a40, 1 GPU; job time 16.6 min" in text
    assert "30 steps" not in text  # one run of that length: nothing to be cheapest among


def test_the_flux_throughput_figure_draws_each_hardware_keys_longest_run_per_count(results):
    from diffscale.report.flux import _throughput
    from diffscale.report.plots import wide_span

    frame = pd.read_csv(results / "bench" / "flux_train.csv")
    short_run = frame[frame["hw"] == "a100"].assign(steps=20, images_per_s=99.0)  # fewer steps: not drawn
    cpu = frame[(frame["hw"] == "a40") & (frame["gpus"] == 1)].assign(hw="cpu", steps=30, images_per_s=0.01)
    series = _throughput(pd.concat([short_run, frame, cpu]))
    assert series == {"a100": ([1.0, 2.0, 4.0], pytest.approx([8.0, 14.4, 25.6])),
                      "a40": ([1.0, 2.0, 4.0], pytest.approx([4.4, 7.92, 14.08])), "cpu": ([1.0], [0.01])}
    assert wide_span(series) and not wide_span({k: v for k, v in series.items() if k != "cpu"})


def test_a_partial_report_names_its_unfinished_runs_up_to_a_limit(results, build):
    from diffscale.report.html import PARTIAL_SHOWN

    assert "Partial report" not in build(results).text
    page = build(results, unfinished=["results/flux/k80/g1-s500"])
    assert ("<b>Partial report.</b> 1 run has not finished and is left out of every table, figure and finding below "
            "(built with <code>partial_report: true</code>): <code>results/flux/k80/g1-s500</code>.") in page.text
    runs = [f"results/train/unet/k80/fp32-g{n}" for n in range(PARTIAL_SHOWN + 2)]
    text = build(results, unfinished=runs).text
    assert f"{PARTIAL_SHOWN + 2} runs have not finished" in text and f"fp32-g{PARTIAL_SHOWN - 1}</code> and 2 more." in text
    assert f"fp32-g{PARTIAL_SHOWN}<" not in text


def test_the_pinned_finding_gives_its_speedup_without_start_up_in_its_own_clause(results, build):
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    assert "steady_speedup" not in frame.columns  # long windows, no steady column: no claim either way
    found = [f["text"] for f in build(results).findings if ", 8 CPUs:" in f["text"]]
    assert found and not any("too short" in f or "without start-up" in f for f in found)
    frame["steady_speedup"] = 6.1
    frame.to_csv(path, index=False)
    found = [f["text"] for f in build(results).findings if f["text"].startswith("VAE latents, 8 CPUs:")]
    assert found[0].startswith("VAE latents, 8 CPUs: pinned workers (multiprocessing) 6.1× one CPU (76 % efficiency; "
                               "6.1× without start-up);")


def test_a_u_net_fp32_run_with_tf32_allowed_is_named_so(results, build):
    """train.tf32 (default on) lets fp32 use TF32 tensor cores: not DDPM's fp32 with TF32 off."""
    path = results / "bench" / "train_unet.csv"
    pd.read_csv(path).assign(tf32=True).to_csv(path, index=False)
    texts = [f["text"] for f in build(results).findings]
    assert any(t.startswith("U-Net training across hardware, samples/s and $ per 1,000 steps (start-up included): "
                            "fp32 (TF32 where the GPU has it) on 1 GPU: a100 at 400") for t in texts)
    assert any(t.startswith("U-Net training on a100, 1 GPU: bf16 runs at 2.2× the fp32 (TF32 where the GPU has it) "
                            "throughput") for t in texts)


def test_the_embedding_cost_finding_says_how_long_the_full_study_takes_at_each_rate(results, build):
    """Can CPUs replace GPUs, at what cost: the cheapest CPU run may be the slowest; its time for the full study shows it."""
    path = results / "bench" / "embed_scaling.csv"
    frame = pd.read_csv(path)
    frame["projected_images"] = 48000
    frame["bytes_per_item"] = frame["modality"].map({"images": 2048, "text": 1480})
    frame["bytes_per_image"] = frame["modality"].map({"images": 2048, "text": 7400})  # 5 captions an image
    frame.to_csv(path, index=False)
    texts = {f["text"].split(":")[0]: f["text"] for f in build(results).findings if "cost per 1,000" in f["text"]}
    serial = frame[(frame["backend"] == "serial") & (frame["modality"] == "text")].iloc[0]
    hours = 240000 / serial["steady_items_per_s"] / 3600
    assert f"(serial, 1 worker, cpu; start-up 5.0 % of its wall time; the full study's 240,000 captions in {hours:.3g} h " \
           "at its steady rate)" in texts["Text embeddings"]
    assert "the full study's 48,000 images in 2.16 min at its steady rate" in texts["VAE latents"]


def test_the_workers_finding_names_the_fewest_workers_within_the_noise_of_the_best(results, build):
    path = results / "bench" / "ddpm_workers.csv"
    frame = pd.read_csv(path)  # a100: 0, 2, 4 workers
    frame["images_per_s"] = [550.0, 1300.0, 1330.0]  # 2 workers within 5 % of 4's
    frame.to_csv(path, index=False)
    text = next(f["text"] for f in build(results).findings if "loader workers train" in f["text"]).split(" details")[0]
    assert text.startswith("DDPM: 4 loader workers train at 1,330 images/s, 2.4× 0 workers' 550; 2 workers come within "
                           "5.0 % of it (1,300); they wait")


def test_a_provenance_line_without_run_records_does_not_claim_a_local_run(results, build):
    lines = re.findall(r'<p class="trust">Provenance \(([^)]*)\): ([^<]*)</p>', build(results).text)
    assert lines and all(("SLURM job unknown" in text) == (counted == "no run.json found") for counted, text in lines)
    assert any(counted == "no run.json found" for counted, _ in lines)
    assert not any("local run" in text for counted, text in lines if counted == "no run.json found")


def test_flux_inference_compares_each_keys_best_base_rate_and_names_the_fused_runs(results, build):
    path = results / "bench" / "flux_infer.csv"
    frame = pd.read_csv(path)
    a40 = frame.assign(hw="a40", images_per_s=frame["images_per_s"] * 0.8, run=frame["run"].str.replace("a100", "a40"))
    pd.concat([frame, a40]).to_csv(path, index=False)
    findings = {f["text"].split(" details")[0]: f["text"] for f in build(results).findings}
    assert ("FLUX inference across hardware, images/s and $ per 1,000 images at that rate: base weights, each key's "
            "best batch and dtype: a100 at 2.00 is 1.2× a40 at 1.60 ($0.35, $0.19 per 1,000 images).") in findings
    fused = next(v for k, v in findings.items() if k.startswith("FLUX inference: fusing"))
    assert "flux/infer/a100/lora_fused-b1" in fused and "base-b" not in fused


def test_only_a_ratio_within_the_run_to_run_noise_is_called_unresolved():
    from diffscale.report.ddpm import Repeat, unresolved

    noise = {"a100": Repeat(1.05, ["a", "b"])}
    assert unresolved(0.97, "a100", noise) == " (within the run-to-run noise, 5.0 %: not resolved)"
    assert unresolved(1.03, "a100", noise) != "" and unresolved(1 / 1.04, "a100", noise) != ""
    assert unresolved(0.5, "a100", noise) == "" and unresolved(1.2, "a100", noise) == ""  # slower or faster: resolved
    assert unresolved(0.97, "a40", noise) == ""  # no repeats measured there



def test_the_training_share_of_a_fine_tune_is_the_median_over_the_runs(results, build):
    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    assert len(frame) == 6
    frame["job_time_s"] = 100.0
    frame["train_s"] = [90.0, 50.0, 50.0, 50.0, 60.0, 60.0]  # median 55 %; one outlier pulls the mean to 60 %
    frame.to_csv(path, index=False)
    text = next(f["text"] for f in build(results).findings if "of a fine-tune's job time" in f["text"])
    assert text.startswith("FLUX LoRA: training is 55 % of a fine-tune's job time (median; 50 %–90 % over the runs)")


def test_unpriced_hardware_has_no_cost_and_disagreeing_cpu_rates_bill_nothing():
    """price_per_hour 0 means no price set: no cost, not $0 (which would rank it cheapest); dask's
    worker jobs on a partition whose CPU entries price a CPU differently get no price, not a guess."""
    from diffscale.report.cost import Prices

    entry = {"partition": "cpu", "device": "cpu", "cpus": 4}
    assert Prices({"c": entry}).job("c", 3600) is None
    assert Prices({"c": {**entry, "price_per_hour": 4.0}}).job("c", 3600) == pytest.approx(4.0)
    two = Prices({"small": {**entry, "price_per_hour": 4.0}, "big": {**entry, "cpus": 8, "price_per_hour": 4.0}})
    assert two.cpu_seconds("cpu", 3600) is None
    same = Prices({"small": {**entry, "price_per_hour": 4.0}, "big": {**entry, "cpus": 8, "price_per_hour": 8.0}})
    assert same.cpu_seconds("cpu", 3600) == pytest.approx(1.0)


def test_the_price_table_names_each_used_keys_share_and_price():
    """One share is what a price buys: one GPU with its CPUs on a GPU entry, the entry's CPUs on a CPU
    entry; a key without a price says so, and a key the table lacks is named, not dropped."""
    from diffscale.report.cost import Prices

    table = {**HARDWARE, "spare": {"partition": "cpu", "device": "cpu", "cpus": 4},
             "t4": {"partition": "gpu", "device": "cuda", "gpu_model": "t4", "gpus_per_node": 1, "cpus_per_gpu": 4,
                    "price_per_hour": 0.35}}
    html_text = Prices(table).table_html(["a100", "t4", "cpu", "spare", "h100"])
    rows = re.findall(r"<tr>(.*?)</tr>", html_text.split("<tbody>")[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    assert cells == [["a100", "a100", "1 GPU (a100) + 8 CPUs", "$2.50"],
                     ["t4", "gpu", "1 GPU (t4) + 4 CPUs", "$0.35"],
                     ["cpu", "cpu", "8 CPUs", "$0.40"],
                     ["spare", "cpu", "4 CPUs", "no price set"],
                     ["h100", "not in this config's hardware table"]]


def _texts(page, start: str) -> list[str]:
    return [f["text"].split(" details")[0] for f in page.findings if f["text"].startswith(start)]


def test_the_run_to_run_noise_names_two_runs_and_a_baseline_shared_by_the_sweeps_is_no_repeat(results, build):
    """The fixture repeats the baseline point in five runs at the same rate: the note names two of them,
    not one twice. A sweep table that shows the batch sweep's own baseline run is that one run."""
    text = " ".join(build(results).sections["ddpm"])
    named = re.search(r"two runs of the same settings \(([^,]+), ([^)]+)\) differ by 0 %", text)
    assert named and named.group(1) != named.group(2)
    for name, query in (("ddpm_amp.csv", "precision == 'fp32'"), ("ddpm_workers.csv", "workers == 4"),
                        ("ddpm_compile.csv", "compile == 'off'"), ("ddpm_peer.csv", "impl == 'ours'"),
                        ("ddpm_batch.csv", "gpus == 1 and batch == 128")):
        path = results / "bench" / name
        frame = pd.read_csv(path)
        frame.loc[frame.eval(query), "run"] = "ddpm/a100/b128-g1"
        frame.to_csv(path, index=False)
    assert "Run-to-run noise" not in " ".join(build(results).sections["ddpm"])


def test_two_runs_of_the_same_settings_differ_by_the_faster_over_the_slower(results, build):
    for name in ("ddpm_amp.csv", "ddpm_workers.csv", "ddpm_compile.csv"):
        (results / "bench" / name).unlink()
    path = results / "bench" / "ddpm_peer.csv"
    frame = pd.read_csv(path)
    frame.loc[frame["impl"] == "ours", "images_per_s"] = 1280 * 1.3
    frame.to_csv(path, index=False)
    assert ("two runs of the same settings (ddpm/a100/ours, ddpm/a100/b128-g1) differ by 30 % in images/s"
            in " ".join(build(results).sections["ddpm"]))


def test_a_ratio_equal_to_the_run_to_run_noise_is_not_resolved():
    from diffscale.report.ddpm import Repeat, unresolved

    assert unresolved(1.05, "a100", {"a100": Repeat(1.05, ["a", "b"])}) != ""


def test_the_ddpm_findings_read_their_tables_in_any_row_order(results, build):
    """The best batch point, the top operator, the workers and precision comparisons come from the values,
    not from the order the rows were written in."""
    before = _texts(build(results), "DDPM")
    assert "DDPM: most images/s (4,480) with 4 GPUs × batch 128 per device (3.5× 1 GPU, 88 % efficiency per GPU)." \
        in before
    for name in ("ddpm_batch.csv", "ddpm_workers.csv", "ddpm_amp.csv"):
        path = results / "bench" / name
        pd.read_csv(path).iloc[::-1].to_csv(path, index=False)
    path = results / "bench" / "ddpm_profile.csv"
    profile = pd.read_csv(path)
    pd.concat([profile[profile["sort_by"] == "device"].iloc[::-1], profile[profile["sort_by"] == "cpu"]]).to_csv(
        path, index=False)
    assert _texts(build(results), "DDPM") == before


def test_the_profile_by_device_time_comes_first_whatever_the_csv_order(results, build):
    path = results / "bench" / "ddpm_profile.csv"
    profile = pd.read_csv(path)
    pd.concat([profile[profile["sort_by"] == "cpu"], profile[profile["sort_by"] == "device"]]).to_csv(path, index=False)
    page = build(results)
    assert [t.split(" is ")[0] for t in _texts(page, "DDPM profile")] == [
        "DDPM profile on a100: the top operator by device time", "DDPM profile on a100: the top operator by cpu time"]
    assert [t["id"] for t in page.tables if (t["id"] or "").startswith("ddpm-profile")][0] == "ddpm-profile-device"


def test_when_every_precision_is_slower_than_the_reference_the_finding_names_the_fastest_other(results, build):
    path = results / "bench" / "ddpm_amp.csv"
    pd.DataFrame(amp_rows([_ddpm_amp("fp32", 1280.0), _ddpm_amp("bf16", 640.0)])).to_csv(path, index=False)
    (text,) = [t for t in _texts(build(results), "DDPM") if "trains at" in t]
    assert text.startswith("DDPM: bf16 trains at 0.50× the fp32")


def _ddpm_amp(precision: str, rate: float) -> dict:
    from report_data import _ddpm_row

    return _ddpm_row(precision=precision, images_per_s=rate, steps_per_s=rate / 128, run=f"ddpm/a100/{precision}")


def test_compile_paying_off_exactly_at_the_run_length_pays_off_and_no_saving_never_does(results, build):
    path = results / "bench" / "ddpm_compile.csv"
    frame = pd.read_csv(path)
    frame.loc[frame["compile"] == "default", "break_even_steps"] = 5000
    same = frame[frame["compile"] == "default"].assign(compile="max-autotune", saving_per_step_s=0.0,
                                                       break_even_steps=float("nan"), run="ddpm/a100/c2")
    unknown = same.assign(compile="reduce-overhead", saving_per_step_s=float("nan"), run="ddpm/a100/c3")
    pd.concat([frame, same, unknown]).to_csv(path, index=False)
    (text,) = _texts(build(results), "DDPM: torch.compile")
    assert "pays off after 5,000 steps" in text
    assert text.endswith("max-autotune compiles in 60.0 s and saves nothing per step: it never pays off; "
                         "reduce-overhead compiles in 60.0 s and has no measured per-step saving: it never pays off.")


def test_a_peer_race_without_a_ratio_is_left_out_of_the_peer_finding(results, build):
    before = _texts(build(results), "DDPM: our loop")
    path = results / "bench" / "ddpm_peer.csv"
    frame = pd.read_csv(path)
    failed = frame[frame["impl"] == "ours"].assign(precision="fp16", ratio_to_peer=float("nan"), status="oom",
                                                   run="ddpm/a100/ours-fp16")
    pd.concat([frame, failed]).to_csv(path, index=False)
    assert _texts(build(results), "DDPM: our loop") == before


def test_the_flux_quality_finding_is_the_median_of_the_runs_and_one_run_needs_no_spread(results, build):
    assert _texts(build(results), "FLUX LoRA quality") == [
        "FLUX LoRA quality at step 1000: PSNR 22.0 dB, SSIM 0.400 (random weights: timing only)."]
    path = results / "bench" / "flux_quality.csv"
    frame = pd.read_csv(path)
    last = frame[frame["checkpoint_step"] == 1000]
    others = [last.assign(gpus=g, psnr=p, run=f"flux/train/a100/g{g}-s1000") for g, p in ((2, 20.0), (4, 30.0))]
    pd.concat([frame, *others]).to_csv(path, index=False)
    (text,) = _texts(build(results), "FLUX LoRA quality")
    assert text.startswith("FLUX LoRA quality at step 1000: PSNR 22.0 dB")  # 20, 22, 30: the median, not 24


def test_the_flux_inference_finding_prices_one_image(results, build):
    (text,) = _texts(build(results), "FLUX inference: best")
    assert text == ("FLUX inference: best 2.00 images/s (a100, bf16, base weights, batch 1); first image after 20.9 s; "
                    "$0.00035 per image at that rate, loading not billed.")  # $2.50/h over 2 images/s


def test_the_fusing_finding_is_the_median_matched_ratio_and_one_pair_needs_no_median(results, build):
    path = results / "bench" / "flux_infer.csv"
    frame = pd.read_csv(path)
    frame[frame["batch_size"] == 1].to_csv(path, index=False)  # one matched pair: 2.0 against 1.6
    assert _texts(build(results), "FLUX inference: fusing") == [
        "FLUX inference: fusing the LoRA into the weights gives 1.2× the throughput of the unfused adapter."]
    pairs = [frame[frame["batch_size"] == 1].assign(batch_size=b, images_per_s=lambda f, r=r: f["images_per_s"].where(
        f["model"] != "lora", 2.0 / r)) for b, r in ((1, 1.25), (4, 1.25), (8, 2.5))]
    pd.concat(pairs).to_csv(path, index=False)
    (text,) = _texts(build(results), "FLUX inference: fusing")
    assert text.startswith("FLUX inference: fusing the LoRA into the weights gives 1.2× the throughput")  # not 1.7


def test_flux_across_hardware_uses_each_keys_longest_run_and_a_key_with_one_gpu_makes_no_scaling_finding(
        results, build):
    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    short = frame[(frame["hw"] == "a100") & (frame["gpus"] == 1)].assign(steps=20, steps_per_s=1.5,
                                                                       run="flux/train/a100/g1-s20")
    h100 = frame[(frame["hw"] == "a100") & (frame["gpus"] == 1)].assign(hw="h100", run="flux/train/h100/g1-s1000")
    pd.concat([frame, short, h100]).to_csv(path, index=False)
    hardware = {**HARDWARE, "h100": {**HARDWARE["a100"], "partition": "h100", "gpu_model": "h100"}}
    texts = _texts(build(results, hardware=hardware), "FLUX LoRA")
    assert not any(t.startswith("FLUX LoRA on h100") for t in texts)
    across = next(t for t in texts if t.startswith("FLUX LoRA across hardware"))
    assert "1 GPU: a100 at 2.00 is level with h100 at 2.00" in across and "1.50" not in across  # not the 20-step run


def test_a_superlinear_fine_tune_is_explained_by_its_split_of_the_global_batch(results, build):
    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    frame.loc[(frame["hw"] == "a100") & (frame["gpus"] == 2), "speedup"] = 2.2
    frame.to_csv(path, index=False)
    assert "the same global work split over 2 devices" in " ".join(build(results).sections["flux"])


def test_an_inference_where_every_batch_ran_out_of_memory_shows_its_table_and_claims_no_rate(results, build):
    path = results / "bench" / "flux_infer.csv"
    frame = pd.read_csv(path).assign(status="oom", images_per_s=float("nan"), denoise_s=float("nan"),
                                     decode_s=float("nan"), first_image_s=float("nan"))
    frame.to_csv(path, index=False)
    page = build(results)
    assert not page.notices.get("flux") and any(t["id"] == "flux-infer" for t in page.tables)
    assert _texts(page, "FLUX inference") == []


def test_flux_hardware_is_compared_at_each_keys_longest_run_and_its_best_base_rate(results, build):
    path = results / "bench" / "flux_train.csv"
    frame = pd.read_csv(path)
    short_run = frame[(frame["hw"] == "a100") & (frame["gpus"] == 1)].assign(steps=500, steps_per_s=1.0,
                                                                           run="flux/train/a100/g1-s500")
    stalled = short_run.assign(hw="a40", steps=100, steps_per_s=0.0, run="flux/train/a40/g1-s100")  # timed nothing
    pd.concat([short_run, stalled, frame]).to_csv(path, index=False)  # the shorter runs first
    path = results / "bench" / "flux_infer.csv"
    frame = pd.read_csv(path)
    frame.loc[(frame["model"] == "base") & (frame["batch_size"] == 4), "images_per_s"] = 3.0  # after batch 1's 2.0
    a40 = frame.assign(hw="a40", images_per_s=1.5, run=frame["run"].str.replace("a100", "a40"))
    pd.concat([frame, a40]).to_csv(path, index=False)
    texts = [f["text"] for f in build(results).findings]
    assert next(t for t in texts if t.startswith("FLUX LoRA across hardware")).startswith(
        "FLUX LoRA across hardware, steady steps/s and $ per 1,000 steps at that rate (each key's longest run): 1 GPU: "
        "a100 at 2.00 is 1.8× a40 at 1.10")
    assert next(t for t in texts if t.startswith("FLUX inference across hardware")).startswith(
        "FLUX inference across hardware, images/s and $ per 1,000 images at that rate: base weights, each key's "
        "best batch and dtype: a100 at 3.00 is 2.0× a40 at 1.50")
