"""The FLUX rules in the workflow: the full study's dry run through the SLURM profile, the demo's
targets, the contract tables built from run folders."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from diffscale import slurm_audit
from diffscale.config import load_config
from diffscale.flux import settings
from diffscale.flux.table import write_tables

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_slurm_profile import fake_data_overlay  # noqa: E402


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_full_study_sends_flux_lora_jobs_to_a40_and_a100_with_their_gpu_requests(tmp_path):
    full = load_config(ROOT / "config" / "full.yaml")
    overlay = fake_data_overlay(full, tmp_path, hardware={"a100": {"gpu_request": "gpus"}})
    done = snakemake("results/bench/flux_train.csv", "-n", "--forceall", "--nolock", "--profile", "profiles/slurm",
                     "--printshellcmds", "--configfile", "config/full.yaml", str(overlay), "--sdm", "env-modules")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = slurm_audit.parse_run_log(done.stdout + done.stderr)
    cfg = slurm_audit.merged_config([ROOT / "config" / "full.yaml", overlay])
    lora = [job for job in jobs if job.rule == "flux_lora"]
    planned = {(j.wildcards["hw"], int(j.wildcards["gpus"]), int(j.wildcards["steps"])) for j in lora}
    assert planned == {(hw, g, s) for hw in ("a40", "a100") for g in (1, 2, 4) for s in (500, 2000)} | {("cpu_large", 1, 30)}
    cpu = next(job for job in lora if job.wildcards["hw"] == "cpu_large")  # its entry's own steps, on a CPU node
    assert (cpu.resources["slurm_partition"], cpu.resources["cpus_per_task"], cpu.resources["mem_mb"]) == ("cpu", "32", "128000")
    assert slurm_audit.requested_gpus(cpu.resources)[1] == 0
    for job in lora:
        hw, gpus = job.wildcards["hw"], int(job.wildcards["gpus"])
        if hw == "cpu_large":
            continue
        assert job.resources["slurm_partition"] == hw
        assert slurm_audit.requested_gpus(job.resources) == (hw, gpus)
        assert "--gpus" not in job.command  # the loop spawns its processes itself
    assert {job.resources["gres"] for job in lora if job.wildcards["hw"] == "a40"} == {"gpu:a40:1", "gpu:a40:2",
                                                                                        "gpu:a40:4"}
    assert {job.resources["gpu_model"] for job in lora if job.wildcards["hw"] == "a100"} == {"a100"}
    flux_jobs = [job for job in jobs if job.rule.startswith("flux_")]
    assert {job.rule for job in flux_jobs} == {"flux_dataset", "flux_cache", "flux_lora", "flux_infer", "flux_tables"}
    problems = [p for job in flux_jobs if job.command for p in slurm_audit.request_problems(cfg, job)]
    assert not problems, "\n".join(problems)
    infer = {job.wildcards["hw"]: job for job in jobs if job.rule == "flux_infer"}
    assert set(infer) == {"a40", "a100", "cpu_large"}
    assert [slurm_audit.requested_gpus(infer[hw].resources)[1] for hw in ("a40", "a100", "cpu_large")] == [1, 1, 0]


def test_the_demo_asks_for_the_contract_tables_through_the_report(repo_root):
    done = snakemake("-n", "--nolock", "--forceall", "results/report.html")
    assert done.returncode == 0, done.stderr[-2000:]
    for table in ("flux_train.csv", "flux_loss.csv", "flux_quality.csv", "flux_infer.csv", "flux_samples.png"):
        assert f"results/bench/{table}" in done.stdout


def test_run_configs_carry_only_what_the_loop_reads_and_split_the_batch(repo_root):
    cfg = load_config(repo_root / "config.yaml")
    run = settings.run_config(cfg, "local", 2, 8)
    assert run["run"] == {"hw": "local", "gpus": 2, "steps": 8}
    assert set(run["flux"]) == set(settings.TRAIN_KEYS) and set(run["models"]) == {"flux_transformer", "flux_vae"}
    cfg["flux"]["batch_size"] = 3
    with pytest.raises(Exception, match=r"flux\.batch_size: 3 does not split over 2 GPUs"):
        settings.run_config(cfg, "local", 2, 8)


def test_the_cache_slice_carries_its_layout_so_snakemake_rebuilds_an_older_cache(repo_root, prepared):
    from diffscale.flux.cache import load_cache

    cfg = load_config(repo_root / "config.yaml")
    assert settings.cache_config(cfg)["layout"] == settings.CACHE_LAYOUT  # in the flux_cache rule's params
    assert load_cache(prepared[1]).manifest["layout"] == settings.CACHE_LAYOUT


@pytest.mark.parametrize("device, threads, efficiency", [
    ("NVIDIA A100", {1: None, 2: None}, 0.75),  # per GPU
    ("cpu", {1: 2, 2: 1}, 1.5),  # per CPU: 2 processes x 1 thread on the 2 CPUs one process x 2 threads had
])
def test_the_tables_follow_the_contract(tmp_path, device, threads, efficiency):
    from PIL import Image

    runs = []
    for gpus, rate in ((1, 2.0), (2, 3.0)):
        run = tmp_path / f"g{gpus}-s4"
        (run / "samples").mkdir(parents=True)
        checkpoints = []
        for step in (0, 4):
            path = run / "samples" / f"{step}.png"
            Image.new("RGB", (32, 32)).save(path)
            checkpoints.append({"step": step, "samples": [str(path)]})
        results = {"hw": "a100", "gpus": gpus, "steps": 4, "resolution": 512, "batch_size": 2, "lora_rank": 16,
                   "grad_checkpointing": True, "steps_per_s": rate, "images_per_s": 2 * rate, "setup_s": 1.0,
                   "cache_s": 0.1, "train_s": 2.0, "sampling_s": 0.5, "saving_s": 0.2, "total_s": 3.8,
                   "peak_mem_mb": 100.0, "final_loss": 0.5, "device": device, "random_weights": False,
                   "checkpoints": checkpoints, "model": "x", "threads": threads[gpus]}
        (run / "run.json").write_text(__import__("json").dumps({"results": results}))
        (run / "metrics.csv").write_text("step,loss\n2,0.6\n4,0.5\n")
        (run / "quality.csv").write_text("checkpoint_step,psnr,ssim,n_images\n0,10,0.1,5\n4,12,0.2,5\n")
        runs.append(run)
    infer = tmp_path / "infer"
    infer.mkdir()
    (infer / "infer.csv").write_text("hw,model,batch_size,dtype,resolution,load_s,text_s,denoise_s,decode_s,"
                                     "first_image_s,images_per_s,peak_mem_mb,repeats,status,device,random_weights\n"
                                     "a100,base,1,bf16,512,9,0.1,0.4,0.1,9.6,1.6,30000,5,ok,NVIDIA A100,False\n")
    write_tables(runs, [infer], tmp_path / "bench", tmp_path / "bench" / "flux_samples.png")
    train = list(csv.DictReader(open(tmp_path / "bench" / "flux_train.csv")))
    assert [float(r["speedup"]) for r in train] == [1.0, 1.5] and float(train[1]["efficiency"]) == efficiency
    for name, required in (("flux_train", ["hw", "gpus", "steps", "steps_per_s", "images_per_s", "speedup",
                                           "efficiency", "train_s", "total_s", "final_loss"]),
                           ("flux_loss", ["hw", "gpus", "steps", "step", "loss"]),
                           ("flux_quality", ["checkpoint_step", "psnr", "ssim", "n_images"]),
                           ("flux_infer", ["model", "batch_size", "load_s", "text_s", "denoise_s", "decode_s",
                                           "first_image_s", "images_per_s"])):
        header = next(csv.reader(open(tmp_path / "bench" / f"{name}.csv")))
        assert set(required + ["device", "random_weights", "run"]) <= set(header), name
    assert len(list(csv.DictReader(open(tmp_path / "bench" / "flux_loss.csv")))) == 4
    with Image.open(tmp_path / "bench" / "flux_samples.png") as grid:
        assert grid.size == (2 * 32, 2 * 32)
