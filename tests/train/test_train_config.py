"""The run config: what a training job reads, and so what re-runs it when edited."""

import copy
import json

import pytest

from diffscale import experiments
from diffscale.errors import ConfigError
from diffscale.train.config import (check_run_config, differences, micro_batch, run_config, sampling_config,
                                    trajectory_hash, validate_train)


def as_params(cfg, hw="local", precision="fp32", gpus=1):
    """What rules/common.smk puts in the train_unet rule's params."""
    return json.dumps(run_config(cfg, hw, precision, gpus), sort_keys=True)


def test_run_config_has_what_training_reads(demo_config):
    cfg = run_config(demo_config, "local", "bf16", 2)
    assert cfg["run"] == {"hw": "local", "precision": "bf16", "gpus": 2}
    assert set(cfg["models"]) == {"unet", "text_encoder", "vae"}
    assert cfg["hardware"] == {"local": {"partition": "cpu", "device": "cpu"}}
    assert cfg["train"]["lr"] == demo_config["train"]["lr"]
    for key in ("matrix", "prompts", "guidance_scale", "inference_steps", "scheduler"):
        assert key not in cfg["train"]
    # defaults of the schema are filled in
    assert cfg["train"]["grad_clip"] == 1.0 and cfg["train"]["tf32"] is True
    assert check_run_config(cfg) is cfg
    assert micro_batch(cfg) == demo_config["train"]["batch_size"] // 2


def test_editing_a_training_parameter_changes_every_training_jobs_params(demo_config):
    edited = copy.deepcopy(demo_config)
    edited["train"]["lr"] = 3e-4
    for precision, gpus in (("fp32", 1), ("bf16", 1), ("fp32", 2)):
        assert as_params(edited, precision=precision, gpus=gpus) != as_params(demo_config, precision=precision, gpus=gpus)


def test_sampling_keys_and_the_matrix_leave_training_params_alone(demo_config):
    edited = copy.deepcopy(demo_config)
    edited["train"]["prompts"] = ["a red bus"]
    edited["train"]["guidance_scale"] = 7.5
    edited["train"]["inference_steps"] = 3
    edited["train"]["scheduler"] = "euler"
    edited["train"]["matrix"].append({"hw": ["local"], "precision": ["fp16"], "gpus": [1]})
    assert as_params(edited) == as_params(demo_config)
    assert sampling_config(edited) != sampling_config(demo_config)


def test_other_sections_do_not_leak_in(demo_config):
    edited = copy.deepcopy(demo_config)
    edited["flux"]["lora_rank"] = 99
    edited["hardware"]["local"]["mem_mb"] = 9999  # a resource, not something the run computes with
    assert as_params(edited) == as_params(demo_config)
    edited["models"]["unet"] = {"random": "small"}
    assert as_params(edited) != as_params(demo_config)


def test_batch_must_split_over_processes_and_accumulation(demo_config):
    bad = copy.deepcopy(demo_config)
    bad["train"]["batch_size"] = 6
    bad["train"]["grad_accum"] = 2  # the g2 run needs a multiple of 4
    with pytest.raises(ConfigError, match=r"train.batch_size: 6 does not split into 2 GPUs x grad_accum 2.*local/fp32-g2"):
        validate_train(bad)
    with pytest.raises(ConfigError, match="train.batch_size"):
        run_config(bad, "local", "fp32", 1)


def test_a_matrix_entry_may_accumulate_more_micro_batches_for_its_runs(demo_config):
    """A GPU with less memory (the full study's K80) runs the same global batch in smaller pieces."""
    cfg = copy.deepcopy(demo_config)
    cfg["train"]["matrix"] = [{"hw": ["local"], "precision": ["fp32"], "gpus": [1, 2]},
                              {"hw": ["local"], "precision": ["bf16"], "gpus": [1], "grad_accum": 4}]
    validate_train(cfg)
    assert [(r.variant, r.grad_accum) for r in experiments.train_runs(cfg)] == [
        ("fp32-g1", 1), ("fp32-g2", 1), ("bf16-g1", 4)]
    assert run_config(cfg, "local", "bf16", 1)["train"]["grad_accum"] == 4
    assert micro_batch(run_config(cfg, "local", "bf16", 1)) == cfg["train"]["batch_size"] // 4
    assert run_config(cfg, "local", "fp32", 2)["train"]["grad_accum"] == 1
    assert run_config(cfg, "local", "fp16", 1)["train"]["grad_accum"] == 1  # by hand, outside the matrix
    cfg["train"]["matrix"][1]["grad_accum"] = 3  # batch 8 does not split into 3
    with pytest.raises(ConfigError, match=r"^config: train.batch_size: 8 does not split into 1 GPUs x grad_accum 3 "
                                          r"equal micro-batches \(run local/bf16-g1\)"):
        validate_train(cfg)
    cfg["train"]["matrix"][1].update(precision=["fp32"], grad_accum=2)  # fp32-g1 is in both entries
    with pytest.raises(ConfigError, match=r"^config: train.matrix\[1\].grad_accum: 2, but train.matrix\[0\] runs "
                                          r"local/fp32-g1 too, with grad_accum 1: one value per run$"):
        validate_train(cfg)


def test_check_run_config_names_what_is_missing(demo_config):
    cfg = run_config(demo_config, "local", "fp32", 1)
    del cfg["train"]["ema_decay"]
    with pytest.raises(ConfigError, match="train.ema_decay is missing"):
        check_run_config(cfg)
    with pytest.raises(ConfigError, match="missing section 'models'"):
        check_run_config({k: v for k, v in run_config(demo_config, "local", "fp32", 1).items() if k != "models"})
    with pytest.raises(ConfigError, match="unknown|not in the config's hardware table"):
        run_config(demo_config, "nowhere", "fp32", 1)


def test_trajectory_ignores_logistics_only(demo_config):
    a = run_config(demo_config, "local", "fp32", 1)
    b = copy.deepcopy(a)
    b["train"].update(steps=999, log_every=7, checkpoint_every=3, loader_workers=4)
    assert trajectory_hash(a) == trajectory_hash(b)
    b["train"]["caption_dropout"] = 0.5
    assert trajectory_hash(a) != trajectory_hash(b)
    assert differences(a, b) == ["train.caption_dropout", "train.checkpoint_every", "train.loader_workers",
                                 "train.log_every", "train.steps"]
