"""Device placement and the GPU capability check (diffscale.hardware), on faked CUDA devices."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from diffscale import hardware
from diffscale.config import load_config
from diffscale.errors import ConfigError, HardwareError

# torch.cuda.get_arch_list() of real builds
ARCH_TORCH_2_CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
ARCH_TORCH_1_13_CU117 = ["sm_37", "sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86"]


@pytest.fixture(scope="module")
def full(repo_root):
    return load_config(repo_root / "config" / "full.yaml")


def fake_gpus(monkeypatch, name: str, capability: tuple[int, int], arch_list: list[str], count: int = 4):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)


@pytest.mark.parametrize("capability, arch_list, supported", [
    ((3, 7), ARCH_TORCH_2_CU126, False),  # K80 under a current build
    ((3, 7), ARCH_TORCH_1_13_CU117, True),  # K80 under train-k80's build
    ((8, 0), ARCH_TORCH_2_CU126, True),  # A100
    ((8, 6), ["sm_80"], True),  # A40 runs sm_80 binaries (same major, higher minor)
    ((8, 6), ["sm_86"], True),  # ...and its own
    ((8, 6), ["sm_89"], False),  # ...never a higher minor's
    ((8, 0), ["sm_86"], False),  # ...but not the reverse
    ((9, 0), ["sm_80", "compute_80"], True),  # PTX is JIT-compiled for newer devices
    ((8, 0), ["sm_70", "compute_80"], True),  # ...and for its own capability
    ((7, 0), ["sm_80", "compute_80"], False),  # ...never for older ones
    ((9, 0), ["sm_90a"], True),  # arch-specific suffixes
    ((10, 0), ["sm_100f", "sm_120"], True),
])
def test_arch_supported(capability, arch_list, supported):
    assert hardware.arch_supported(capability, arch_list) is supported


def test_k80_under_a_current_pytorch_fails_at_once_naming_partition_and_env(full, monkeypatch):
    fake_gpus(monkeypatch, "Tesla K80", (3, 7), ARCH_TORCH_2_CU126)
    with pytest.raises(HardwareError) as err:
        hardware.resolve(full, "k80", 2)
    message = str(err.value)
    assert "hardware.k80 (partition k80)" in message
    assert "Tesla K80, compute capability 3.7" in message
    assert "sm_50 sm_60" in message
    assert "run it in envs/train-k80.yaml" in message


def test_k80_under_the_k80_envs_pytorch_is_placed_on_cuda(full, monkeypatch):
    fake_gpus(monkeypatch, "Tesla K80", (3, 7), ARCH_TORCH_1_13_CU117)
    placement = hardware.resolve(full, "k80", 2)
    assert placement == hardware.Placement("cuda", 2, "k80")
    assert [placement.device_for(r) for r in range(2)] == ["cuda:0", "cuda:1"]


def test_unsupported_gpu_without_an_override_env_says_where_to_name_one(full, monkeypatch):
    fake_gpus(monkeypatch, "NVIDIA A100", (8, 0), ["sm_90"])
    with pytest.raises(HardwareError, match=r"partition a100\).*set hardware\.a100\.conda_env"):
        hardware.resolve(full, "a100", 1)


def test_no_visible_gpu_never_falls_back_to_the_cpu(full, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HardwareError, match=r"hardware\.a40 \(partition a40\): device cuda requested but no usable GPU"):
        hardware.resolve(full, "a40", 1)


def test_no_visible_gpu_says_why_in_cudas_own_words(full, monkeypatch):
    """A driver older than the PyTorch build needs only warns, once, in is_available(); the error
    carries CUDA initialisation's first sentence."""
    def old_driver():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040). Please update "
                           "your GPU driver by downloading and installing a new version from the URL: "
                           "http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", old_driver)
    with pytest.raises(HardwareError) as caught:
        hardware.resolve(full, "a40", 1)
    assert str(caught.value) == (
        f"hardware.a40 (partition a40): device cuda requested but no usable GPU is visible (torch {torch.__version__}, "
        f"CUDA build: {torch.version.cuda or 'none'}; The NVIDIA driver on your system is too old (found version 11040))")


def test_fewer_visible_gpus_than_the_job_asked_for(full, monkeypatch):
    fake_gpus(monkeypatch, "NVIDIA A40", (8, 6), ARCH_TORCH_2_CU126, count=2)
    with pytest.raises(HardwareError, match="4 GPUs requested but 2 visible"):
        hardware.resolve(full, "a40", 4)


def test_exactly_as_many_visible_gpus_as_the_job_asked_for_is_enough(full, monkeypatch):
    fake_gpus(monkeypatch, "NVIDIA A40", (8, 6), ARCH_TORCH_2_CU126, count=2)
    placement = hardware.resolve(full, "a40", 2)
    assert (placement.device, placement.count, placement.device_for(1)) == ("cuda", 2, "cuda:1")


def test_check_device_accepts_the_last_visible_gpu_and_refuses_the_next(monkeypatch):
    fake_gpus(monkeypatch, "NVIDIA A40", (8, 6), ARCH_TORCH_2_CU126, count=2)
    monkeypatch.setattr(hardware, "cuda_problem", lambda: None)
    hardware.check_device("cuda:1", "--device")
    with pytest.raises(HardwareError) as caught:
        hardware.check_device("cuda:2", "--device")
    assert str(caught.value) == "--device: cuda:2 requested but 2 GPUs visible (cuda:0 to cuda:1)"


def test_cpu_device_entries_never_touch_cuda(full, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("CUDA queried for a cpu entry"))
    assert hardware.resolve(full, "cpu", 8) == hardware.Placement("cpu", 8, "cpu")


def test_demand_lists_every_hardware_key_with_its_largest_job(full, repo_root):
    # full: embed CPU backends up to 8 workers; a100 hosts 4-GPU embed/train/flux/ddpm jobs;
    # train runs on a40 up to 4 GPUs and on k80 up to 2; FLUX on cpu_large in 1 process.
    assert hardware.demand(full) == {"a100": 4, "a40": 4, "cpu": 8, "cpu_large": 1, "k80": 2}
    assert hardware.demand(load_config(repo_root / "config.yaml")) == {"local": 2}


def test_check_runs_a_kernel_and_records_the_placement():
    cfg = {"hardware": {"fake_a40": {"partition": "a40", "device": "cpu"}}}
    record = hardware.check(cfg, "fake_a40", 2, size=64)
    assert record["placement"] == {"device": "cpu", "count": 2, "hw": "fake_a40"}
    assert record["devices"] == [{"device": "cpu", "finite": True}]
    assert record["torch"] == torch.__version__


def test_check_fails_before_any_kernel_on_an_unsupported_gpu(full, monkeypatch):
    fake_gpus(monkeypatch, "Tesla K80", (3, 7), ARCH_TORCH_2_CU126)
    monkeypatch.setattr(torch, "randn", lambda *a, **k: pytest.fail("a kernel ran before the check"))
    with pytest.raises(HardwareError, match="envs/train-k80.yaml"):
        hardware.check(full, "k80", 1)


def _hardware_check(repo_root, tmp_path, *args):
    return subprocess.run([sys.executable, "scripts/hardware_check.py", "--hw", "x", *args,
                           "--out", str(tmp_path / "check" / "run.json")],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--hardware", "{}"], "error: --hardware: hardware.x: 'partition' is a required property"),
    (["--hardware", '{"partition": "cpu", "device": "tpu"}'],
     "error: --hardware: hardware.x.device: 'tpu' is not one of ['cpu', 'cuda']"),
    (["--gpus", "-2", "--hardware", '{"partition": "cpu", "device": "cpu"}'],
     "error: --gpus: -2 is not a positive integer (GPUs on cuda, processes on cpu)"),
])
def test_hardware_check_cli_rejects_a_bad_entry_or_count_in_one_line(repo_root, tmp_path, args, message):
    proc = _hardware_check(repo_root, tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "check").exists()


def test_resolve_rejects_an_entry_the_schema_does_not_allow():
    with pytest.raises(ConfigError, match=r"^hardware\.x\.device: 'tpu' is not one of \['cpu', 'cuda'\]$"):
        hardware.resolve({"hardware": {"x": {"partition": "cpu", "device": "tpu"}}}, "x", 1)
    with pytest.raises(ConfigError, match=r"^hardware\.x: a job uses at least 1 device, not 0$"):
        hardware.resolve({"hardware": {"x": {"partition": "cpu", "device": "cpu"}}}, "x", 0)
