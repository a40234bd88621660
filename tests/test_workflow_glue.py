"""Glue between the Snakefile and the package (diffscale.workflow)."""

from __future__ import annotations

import yaml

from diffscale.workflow import is_complete_config


def test_a_complete_config_replaces_the_demo_and_a_partial_one_overlays_it(repo_root):
    def read(name):
        return yaml.safe_load((repo_root / name).read_text())

    assert is_complete_config(read("config/full.yaml"))
    assert is_complete_config(read("config.yaml"))
    assert not is_complete_config(read("config/slurm-test.yaml"))
    assert not is_complete_config({})
    assert not is_complete_config(None)


def test_an_overlay_model_spec_replaces_the_demos_whole():
    from diffscale.workflow import replace_overlay_models

    demo = {"models": {"vae": {"random": "tiny"}, "unet": {"random": "tiny"}}}
    merged = {"models": {"vae": {"random": "tiny", "pretrained": "stabilityai/sd-vae-ft-mse"},
                         "unet": {"random": "tiny"}}}  # what Snakemake's merge makes of it
    replace_overlay_models(merged, {"models": {"vae": {"pretrained": "stabilityai/sd-vae-ft-mse"}}})
    assert merged == {"models": {"vae": {"pretrained": "stabilityai/sd-vae-ft-mse"}, "unet": {"random": "tiny"}}}
    replace_overlay_models(demo, None)
    assert demo["models"]["vae"] == {"random": "tiny"}


def test_a_config_error_under_an_overlay_says_which_sections_came_from_the_demo():
    from diffscale.workflow import overlay_note

    assert overlay_note({}) == "" and overlay_note(None) == ""
    assert overlay_note({"embedd": 1}) == "" and overlay_note({"seed": 1, "data": {}, "models": {}}) == ""
    note = overlay_note({"seed": 1, "data": {}, "models": {}, "hardware": {}, "embed": {}, "train": {}, "flux": {}})
    assert note == (" (the command line's config is an overlay on the demo's config.yaml: it has no ddpm; "
                    "give every section for a whole config)")
    assert overlay_note({"seed": 1, "data": {}, "models": {}, "hardware": {}, "embed": {}, "train": {}, "flux": {},
                         "ddpm": {}}) == ""  # a whole config (config/full.yaml) replaced the demo's: no note


def test_rules_find_the_venv_python_without_conda(monkeypatch):
    import os
    import sys

    from diffscale.workflow import put_interpreter_on_path

    monkeypatch.setenv("PATH", "/usr/bin")
    assert put_interpreter_on_path(["env-modules"])
    assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", "/usr/bin")
    assert not put_interpreter_on_path(["DeploymentMethod.CONDA"])  # the rule's env brings python
    assert os.environ["PATH"] == "/usr/bin"


def test_command_line_text_becomes_the_number_or_boolean_the_schema_wants():
    """Snakemake's --config gives `train={steps: 3}` as {'steps': '3'} and `partial_report=true` as
    'true': read as the schema's types, where the schema does not take text there."""
    import copy

    from diffscale.workflow import read_command_line_values

    given = {"partial_report": "true", "seed": 3, "train": {"steps": "3", "lr": "2e-4"},
             "embed": {"workers": ["0", "2"], "scaling_images": "null", "hardware": "123"},
             "hardware": {"gpu": {"cpus_per_gpu": "4", "partition": "007"}},
             "models": {"vae": {"random": "tiny"}}, "flux": {"steps": ["x"]}, "typo": {"a": "1"}}
    config = copy.deepcopy(given)
    read_command_line_values(config, given)
    assert config == {"partial_report": True, "seed": 3, "train": {"steps": 3, "lr": 2e-4},
                      "embed": {"workers": [0, 2], "scaling_images": None, "hardware": "123"},  # a key: text
                      "hardware": {"gpu": {"cpus_per_gpu": 4, "partition": "007"}},
                      "models": {"vae": {"random": "tiny"}}, "flux": {"steps": ["x"]}, "typo": {"a": "1"}}
    config = {"partial_report": True, "train": {"steps": 5}}  # a config file's values are not the command line's
    read_command_line_values(config, {"train": {"steps": "3"}})
    assert config == {"partial_report": True, "train": {"steps": 5}}
