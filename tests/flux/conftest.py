"""Fixtures of the FLUX tests: the demo's synthetic subject, prepared and cached with the tiny
models (64 px, one bucket), and short run configs of the demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffscale.config import load_config
from diffscale.data.synthetic import make_subject
from diffscale.flux import dataset as ds
from diffscale.flux.cache import build_cache
from diffscale.flux.settings import cache_config, run_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_process():
    """The loop's processes use 1 thread here (OMP_NUM_THREADS, which the loop honours): the tests
    check values, not speed, and on a loaded machine 2 spinning threads can be 20x slower."""
    import torch

    mp, threads = pytest.MonkeyPatch(), torch.get_num_threads()
    mp.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    mp.undo()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_config() -> dict:
    return load_config(ROOT / "config.yaml")


@pytest.fixture(scope="session")
def subject(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("subject") / "subject"
    make_subject(folder, n_images=5, seed=0)
    return folder


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, subject, demo_config) -> tuple[Path, Path]:
    """(prepared dataset, cache) of the 5-image demo subject at 64 px."""
    root = tmp_path_factory.mktemp("flux")
    ds.prepare(subject, root / "dataset", "sks disc", 64, [1.0], 5)
    settings = cache_config(demo_config)
    settings["max_sequence_length"] = 16
    build_cache(root / "dataset", root / "cache", settings)
    return root / "dataset", root / "cache"


@pytest.fixture
def make_run_config(demo_config):
    """A demo run config: 4 steps of global batch 2, a row every step, a checkpoint every 2."""

    def make(gpus: int = 1, steps: int = 4, **flux) -> dict:
        cfg = run_config(demo_config, "local", gpus, steps)
        cfg["flux"].update(log_every=1, checkpoint_every=2, batch_size=2, lr=1e-3)
        cfg["flux"].update(flux)
        return cfg

    return make
