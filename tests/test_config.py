"""Config validation: every user mistake stops the run with one line naming the key."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from diffscale import experiments
from diffscale.config import config_hash, load_config, validate_config
from diffscale.errors import ConfigError


@pytest.fixture(scope="module")
def demo(repo_root) -> dict:
    return yaml.safe_load((repo_root / "config.yaml").read_text())


def check(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(copy.deepcopy(cfg), source="config.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_demo_and_full_configs_validate(repo_root):
    demo = load_config(repo_root / "config.yaml")
    full = load_config(repo_root / "config" / "full.yaml")
    # defaults from the schema are filled in
    assert demo["train"]["grad_accum"] == 1
    assert demo["hardware"]["local"]["gpu_request"] == "gres"
    # the demo has the full study's shape, only smaller
    for key in ("backends", "policies"):
        assert set(demo["embed"][key]) <= set(full["embed"][key])
    assert max(demo["embed"]["workers"]) < max(full["embed"]["workers"])
    assert demo["train"]["steps"] < full["train"]["steps"]
    assert {"a40", "a100", "k80"} <= set(full["hardware"])


def test_unknown_key_is_named(demo):
    bad = copy.deepcopy(demo)
    bad["embed"]["wokers"] = [1]
    message = check(bad)
    assert message.startswith("config.yaml: embed.wokers: unknown key 'wokers' (allowed: ")
    assert "workers" in message.split("allowed:")[1]


def test_unknown_top_level_section(demo):
    bad = dict(demo, trian={})
    assert check(bad).startswith("config.yaml: trian: unknown key 'trian'")


def test_wrong_type_is_named(demo):
    bad = copy.deepcopy(demo)
    bad["train"]["steps"] = "many"
    assert check(bad) == "config.yaml: train.steps: 'many' is not of type 'integer'"


def test_zero_workers_is_named(demo):
    bad = copy.deepcopy(demo)
    bad["embed"]["workers"] = [0, 2]
    assert check(bad) == "config.yaml: embed.workers[0]: 0 is less than the minimum of 1"


def test_hardware_entry_without_partition(demo):
    bad = copy.deepcopy(demo)
    del bad["hardware"]["local"]["partition"]
    assert check(bad) == "config.yaml: hardware.local: 'partition' is a required property"


def test_hardware_key_missing_from_table(demo):
    bad = copy.deepcopy(demo)
    bad["train"]["matrix"][0]["hw"] = ["a100"]
    assert check(bad) == "config.yaml: train.matrix[0].hw: hardware key 'a100' is not in the hardware table (local)"


def test_gpu_entry_needs_model_and_gpus(demo):
    bad = copy.deepcopy(demo)
    bad["hardware"]["a40"] = {"partition": "a40", "device": "cuda"}
    assert "hardware.a40.gpus_per_node" in check(bad)
    bad["hardware"]["a40"]["gpus_per_node"] = 2
    assert check(bad) == "config.yaml: hardware.a40.gpu_model: required when gpus_per_node > 0"


def test_a_max_time_below_the_first_tries_time_limit_is_named(demo):
    bad = copy.deepcopy(demo)
    bad["hardware"]["local"]["max_runtime_min"] = 20
    assert check(bad) == "config.yaml: hardware.local.max_runtime_min: 20 is less than runtime_min 30"


@pytest.mark.parametrize("extra, flag", [("--hint=nomultithread -c 4", "-c"), ("--mem=8G", "--mem"),
                                         ("--exclusive --qos gpu", "--qos"), ("-Ca100_80gb", "-C"), ("-G 2", "-G")])
def test_slurm_extra_cannot_set_what_the_hardware_table_sets(demo, extra, flag):
    bad = copy.deepcopy(demo)
    bad["hardware"]["local"]["slurm_extra"] = extra
    assert check(bad) == (f"config.yaml: hardware.local.slurm_extra: {flag} is set from the hardware table or by "
                          "Snakemake's SLURM plugin (use partition, cpus, mem_mb, runtime_min, constraint, qos)")
    bad["hardware"]["local"]["slurm_extra"] = "--hint=nomultithread --exclusive"
    validate_config(bad, source="config.yaml")  # flags the table does not set pass


def test_more_gpus_than_the_node_has(repo_root):
    full = yaml.safe_load((repo_root / "config" / "full.yaml").read_text())
    full["train"]["matrix"][0]["gpus"] = [8]
    assert check(full) == "config.yaml: train.matrix[0].gpus: 8 GPUs asked but hardware.a100.gpus_per_node is 4"


def test_model_spec_needs_exactly_one_kind(demo):
    bad = copy.deepcopy(demo)
    bad["models"]["vae"] = {"random": "tiny", "pretrained": "x/y"}
    assert check(bad) == (
        "config.yaml: models.vae: give exactly one of 'pretrained: <hub id or dir>' or 'random: <preset>'"
    )


def test_train_source_must_be_an_embed_run(demo):
    bad = copy.deepcopy(demo)
    bad["embed"]["train_source"] = "dask-pinned-w8"
    assert "embed.train_source: 'dask-pinned-w8' is not one of the embed runs" in check(bad)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 0\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+ is not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00")  # --config given a picture
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(expected the YAML config file\)$"):
        load_config(path)
    with pytest.raises(ConfigError, match=r": expected the YAML config file, found a folder$"):
        load_config(tmp_path)


def test_experiment_matrix_of_the_demo(demo):
    cfg = validate_config(copy.deepcopy(demo))
    names = [r.name for r in experiments.embed_runs(cfg)]
    assert names[0] == "serial-pinned-w1"
    assert "joblib-naive-w2" in names and "dask-pinned-w1" in names
    assert len(names) == 1 + 1 + 3 * 2 * 2  # serial 1 CPU and intraop w2; 3 parallel backends × 2 policies × 2 counts
    assert [r.variant for r in experiments.train_runs(cfg)] == ["fp32-g1", "bf16-g1", "fp32-g2"]
    runs = experiments.ddpm_runs(cfg)
    assert len(runs) == len(set(runs))
    assert {(r.batch, r.gpus) for r in runs if r.stage == "batch"} == {(4, 1), (4, 2)}
    assert [r.variant for r in runs if r.stage != "batch"] == ["fp32", "bf16", "w0", "w2", "off", "default"]


def test_intraop_runs_follow_the_policies(demo):
    cfg = copy.deepcopy(demo)
    cfg["embed"]["policies"] = ["pinned", "naive"]
    names = [r.name for r in experiments.embed_runs(validate_config(cfg))]
    assert "serial-pinned-w1" in names and not any("intraop" in n for n in names)


def test_a_training_run_by_hand_takes_train_grad_accum(demo):
    cfg = copy.deepcopy(demo)
    cfg["train"]["grad_accum"] = 2
    cfg = validate_config(cfg)
    assert ("a40", "bf16", 4) not in {(r.hw, r.precision, r.gpus) for r in experiments.train_runs(cfg)}
    assert experiments.train_run(cfg, "a40", "bf16", 4).grad_accum == 2


def test_the_ddpm_baseline_is_measured_once_by_the_batch_sweep(demo):
    owners = experiments.ddpm_owners(validate_config(copy.deepcopy(demo)))
    base = experiments.ddpm_baseline(demo)
    at_base = [run for run in owners if experiments.ddpm_point(run)[1:] == (
        base["batch"], base["gpus"], base["precision"], base["workers"], base["compile"])]
    assert {run.stage for run in at_base} == {"batch", "amp", "workers", "compile"}
    assert {owners[run].stage for run in at_base} == {"batch"}


def test_config_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_ddpm_steps_split_into_equal_blocks(demo):
    bad = copy.deepcopy(demo)
    bad["ddpm"].update(steps=10, repeats=3)
    assert check(bad) == ("config.yaml: ddpm.steps: 10 is not a multiple of ddpm.repeats 3 (each of the 3 timed "
                          "blocks has the same number of steps); use a multiple of 3")
    bad["ddpm"].update(steps=2, repeats=3)  # fewer steps than blocks
    with pytest.raises(ConfigError, match=r"ddpm\.steps: 2 is not a multiple of ddpm\.repeats 3"):
        validate_config(bad, source="config.yaml")


def test_demo_data_is_never_made_outside_results(demo):
    cfg = copy.deepcopy(demo)
    cfg["data"]["cifar"] = "/datasets/cifar10"  # real data over the demo, data.synthetic still on
    with pytest.raises(ConfigError, match=r"^config: data.cifar: /datasets/cifar10 is outside results/, but "
                                          r"data.synthetic would write demo data there; .*synthetic: null"):
        validate_config(cfg)
    cfg["data"]["synthetic"] = None  # an overlay's way to turn it off
    validate_config(cfg)


def test_flux_batch_splits_over_every_flux_run(demo):
    bad = copy.deepcopy(demo)
    bad["flux"]["batch_size"] = 3  # the demo's FLUX matrix runs on 1 and 2 GPUs
    with pytest.raises(ConfigError, match=r"^config: flux\.batch_size: 3 does not split over 2 GPUs "
                                          r"\(run local/g2-s\d+\); use a multiple of 2$"):
        validate_config(bad)


def test_every_model_spec_names_a_preset_of_its_role(demo):
    bad = copy.deepcopy(demo)
    bad["models"]["vae"] = {"random": "enormous"}
    with pytest.raises(ConfigError, match=r"^config: models\.vae\.random: unknown preset 'enormous' for vae "
                                          r"\(known: sd-vae-ft-mse, tiny\)$"):
        validate_config(bad)


def test_people_rule_asks_at_most_every_caption(demo):
    bad = copy.deepcopy(demo)
    bad["data"]["people"] = {"min_person_captions": 6, "per_captions": 5}
    with pytest.raises(ConfigError, match=r"^config: data\.people\.min_person_captions: 6 is more than "
                                          r"per_captions \(5\); a person in k of every n captions needs k <= n$"):
        validate_config(bad)


def test_training_adapter_must_be_a_file_at_config_time(demo, tmp_path):
    bad = copy.deepcopy(demo)
    bad["flux"]["training_adapter"] = str(tmp_path / "none.safetensors")
    with pytest.raises(ConfigError, match=rf"^config: flux\.training_adapter: {tmp_path}/none\.safetensors is not "
                                          r"an existing file \(expected a LoRA \.safetensors file, or null for none\)$"):
        validate_config(copy.deepcopy(bad))
    (tmp_path / "none.safetensors").write_bytes(b"")
    validate_config(bad)  # existing: whether it is a LoRA of the transformer is the job's check


def test_with_scaling_images_the_training_reads_a_gpu_run(demo):
    bad = copy.deepcopy(demo)
    bad["embed"]["scaling_images"] = 10
    assert check(bad) == ("config.yaml: embed.train_source: 'serial-pinned-w1' embeds only the first "
                          "embed.scaling_images (10) images; train from a gpu run, or set scaling_images: null")


def test_a_flux_matrix_entry_sets_its_own_steps_and_inference_settings(demo):
    """A CPU entry times a few steps and batch-1 fp32 inference where the GPUs run the study's settings."""
    from diffscale.flux.settings import infer_config

    cfg = copy.deepcopy(demo)
    cfg["hardware"]["big"] = {"partition": "cpu", "device": "cpu", "cpus": 2}
    cfg["flux"]["matrix"] = [{"hw": ["local"], "gpus": [1, 2]},
                             {"hw": ["big"], "gpus": [1], "steps": [2], "infer": {"batch_sizes": [1]}}]
    cfg["flux"]["infer"] = {"batch_sizes": [1, 2], "dtypes": ["fp32"], "repeats": 2}
    validate_config(cfg)
    assert [(r.hw, r.gpus, r.steps) for r in experiments.flux_runs(cfg)] == [
        ("local", 1, 4), ("local", 1, 8), ("local", 2, 4), ("local", 2, 8), ("big", 1, 2)]
    big, local = infer_config(cfg, "big"), infer_config(cfg, "local")
    assert (big["batch_sizes"], big["dtypes"], big["repeats"]) == ([1], ["fp32"], 2)  # the rest from flux.infer
    assert (local["batch_sizes"], local["dtypes"], local["repeats"]) == ([1, 2], ["fp32"], 2)

    bad = copy.deepcopy(cfg)
    bad["flux"]["matrix"].append({"hw": ["big"], "gpus": [2], "infer": {"batch_sizes": [2]}})
    assert check(bad) == ("config.yaml: flux.matrix[2].infer: {'batch_sizes': [2]}, but flux.matrix[1] times big "
                          "too, with infer {'batch_sizes': [1]}: one value per hardware key")
    bad["flux"]["matrix"][2]["infer"] = {"batch_sizes": [1]}  # the same value twice is one value
    validate_config(copy.deepcopy(bad))
    bad["flux"]["matrix"][1]["infer"] = {"batch": [1]}
    assert "flux.matrix[1].infer" in check(bad) and "batch" in check(bad)
    bad["flux"]["matrix"][1].update(infer={"batch_sizes": [1]}, steps=[0])
    assert "flux.matrix[1].steps" in check(bad)


def test_a_run_config_read_back_from_json_names_what_it_lacks():
    from diffscale.config import check_run_slice

    good = {"run": {"hw": "a40", "gpus": 2, "steps": 5}, "flux": {"lr": 1e-4}}
    shape = dict(sections=("run", "flux"), keys={"run": ("hw", "gpus", "steps"), "flux": ("lr",)},
                 positive=("run.gpus", "run.steps"))
    assert check_run_slice(good, "--run-config", **shape) is good
    for bad, message in (([], "expected a JSON object"), ({"run": good["run"]}, "missing section 'flux'"),
                         ({**good, "flux": {}}, "flux.lr is missing"),
                         ({**good, "run": {**good["run"], "steps": 0}}, "run.steps: 0 is not a positive integer"),
                         ({**good, "run": {**good["run"], "gpus": True}}, "run.gpus: True is not a positive integer")):
        with pytest.raises(ConfigError, match=rf"^--run-config: {re.escape(message)}$"):
            check_run_slice(bad, "--run-config", **shape)
    # with a hardware section, the entry the run names must be in it (not a KeyError deep in the run)
    hardware = {**good, "hardware": {"a40": {}, "local": {}}}
    shape["sections"] += ("hardware",)
    assert check_run_slice(hardware, "--run-config", **shape) is hardware
    with pytest.raises(ConfigError, match=r"^--run-config: hardware.a100: missing \(run.hw names it; the table has "
                                          r"a40, local\)$"):
        check_run_slice({**hardware, "run": {**good["run"], "hw": "a100"}}, "--run-config", **shape)
    with pytest.raises(ConfigError, match=r"^--settings: hardware.None: missing \(hw names it"):
        check_run_slice({"hardware": {}}, "--settings", ("hardware",), hw="hw")


def test_the_flux_cache_and_inference_slices_name_what_they_lack(demo):
    from diffscale.flux import settings

    cfg = validate_config(copy.deepcopy(demo))
    assert settings.check_cache_config(settings.cache_config(cfg))
    assert settings.check_infer_config(settings.infer_config(cfg, "local"))
    with pytest.raises(ConfigError, match=r"^--settings: missing section 'layout'$"):
        settings.check_cache_config({"x": 1})
    with pytest.raises(ConfigError, match=r"^--settings: expected a JSON object$"):
        settings.check_cache_config([1])
    with pytest.raises(ConfigError, match=r"^--settings: models.flux_transformer is missing$"):
        settings.check_infer_config({**settings.infer_config(cfg, "local"),
                                     "models": settings.cache_config(cfg)["models"]})
    with pytest.raises(ConfigError, match=r"^--settings: hardware.a100: missing \(hw names it; the table has local\)$"):
        settings.check_infer_config({**settings.infer_config(cfg, "local"), "hw": "a100"})


def test_set_flags_become_a_variant_or_name_the_bad_one():
    from diffscale.ddpm.sweeps import parse_set

    assert parse_set(["batch=128", "compile=max-autotune"]) == {"batch": "128", "compile": "max-autotune"}
    with pytest.raises(ConfigError, match=r"^--set: expected KEY=VALUE, got '=3'$"):
        parse_set(["batch=1", "=3"])


def test_a_by_hand_flag_takes_the_schemas_default_and_range():
    from diffscale.config import checked_flag, schema_entry

    assert schema_entry("flux", "resolution")["default"] == 512
    assert checked_flag("--resolution", None, "flux", "resolution") == 512  # not given: the config's default
    assert checked_flag("--resolution", 256, "flux", "resolution") == 256
    with pytest.raises(ConfigError, match=r"^--resolution: 100 is not a multiple of 16$"):
        checked_flag("--resolution", 100, "flux", "resolution")
    with pytest.raises(ConfigError, match=r"^--trigger: "):
        checked_flag("--trigger", "", "data", "subject", "trigger")


def test_every_key_of_the_schema_says_what_it_is():
    """The README sends readers to the schema as the one description of every key."""
    from diffscale.config import schema

    def undescribed(node, path):
        if not isinstance(node, dict):
            return
        for key, sub in (node.get("properties") or {}).items():
            ref = sub.get("$ref", "") if isinstance(sub, dict) else ""
            if isinstance(sub, dict) and "description" not in sub and not ref.startswith("#/properties/"):
                yield f"{path}.{key}"  # a reference to another key shares that key's description
            yield from undescribed(sub, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            yield from undescribed(node.get(key), f"{path}[]")
        for name, sub in (node.get("$defs") or {}).items():
            yield from undescribed(sub, f"$defs.{name}")

    assert list(undescribed(schema(), "")) == []
