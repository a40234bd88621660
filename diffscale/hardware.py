"""Which device a job computes on, checked before any work starts.

A hardware entry says `device: cuda` (real GPUs) or `device: cpu` (CPU partitions, and test
clusters whose GPUs are fake). A cuda job that finds no usable GPU fails at once, naming the
partition: it never falls back to the CPU silently, which would make every timing a lie. A GPU
the installed PyTorch has no kernels for (a K80, compute capability 3.7, under a current build)
fails just as early, naming the env to run in instead.

`check` is the preflight the workflow runs once per hardware key (rule hardware_check): resolve
the placement, then run a kernel on every device, so a wrong partition, GPU request or env shows
up in one cheap job instead of hours into a study.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

import jsonschema

from diffscale import experiments
from diffscale.config import schema
from diffscale.errors import ConfigError, HardwareError


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


def cuda_problem() -> str | None:
    """None when PyTorch can use a GPU here, else why not, in words: the torch build and CUDA
    initialisation's own reason (a driver older than the build needs, no GPU allocated, a CPU-only
    build), which `is_available()` alone only warns about once per process."""
    import torch

    if torch.cuda.is_available():
        return None
    try:
        torch.cuda.init()
        reason = ""
    except Exception as exc:  # noqa: BLE001 - RuntimeError from the driver, AssertionError from a CPU-only build
        first = (str(exc).strip().splitlines() or [""])[0]
        reason = "; " + first.split(". ")[0].rstrip(".") if first else ""
    return (f"no usable GPU is visible (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}"
            f"{reason})")


def entry_schema() -> dict:
    """The config schema's definition of one hardware entry: the one owner of what an entry is."""
    return schema()["properties"]["hardware"]["additionalProperties"]


def devices() -> list[str]:
    """The devices a hardware entry may name (the schema's enum)."""
    return list(entry_schema()["properties"]["device"]["enum"])


def check_entry(entry, hw: str, source: str | None = None) -> None:
    """A ConfigError naming `source` (if given) and the key, e.g. ``--hardware: hardware.a40.device:
    'tpu' is not one of ['cpu', 'cuda']``, unless `entry` is a valid hardware entry by the schema."""
    errors = list(jsonschema.Draft202012Validator(entry_schema()).iter_errors(entry))
    if errors:
        error = max(errors, key=lambda e: len(e.absolute_path))  # the deepest: the one to act on
        path = "".join(f".{part}" for part in error.absolute_path)
        raise ConfigError(f"{source + ': ' if source else ''}hardware.{hw}{path}: {error.message}")


def check_table(table, source: str = "config") -> None:
    """check_entry of every entry of a hardware table (the config's `hardware:` mapping)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: expected a mapping of hardware keys to entries, "
                          f"not {type(table).__name__}")
    for hw, entry in table.items():
        check_entry(entry, hw, source)


def resolve(cfg: dict, hw: str, count: int = 1, env_hint: str | None = None) -> Placement:
    """Check that this machine can run a job of `count` devices on hardware key `hw`."""
    entry = cfg["hardware"][hw]
    check_entry(entry, hw)
    if count < 1:
        raise ConfigError(f"hardware.{hw}: a job uses at least 1 device, not {count}")
    where = f"hardware.{hw} (partition {entry['partition']})"
    if entry["device"] == "cpu":
        return Placement("cpu", count, hw)
    import torch

    problem = cuda_problem()
    if problem:
        raise HardwareError(f"{where}: device cuda requested but {problem}")
    visible = torch.cuda.device_count()
    if visible < count:
        raise HardwareError(f"{where}: {count} GPUs requested but {visible} visible")
    arch_list = torch.cuda.get_arch_list()
    for i in range(count):
        capability = torch.cuda.get_device_capability(i)
        if not arch_supported(capability, arch_list):
            env = env_hint or entry.get("conda_env")
            advice = (f"run it in envs/{env}.yaml" if env else
                      f"set hardware.{hw}.conda_env to an env in envs/ whose PyTorch supports it")
            raise HardwareError(
                f"{where}: GPU {i} ({torch.cuda.get_device_name(i)}, compute capability "
                f"{capability[0]}.{capability[1]}) is not supported by PyTorch {torch.__version__} "
                f"in {sys.prefix} (built for {' '.join(arch_list) or 'no CUDA arch'}); {advice}")
    return Placement("cuda", count, hw)


def demand(cfg: dict) -> dict[str, int]:
    """Every hardware key the config's studies run on, with the most devices one job there uses
    (GPUs on GPU entries, processes on CPU entries): what the preflight check must prove."""
    found: dict[str, int] = {}

    def need(hw: str, count: int) -> None:
        found[hw] = max(found.get(hw, 0), count)

    for run in experiments.embed_runs(cfg):
        need(run.hw, run.workers)
    for run in [*experiments.train_runs(cfg), *experiments.flux_runs(cfg), *experiments.ddpm_runs(cfg)]:
        need(run.hw, run.gpus)
    return dict(sorted(found.items()))


def check(cfg: dict, hw: str, count: int, size: int = 512) -> dict:
    """Resolve the placement of a `count`-device job on `hw`, then run a `size`² matmul on each
    device and synchronize: a build without kernels for the GPU fails here, not in a study."""
    placement = resolve(cfg, hw, count)
    import torch

    devices = []
    for rank in range(placement.count if placement.device == "cuda" else 1):
        device = torch.device(placement.device_for(rank))
        a = torch.randn(size, size, device=device)
        product = a @ a
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        info = {"device": str(device), "finite": bool(torch.isfinite(product).all())}
        if device.type == "cuda":
            info["name"] = torch.cuda.get_device_name(device)
            info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        devices.append(info)
    if not all(d["finite"] for d in devices):
        raise HardwareError(f"hardware.{hw}: a {size}x{size} matmul gave non-finite values on "
                            f"{[d['device'] for d in devices if not d['finite']]}")
    return {
        "placement": asdict(placement),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "arch_list": torch.cuda.get_arch_list() if torch.cuda.is_available() else [],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "devices": devices,
    }


def check_device(value: str, where: str) -> None:
    """`value` is cpu, cuda or cuda:N (the devices of a hardware entry, `devices`),
    and a cuda device is one this machine has; else one line naming `where` (the flag)."""
    kind, colon, index = value.partition(":")
    if kind not in devices() or (colon and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"{where}: expected {', '.join(devices())} or cuda:N, not {value!r}")
    if kind == "cpu":
        return
    import torch

    problem = cuda_problem()
    if problem:
        raise HardwareError(f"{where}: {value} requested but {problem}")
    visible = torch.cuda.device_count()
    if index and int(index) >= visible:
        raise HardwareError(f"{where}: {value} requested but {visible} GPUs visible (cuda:0 to cuda:{visible - 1})")
