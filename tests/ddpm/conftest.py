"""Fixtures of the DDPM study tests: the demo config shortened to tiny windows, a CIFAR-like set and
its uint8 cache, and one run directory per stage (tiny model, CPU), shared by the module."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from diffscale.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ddpm_config() -> dict:
    cfg = copy.deepcopy(load_config(ROOT / "config.yaml"))
    cfg["ddpm"].update(steps=2, warmup_steps=2, repeats=2, profile_steps=2, compile_backend="aot_eager")
    return cfg


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """20 random 32x32 RGB images as CIFAR stores them."""
    return np.random.default_rng(0).integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def cache(images, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddpm-data") / "cifar-uint8.npy"
    np.save(path, images)
    return path
