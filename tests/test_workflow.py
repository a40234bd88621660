"""The workflow end to end: the dry run plans the expected jobs, a finished demo re-runs nothing,
and an edit re-runs only what it invalidates."""

from __future__ import annotations

import shutil

import pytest
import yaml

from diffscale import experiments
from diffscale.config import load_config
from diffscale.hardware import demand as hardware_demand
from workflow_helpers import clone_workflow, planned_jobs, snakemake


def expected_jobs(cfg: dict) -> dict[str, int]:
    """The demo's full job list, derived from the experiment matrix."""
    jobs = {"synthetic_coco": 1, "synthetic_cifar": 1, "synthetic_subject": 1, "data_summary": 1, "coco_manifest": 1,
            "model_inventory": 1, "report": 1, "all": 1,
            "hardware_check": len(hardware_demand(cfg))}
    embed_runs = len(experiments.embed_runs(cfg))
    jobs |= {"embed": 2 * embed_runs, "embed_scaling": 1}  # one rule over {modality}
    train_runs = len(experiments.train_runs(cfg))
    jobs |= {"train_unet": train_runs, "generate_unet_samples": train_runs, "train_unet_table": 1, "samples": 1}
    flux_runs = experiments.flux_runs(cfg)
    jobs |= {"flux_dataset": 1, "flux_cache": 1, "flux_lora": len(flux_runs),
             "flux_infer": len({run.hw for run in flux_runs}), "flux_tables": 1}
    hws, peer = len(cfg["ddpm"]["hardware"]), cfg["ddpm"]["peer"]
    owners = set(experiments.ddpm_owners(cfg).values())  # the baseline point runs once
    jobs |= {f"ddpm_{stage}": sum(r.stage == stage for r in owners) for stage in experiments.DDPM_STAGES}
    jobs |= {"ddpm_data": 1, "ddpm_profile": hws, "ddpm_table": 5 + bool(peer["enabled"])}
    if peer["enabled"]:
        jobs["ddpm_peer"] = hws * len(peer["variants"])
    return jobs


@pytest.fixture(scope="module")
def demo_run(repo_root, tmp_path_factory):
    """One full demo run in a scratch clone, shared by the tests below."""
    work = clone_workflow(repo_root, tmp_path_factory.mktemp("demo"))
    plan = planned_jobs(work)
    snakemake(work, "--cores", "2")
    return work, plan


@pytest.mark.slow
def test_dry_run_plans_every_job_of_the_matrix(demo_run, repo_root):
    _, plan = demo_run
    assert plan == expected_jobs(load_config(repo_root / "config.yaml"))


@pytest.mark.slow
def test_finished_demo_reruns_nothing(demo_run):
    work, _ = demo_run
    assert (work / "results" / "report.html").stat().st_size > 0
    assert planned_jobs(work) == {}


@pytest.mark.slow
def test_editing_models_reruns_only_what_depends_on_them(demo_run):
    work, _ = demo_run
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["models"]["ddpm_unet"] = {"random": "ddpm-cifar10-32"}
    edited = work / "edited.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    plan = planned_jobs(work, "--configfile", str(edited), "--replace-workflow-config")
    assert plan.get("model_inventory") == 1 and plan.get("report") == 1
    assert not any(rule.startswith("synthetic_") for rule in plan)


@pytest.mark.slow
def test_editing_a_price_reruns_only_the_report(demo_run):
    """Prices are the report's: no measurement depends on them."""
    work, _ = demo_run
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    for entry in cfg["hardware"].values():
        entry["price_per_hour"] = entry.get("price_per_hour", 0) * 2 + 0.5
    edited = work / "edited-prices.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    assert planned_jobs(work, "--configfile", str(edited), "--replace-workflow-config") == {"report": 1, "all": 1}


@pytest.mark.slow
def test_editing_one_training_parameter_reruns_only_training_downstream(demo_run):
    work, _ = demo_run
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["train"]["lr"] = cfg["train"]["lr"] * 2
    edited = work / "edited-train.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    plan = planned_jobs(work, "--configfile", str(edited), "--replace-workflow-config")
    runs = len(experiments.train_runs(cfg))
    assert plan == {"train_unet": runs, "generate_unet_samples": runs, "train_unet_table": 1, "samples": 1,
                    "report": 1, "all": 1}


def _plan_after(work, name, edit):
    """The jobs a dry run plans after `edit(cfg)` of the demo's config."""
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    edit(cfg)
    edited = work / f"edited-{name}.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    return cfg, planned_jobs(work, "--configfile", str(edited), "--replace-workflow-config")


@pytest.mark.slow
def test_editing_the_lora_rank_reruns_fine_tuning_not_its_dataset_or_cache(demo_run):
    """The subject dataset and the cached latents/text do not depend on the LoRA."""
    work, _ = demo_run
    cfg, plan = _plan_after(work, "flux", lambda cfg: cfg["flux"].update(lora_rank=cfg["flux"]["lora_rank"] * 2))
    full = expected_jobs(cfg)
    assert plan == {"flux_lora": full["flux_lora"], "flux_infer": full["flux_infer"], "flux_tables": 1,
                    "report": 1, "all": 1}


@pytest.mark.slow
def test_editing_the_ddpm_timed_steps_reruns_only_the_ddpm_runs_not_its_data(demo_run):
    work, _ = demo_run
    cfg, plan = _plan_after(work, "ddpm", lambda cfg: cfg["ddpm"].update(steps=cfg["ddpm"]["steps"] + 3))
    full = expected_jobs(cfg)
    assert {rule for rule in plan if not rule.startswith("ddpm_")} == {"report", "all"}
    assert "ddpm_data" not in plan
    assert {f"ddpm_{s}": plan.get(f"ddpm_{s}", 0) for s in experiments.DDPM_STAGES} == {
        f"ddpm_{s}": full[f"ddpm_{s}"] for s in experiments.DDPM_STAGES}


@pytest.mark.slow
def test_a_partial_report_leaves_out_the_runs_that_failed_and_names_them(demo_run, tmp_path):
    """A run that failed for good (Snakemake removed its outputs) blocks its study's table and the
    report; with partial_report the report is built from the others, names the missing runs and runs
    nothing for them; without it again, the missing runs are planned and every table is rebuilt whole."""
    work = tmp_path / "partial"
    shutil.copytree(demo_run[0], work, symlinks=True)
    failed = ["results/flux/local/g2-s8", "results/ddpm/amp/local/bf16"]
    for run in failed:
        for name in ("run.json", "metrics.csv", "quality.csv", "timing.json", "lora.safetensors"):
            (work / run / name).unlink(missing_ok=True)
    for never_made in ("report.html", "bench/flux_train.csv", "bench/ddpm_amp.csv"):  # they waited for those runs
        (work / "results" / never_made).unlink()
    assert {"flux_lora", "ddpm_amp"} <= set(planned_jobs(work))

    assert planned_jobs(work, "--config", "partial_report=true") == {"flux_tables": 1, "ddpm_table": 1, "report": 1,
                                                                    "all": 1}
    snakemake(work, "--cores", "2", "--config", "partial_report=true")
    page = (work / "results" / "report.html").read_text()
    assert ("<b>Partial report.</b> 2 runs have not finished and are left out of every table, figure and finding "
            "below (built with <code>partial_report: true</code>): <code>results/flux/local/g2-s8</code>, "
            "<code>results/ddpm/amp/local/bf16</code>.") in page
    flux = (work / "results" / "bench" / "flux_train.csv").read_text()
    assert "g1-s8" in flux and "g2-s8" not in flux
    assert "bf16" not in (work / "results" / "bench" / "ddpm_amp.csv").read_text()

    assert planned_jobs(work, "--config", "partial_report=True") == {}  # Snakemake's spelling of a boolean too
    plan = planned_jobs(work)
    assert plan["flux_lora"] == 1 and plan["ddpm_amp"] == 1 and plan["flux_tables"] == plan["report"] == 1


def test_config_error_stops_before_any_job(repo_root, tmp_path):
    work = clone_workflow(repo_root, tmp_path / "wf")
    proc = snakemake(work, "-n", "--cores", "1", "--config", "seed=-3", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: config.yaml + --config: seed: -3 is less than "
                                                          "the minimum of 0")
    assert "File " not in proc.stderr and "Traceback" not in proc.stderr  # the line alone, no frame
    (tmp_path / "mine.yaml").write_text("seed: -3\n")
    proc = snakemake(work, "-n", "--cores", "1", "--configfile", str(tmp_path / "mine.yaml"), check=False)
    assert proc.returncode == 2  # the line names the files the value can have come from
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'mine.yaml'} + config.yaml: seed: -3 is less "
                                                   f"than the minimum of 0")
    assert not (work / "results").exists()


@pytest.mark.slow
def test_report_html_lists_models(demo_run):
    work, _ = demo_run
    html = (work / "results" / "report.html").read_text()
    assert "Models used" in html and "UNet2DConditionModel" in html
    assert "Provenance" in html or "Inputs" in html
