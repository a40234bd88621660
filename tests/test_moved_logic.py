"""Logic that used to live in scripts/ and rules/common.smk, now in the package where tests reach it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from diffscale import resources as hwres
from diffscale import slurm_audit as audit
from diffscale.config import load_config
from diffscale.errors import ConfigError, HardwareError
from diffscale.train.config import job_inputs, sampling_config, sampling_flags
from diffscale.train.generate import Settings, choose_device


@pytest.fixture(scope="module")
def demo_config(repo_root) -> dict:
    return load_config(repo_root / "config.yaml")


class Wildcards(dict):
    """What Snakemake passes: a mapping whose values are also attributes."""

    __getattr__ = dict.__getitem__


def test_rule_resources_take_wildcards_first_then_the_arguments(demo_config):
    cpu = hwres.cpu_hardware(demo_config)
    assert hwres.rule_resources(demo_config, Wildcards()) == hwres.job_resources(demo_config, cpu)
    by_backend = hwres.rule_resources(demo_config, Wildcards(backend="serial", workers="2"),
                                      hw=lambda w: cpu if w.backend == "serial" else "nope")
    assert by_backend == hwres.job_resources(demo_config, cpu, 0, 2)
    assert hwres.rule_resources(demo_config, Wildcards(hw=cpu, gpus="1"), attempt=3)["runtime"] == \
        3 * hwres.rule_resources(demo_config, Wildcards(hw=cpu, gpus="1"))["runtime"]
    with pytest.raises(ConfigError, match="hardware key 'h100' is not in the config's hardware table"):
        hwres.rule_resources(demo_config, Wildcards(hw="h100"))


def test_sampling_flags_carry_every_sampling_key(demo_config):
    sampling = sampling_config(demo_config) | {"prompts": ["a cat's hat", "two dogs"]}
    argv = shlex.split(sampling_flags(sampling))
    assert argv[:4] == ["--prompt", "a cat's hat", "--prompt", "two dogs"]
    flags = dict(zip(argv[4::2], argv[5::2]))
    assert flags == {"--guidance-scale": str(sampling["guidance_scale"]),
                     "--num-inference-steps": str(sampling["inference_steps"]),
                     "--scheduler": sampling["scheduler"], "--seed": str(sampling["seed"])}


def test_generation_settings_name_the_flag_out_of_range():
    assert Settings().check() == Settings()
    with pytest.raises(ConfigError, match="^--num-inference-steps: must be at least 1$"):
        Settings(num_inference_steps=0).check()
    with pytest.raises(ConfigError, match="^--seed: must be at least 0$"):
        Settings(seed=-1).check()
    for bad in (-0.5, float("nan"), float("inf")):  # NaN drew black images and wrote invalid JSON
        with pytest.raises(ConfigError, match=rf"^--guidance-scale: expected a finite number, at least 0, not {bad}$"):
            Settings(guidance_scale=bad).check()


def test_an_explicit_gpu_is_never_replaced_by_the_cpu():
    import torch

    assert choose_device("cpu") == "cpu"
    assert choose_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(HardwareError, match="^--device: cuda:1 requested but no usable GPU is visible"):
            choose_device("cuda:1")


def test_a_job_from_a_config_file_reads_the_train_source(repo_root):
    run_cfg, images, text = job_inputs(repo_root / "config.yaml", "local", "fp32", 1)
    assert run_cfg["run"] == {"hw": "local", "precision": "fp32", "gpus": 1}
    source = run_cfg["embed"]["train_source"]
    assert images == Path("results/embed/images") / source and text == Path("results/embed/text") / source
    assert job_inputs(repo_root / "config.yaml", "local", "fp32", 1, "a", "b")[1:] == (Path("a"), Path("b"))


def test_a_job_from_a_config_file_names_the_flags_given_when_it_cannot_run(repo_root):
    config = repo_root / "config.yaml"
    with pytest.raises(ConfigError) as err:
        job_inputs(config, "local", "fp32", 3)  # the demo's batch of 8 does not split into 3 processes
    assert str(err.value).startswith(f"{config} with --hw local --precision fp32 --gpus 3: train.batch_size 8 "
                                     "does not split into 3 processes")


def test_rerun_audit_verdict(tmp_path, monkeypatch):
    log = tmp_path / "run2.log"
    log.write_text(f"Building DAG of jobs...\n{audit.NOTHING_TO_DO}\n")
    known = tmp_path / "ids.txt"
    known.write_text("7\n8\n")
    monkeypatch.setattr(audit, "slurm_records", lambda source, ids=None: {"7": None, "8": None})
    verdict = audit.audit_rerun_log(log, known)
    assert verdict.problems == [] and verdict.ok == "the second run submitted nothing"
    monkeypatch.setattr(audit, "slurm_records", lambda source, ids=None: {"7": None, "8": None, "9": None})
    assert audit.audit_rerun_log(log, known).problems == [
        "SLURM has jobs that did not exist before the second run: ['9']"]
