import copy
import sys

import pytest

from diffscale.config import load_config, validate_config
from diffscale.embed import backends
from diffscale.embed.settings import EmbedSettings, settings_for
from diffscale.embed.threads import layout
from diffscale.errors import ConfigError
from diffscale.experiments import embed_runs


@pytest.fixture(scope="module")
def demo(repo_root):
    return load_config(repo_root / "config.yaml")


@pytest.fixture(scope="module")
def full(repo_root):
    return load_config(repo_root / "config" / "full.yaml")


def test_demo_matrix_has_14_runs_per_modality(demo):
    names = [r.name for r in embed_runs(demo)]
    assert len(names) == 14 and names[0] == "serial-pinned-w1" and "dask-naive-w2" in names
    assert "serial-intraop-w2" in names and not any("intraop" in n and not n.startswith("serial") for n in names)


def test_each_run_depends_only_on_its_slice(demo, full):
    images = settings_for(demo, "images", "multiprocessing")
    text = settings_for(demo, "text", "multiprocessing")
    assert images["image_size"] == 64 and images["batch_size"] == 2 and images["model"] == {"random": "tiny"}
    assert "image_size" not in text and text["batch_size"] == 15
    assert "dask" not in images and settings_for(demo, "images", "dask")["dask"]["cluster"] == "local"
    gpu = settings_for(full, "images", "gpu")
    assert gpu["hw"] == "a100" and gpu["hardware"]["device"] == "cuda" and gpu["dtype"] == "bf16"
    assert settings_for(full, "text", "joblib")["hw"] == "cpu"
    settings = EmbedSettings.from_dict(gpu)
    assert settings.compute_dtype("cuda:0") == "bf16" and settings.compute_dtype("cpu") == "fp32"


def test_settings_errors(demo):
    with pytest.raises(ConfigError, match="^embed: backend: 'mpi' is not one of serial, multiprocessing, joblib, dask, gpu$"):
        settings_for(demo, "images", "mpi")
    with pytest.raises(ConfigError, match="embed.dtype: 'fp8'"):
        EmbedSettings.from_dict({**settings_for(demo, "images", "serial"), "dtype": "fp8"})
    with pytest.raises(ConfigError, match="embed settings: .*unexpected keyword"):
        EmbedSettings.from_dict({**settings_for(demo, "images", "serial"), "colour": 1})
    no_gpu = {**demo, "embed": {k: v for k, v in demo["embed"].items() if k != "gpu_hardware"}}
    with pytest.raises(ConfigError, match=r"^embed.gpu_hardware: required for the gpu backend"):
        settings_for(no_gpu, "images", "gpu")  # scripts/embed.py --backend gpu with a CPU-only config


def test_dask_address_cluster_needs_an_address(demo):
    cfg = copy.deepcopy(demo)
    cfg["embed"]["dask"] = {"cluster": "address"}
    with pytest.raises(ConfigError, match=r"embed.dask: 'address' is a required property"):
        validate_config(cfg)
    cfg["embed"]["dask"] = {"cluster": "kubernetes"}
    with pytest.raises(ConfigError, match=r"embed.dask.cluster: 'kubernetes' is not one of"):
        validate_config(cfg)
    # an address alone would quietly start a LocalCluster on the job's own node
    cfg["embed"]["dask"] = {"address": "tcp://head:8786"}
    with pytest.raises(ConfigError, match=r"^config: embed.dask.address: 'tcp://head:8786' is set, but "
                                          r"embed.dask.cluster is 'local'; the address is used with cluster: address$"):
        validate_config(cfg)
    cfg["embed"]["dask"] = {"cluster": "address", "address": "tcp://head:8786"}
    assert validate_config(cfg)["embed"]["dask"]["address"] == "tcp://head:8786"


def test_slurm_cluster_without_dask_jobqueue_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if not installed
    with pytest.raises(ConfigError, match="embed.dask.cluster: slurm needs dask-jobqueue, which is not installed"):
        backends.make_backend("dask", 2, dask_settings={"cluster": "slurm", "slurm": {"memory": "4GB"}}, threads=1)


def test_thread_policies_on_n_cpus():
    assert (layout("pinned", 8).processes, layout("pinned", 8).threads) == (8, 1)
    assert (layout("naive", 8).processes, layout("naive", 8).threads) == (8, None)
    assert (layout("intraop", 8).processes, layout("intraop", 8).threads) == (1, 8)
    assert (layout("pinned", 16, "gpu", 4).processes, layout("pinned", 16, "gpu", 4).threads) == (4, 4)
    with pytest.raises(ConfigError, match="^embed: policy: 'greedy' is not one of pinned, naive, intraop$"):
        layout("greedy", 2)


def test_text_storage_is_ragged_unless_full_is_asked(demo, repo_root):
    import yaml

    from diffscale import vocab

    schema = yaml.safe_load((repo_root / "diffscale" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["embed"]["properties"]["text_storage"]["enum"] == list(vocab.TEXT_STORAGE)
    assert settings_for(demo, "text", "serial")["text_storage"] == "ragged"
    assert settings_for({**demo, "embed": {**demo["embed"], "text_storage": "full"}}, "text", "serial")["text_storage"] == "full"
    assert "text_storage" not in settings_for(demo, "images", "serial")
    with pytest.raises(ConfigError, match="embed.text_storage: 'padded' is not one of ragged, full"):
        EmbedSettings.from_dict({**settings_for(demo, "text", "serial"), "text_storage": "padded"})


def test_scaling_images_limits_the_cpu_runs_not_the_gpu_ones(full):
    assert full["embed"]["scaling_images"] == 2048  # a fixed strong-scaling workload on the cluster
    for backend in ("serial", "multiprocessing", "joblib", "dask"):
        assert EmbedSettings.from_dict(settings_for(full, "images", backend)).max_images == 2048
    assert "max_images" not in settings_for(full, "text", "gpu")  # the training source: every image


@pytest.mark.parametrize("change,message", [
    ({"modality": "audio"}, "embed settings: modality: 'audio' is not one of"),
    ({"dtype": "fp8"}, "embed.dtype: 'fp8' is not one of"),
    ({"cpu_dtype": "fp8"}, "embed.cpu_dtype: 'fp8' is not one of"),
    ({"image_size": 0}, "embed.image_size: required for the images modality"),
    ({"image_size": None}, "embed.image_size: required for the images modality"),
    ({"colour": "red"}, "embed settings: .*unexpected keyword argument 'colour'")])
def test_settings_of_a_run_are_checked_field_by_field(demo, change, message):
    with pytest.raises(ConfigError, match=message):
        EmbedSettings.from_dict({**settings_for(demo, "images", "serial"), **change})


def test_a_run_depends_on_where_it_computes_not_on_its_price_and_dask_only_on_dask(full):
    gpu = settings_for(full, "images", "gpu")
    assert set(gpu["hardware"]) <= {"partition", "device", "gpu_model", "gpus_per_node"}
    assert gpu["hardware"] == {"partition": "a100", "device": "cuda", "gpu_model": "a100", "gpus_per_node": 4}
    assert "dask" not in settings_for(full, "images", "joblib") and "dask" in settings_for(full, "images", "dask")
