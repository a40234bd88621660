"""Which device a job computes on, checked before any work starts.

A hardware entry says `device: cuda` (real GPUs) or `device: cpu` (CPU partitions, and test
clusters whose GPUs are fake). A cuda job that finds no usable GPU fails at once, naming the
partition: it never falls back to the CPU silently, which would make every timing a lie.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffscale.errors import HardwareError


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    count: int  # GPUs (cuda) or processes (cpu) the job uses
    hw: str

    def device_for(self, rank: int) -> str:
        return f"cuda:{rank}" if self.device == "cuda" else "cpu"


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a PyTorch build with `arch_list` (e.g. ['sm_50', 'sm_80', 'compute_90']) runs on a
    device of compute `capability`. Binary sm_XY runs on devices of the same major version and
    minor >= Y; PTX (compute_XY) is JIT-compiled for any device of capability >= XY."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("af")  # sm_90a, sm_100f: family/arch-specific variants
        if not digits.isdigit():
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def resolve(cfg: dict, hw: str, count: int = 1, env_hint: str | None = None) -> Placement:
    """Check that this machine can run a job of `count` devices on hardware key `hw`."""
    entry = cfg["hardware"][hw]
    where = f"hardware.{hw} (partition {entry['partition']})"
    if entry["device"] == "cpu":
        return Placement("cpu", count, hw)
    import torch

    if not torch.cuda.is_available():
        raise HardwareError(f"{where}: device cuda requested but no usable GPU is visible "
                            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'})")
    visible = torch.cuda.device_count()
    if visible < count:
        raise HardwareError(f"{where}: {count} GPUs requested but {visible} visible")
    arch_list = torch.cuda.get_arch_list()
    for i in range(count):
        capability = torch.cuda.get_device_capability(i)
        if not arch_supported(capability, arch_list):
            env = env_hint or entry.get("conda_env") or "an env whose PyTorch supports this GPU"
            raise HardwareError(
                f"{where}: GPU {i} ({torch.cuda.get_device_name(i)}, compute capability "
                f"{capability[0]}.{capability[1]}) is not supported by this PyTorch build "
                f"({' '.join(arch_list)}); use {env}")
    return Placement("cuda", count, hw)
