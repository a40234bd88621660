"""Results for the report tests: every contract table (HELPERS' table contract) and the
study-1 tables as the studies write them, a few run.json files and figures, and a parser for the
built page. Values are chosen so each finding has something to say (a pinned/naive gap, a GPU
row, a superlinear multi-GPU speedup with a changed per-device batch)."""

from __future__ import annotations

import functools
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

HARDWARE = {
    "cpu": {"partition": "cpu", "device": "cpu", "cpus": 8, "price_per_hour": 0.40},
    "a100": {"partition": "a100", "device": "cuda", "gpu_model": "a100", "gpus_per_node": 4, "cpus_per_gpu": 8,
             "price_per_hour": 2.50},
    "a40": {"partition": "a40", "device": "cuda", "gpu_model": "a40", "gpus_per_node": 4, "cpus_per_gpu": 8,
            "price_per_hour": 1.10},
}
COMMON = {"device": "NVIDIA A100-SXM4-80GB", "random_weights": True}


@functools.lru_cache(maxsize=1)
def _png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    plt.close(fig)
    return buffer.getvalue()


def embed_rows() -> list[dict]:
    rows = []
    for modality, items in (("images", 1000), ("text", 5000)):
        base = 100.0
        rows.append(dict(modality=modality, backend="serial", policy="pinned", workers=1, hw="cpu", device="cpu",
                         cores=1, cpus=1, threads_per_worker="1", oversubscribed=False, items=items, wall_s=base,
                         startup_s=5.0, items_per_s=items / base, steady_items_per_s=items / 95))
        for backend, slower in (("multiprocessing", 1.0), ("joblib", 1.1)):
            for workers in (2, 8):  # pinned: 76 % efficiency on 8; naive (N threads each): slower than serial on 8
                wall_pinned = (base / (workers * 0.76) if workers == 8 else base / 1.9) * slower
                wall_naive = 125.0 / slower if workers == 8 else base / 1.2
                for policy, wall, threads in (("pinned", wall_pinned, "1"), ("naive", wall_naive, str(workers))):
                    rows.append(dict(modality=modality, backend=backend, policy=policy, workers=workers, hw="cpu",
                                     device="cpu", cores=workers, cpus=workers, threads_per_worker=threads,
                                     oversubscribed=False, items=items, wall_s=wall, startup_s=6.0,
                                     items_per_s=items / wall, steady_items_per_s=items / (wall - 6)))
        rows.append(dict(modality=modality, backend="gpu", policy="pinned", workers=1, hw="a100", device="NVIDIA A100",
                         cores=8, cpus=8, threads_per_worker="8", oversubscribed=False, items=items, wall_s=5.7,
                         startup_s=3.0, items_per_s=items / 5.7, steady_items_per_s=items / 2.7))
    frame = pd.DataFrame(rows)
    frame["steady_from_s"] = frame["startup_s"]
    frame["compute_s"] = (frame["wall_s"] - frame["startup_s"]) * 0.8  # a worker's, as the table holds it
    for modality in ("images", "text"):
        mine = frame["modality"] == modality
        base = frame.loc[mine & (frame["backend"] == "serial"), "wall_s"].iloc[0]
        frame.loc[mine, "speedup"] = base / frame.loc[mine, "wall_s"]
    frame["efficiency"] = frame["speedup"] / frame["workers"]
    frame["karp_flatt"] = [(1 / s - 1 / p) / (1 - 1 / p) if p > 1 else float("nan")
                           for s, p in zip(frame["speedup"], frame["workers"])]
    return frame.to_dict("records")


def train_rows() -> list[dict]:
    rows = []
    for hw in ("a100", "a40"):
        for precision, gpus, sps, micro in (("fp32", 1, 400.0, 256), ("bf16", 1, 900.0, 256), ("fp32", 2, 780.0, 128),
                                            ("fp32", 4, 1500.0, 64)):
            scale = 1.0 if hw == "a100" else 0.55
            rows.append(dict(hw=hw, precision=precision, gpus=gpus, device="NVIDIA A100", samples_per_s=sps * scale,
                             samples_per_s_per_device=sps * scale / gpus, final_loss=0.1234 + gpus / 1000,
                             mfu=0.31, train_time_s=20000 * 256 / (sps * scale), steps=20000, global_batch=256,
                             micro_batch=micro, model="random:small", config_hash=f"h{hw}{precision}{gpus}"))
    frame = pd.DataFrame(rows)
    for i, row in frame.iterrows():
        one = frame[(frame["hw"] == row["hw"]) & (frame["precision"] == row["precision"]) & (frame["gpus"] == 1)]
        frame.loc[i, "speedup"] = row["samples_per_s"] / one["samples_per_s"].iloc[0]
    frame["efficiency"] = frame["speedup"] / frame["gpus"]
    return frame.to_dict("records")


def flux_tables() -> dict[str, pd.DataFrame]:
    train = []
    for hw, base in (("a100", 2.0), ("a40", 1.1)):
        for gpus, speedup in ((1, 1.0), (2, 1.8), (4, 3.2)):
            steps_per_s = base * speedup
            train_s = 1000 / steps_per_s
            train.append(dict(hw=hw, gpus=gpus, steps=1000, resolution=512, batch_size=4, lora_rank=16,
                              steps_per_s=steps_per_s, images_per_s=4 * steps_per_s, speedup=speedup,
                              efficiency=speedup / gpus, setup_s=40.0, cache_s=30.0, train_s=train_s,
                              sampling_s=12.0, saving_s=3.0, total_s=85.0 + train_s, peak_mem_mb=30000,
                              final_loss=0.31, run=f"flux/train/{hw}/g{gpus}-s1000", **COMMON))
    loss = [dict(hw=r["hw"], gpus=r["gpus"], steps=1000, step=s, loss=1.0 / (1 + s / 100))
            for r in train for s in range(0, 1001, 100)]
    quality = [dict(hw="a100", gpus=1, steps=1000, checkpoint_step=s, psnr=12 + s / 100, ssim=0.2 + s / 5000,
                    n_images=8, run="flux/train/a100/g1-s1000", **COMMON) for s in (250, 500, 1000)]
    infer = [dict(hw="a100", model=m, batch_size=b, dtype="bf16", resolution=512, load_s=20.0, text_s=0.05,
                  denoise_s=0.4 * b * f, decode_s=0.05 * b, first_image_s=20.5 + 0.4 * f, images_per_s=2.0 / f,
                  peak_mem_mb=24000, repeats=3, run=f"flux/infer/a100/{m}-b{b}", **COMMON)
             for m, f in (("base", 1.0), ("lora", 1.25), ("lora_fused", 1.0)) for b in (1, 4)]
    return {"flux_train.csv": pd.DataFrame(train), "flux_loss.csv": pd.DataFrame(loss),
            "flux_quality.csv": pd.DataFrame(quality), "flux_infer.csv": pd.DataFrame(infer)}


def _ddpm_row(**changes) -> dict:
    row = dict(hw="a100", gpus=1, batch=128, global_batch=128, precision="fp32", workers=4, compile="off",
               steps_per_s=10.0, images_per_s=1280.0, time_to_first_step_s=8.0, peak_mem_mb=9000, loss_end=0.05,
               run="ddpm/a100/base", **COMMON)
    row.update(changes)
    return row


def amp_rows(rows: list[dict]) -> list[dict]:
    """The amp table as the study writes it (its reference precision and ratios added)."""
    from diffscale.ddpm.sweeps import stage_table

    return stage_table("amp", rows)[0]


def ddpm_tables() -> dict[str, pd.DataFrame]:
    profile = [dict(hw="a100", sort_by=sort_by, rank=i + 1, op=op, calls=100 * (i + 1), self_ms=50.0 / (i + 1),
                    total_ms=80.0 / (i + 1), pct=40.0 / (i + 1), **COMMON)
               for sort_by in ("device", "cpu")
               for i, op in enumerate(["aten::convolution_backward", "aten::cudnn_convolution", "aten::native_group_norm",
                                       "aten::mm", "aten::add_", "aten::silu", "aten::mul", "aten::copy_",
                                       "aten::native_group_norm_backward", "aten::bmm", "aten::softmax", "aten::cat"])]
    batch = []
    for b in (64, 128):
        for g, s in ((1, 1.0), (2, 1.9), (4, 3.5)):
            batch.append(_ddpm_row(gpus=g, batch=b, global_batch=b * g, images_per_s=10 * b * s, steps_per_s=10 * s / g,
                                   speedup=s, efficiency=s / g, run=f"ddpm/a100/b{b}-g{g}"))
    amp = amp_rows([_ddpm_row(precision=p, images_per_s=1280 * f, steps_per_s=10 * f, run=f"ddpm/a100/{p}")
                    for p, f in (("fp32", 1.0), ("tf32", 1.6), ("bf16", 2.4), ("fp16", 2.3))])
    workers = [_ddpm_row(workers=w, images_per_s=1280 * f, data_wait_s_per_step=0.05 / (w + 1),
                         data_wait_frac=0.4 / (w + 1), run=f"ddpm/a100/nw{w}") for w, f in ((0, 0.6), (2, 0.9), (4, 1.0))]
    compile_rows = [
        _ddpm_row(compile="off", compile_s=0.0, saving_per_step_s=0.0, break_even_steps=float("nan"), run_steps=5000,
                  run="ddpm/a100/c0"),
        _ddpm_row(compile="default", steps_per_s=12.5, images_per_s=1600, compile_s=60.0, saving_per_step_s=0.02,
                  break_even_steps=3000, run_steps=5000, run="ddpm/a100/c1"),
    ]
    peer = [_ddpm_row(impl="ours", ratio_to_peer=1.15, settings="bf16, batch 128", status="ok", run="ddpm/a100/ours"),
            _ddpm_row(impl="peer", images_per_s=1113, ratio_to_peer=1.0, settings="bf16, batch 128", status="ok",
                      run="ddpm/a100/peer")]
    return {"ddpm_profile.csv": pd.DataFrame(profile), "ddpm_batch.csv": pd.DataFrame(batch),
            "ddpm_amp.csv": pd.DataFrame(amp), "ddpm_workers.csv": pd.DataFrame(workers),
            "ddpm_compile.csv": pd.DataFrame(compile_rows), "ddpm_peer.csv": pd.DataFrame(peer)}


def write_results(root: Path) -> Path:
    """results/ with every table, the figures other rules draw, and two run.json files."""
    bench = root / "results" / "bench"
    bench.mkdir(parents=True)
    tables = {"embed_scaling.csv": pd.DataFrame(embed_rows()), "train_unet.csv": pd.DataFrame(train_rows()),
              "coco_filter.csv": pd.DataFrame([
                  dict(section="filter", category="input images", count=1000, fraction=1.0),
                  dict(section="filter", category="no person in captions", count=400, fraction=0.4),
                  dict(section="filter", category="kept", count=600, fraction=0.6),
                  dict(section="gender", category="male", count=300, fraction=0.5)]),
              "models.csv": pd.DataFrame([dict(role=r, spec="random:tiny", kind="random", params=1000)
                                          for r in ("vae", "text_encoder", "unet", "flux_transformer", "ddpm_unet")]),
              **flux_tables(), **ddpm_tables()}
    for name, frame in tables.items():
        frame.to_csv(bench / name, index=False)
    png = _png()
    for name in ("coco_filter_gender", "coco_filter_age", "train_unet_loss", "train_unet_samples", "flux_samples"):
        (bench / f"{name}.png").write_bytes(png)
    for run, slurm in (("flux/train/a100/g1-s1000", {"partition": "a100", "job_id": "4242"}),
                       ("embed/images/serial-pinned-w1", None)):
        path = root / "results" / run / "run.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"slurm": slurm, "devices": {"gpus": ["NVIDIA A100-SXM4-80GB"] if slurm else []},
                                    "cpu_model": "EPYC", "usable_cpus": 8, "versions": {"torch": "2.11.0"},
                                    "git_commit": "0123456789abcdef", "config_hash": "cafe01"}))
    return root / "results"


class Page(HTMLParser):
    """The built page as the tests read it: sections with their text, tables (cells with their raw
    values, and whether inside <details>), images, findings, notices."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text
        self.sections: dict[str, list[str]] = {}
        self.tables: list[dict] = []
        self.images: list[str] = []
        self.findings: list[dict] = []
        self.notices: dict[str, list[str]] = {}
        self._section = None
        self._details = 0
        self._table = None
        self._row = None
        self._cell = None
        self._finding = None
        self._notice = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id")
            self.sections.setdefault(self._section, [])
        elif tag == "details":
            self._details += 1
        elif tag == "table":
            self._table = {"id": a.get("id"), "class": a.get("class", ""), "in_details": self._details > 0,
                           "section": self._section, "head": [], "rows": []}
            self.tables.append(self._table)
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._table is not None:
            self._cell = {"tag": tag, "col": a.get("data-col"), "value": a.get("data-value"), "text": ""}
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "li" and a.get("data-section"):
            self._finding = {"section": a["data-section"], "text": ""}
            self.findings.append(self._finding)
        elif tag == "p" and "notice" in a.get("class", ""):
            self._notice = ""

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag == "details":
            self._details -= 1
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            if self._cell["tag"] == "th" and not self._table["rows"] and self._row is not None and not any(
                    c["tag"] == "td" for c in self._row):
                self._table["head"].append(self._cell["text"])
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if any(c["tag"] == "td" for c in self._row):
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "li":
            self._finding = None
        elif tag == "p" and self._notice is not None:
            self.notices.setdefault(self._section, []).append(self._notice)
            self._notice = None

    def handle_data(self, data):
        if self._section is not None:
            self.sections[self._section].append(data)
        if self._cell is not None:
            self._cell["text"] += data
        if self._finding is not None:
            self._finding["text"] += data
        if self._notice is not None:
            self._notice += data
