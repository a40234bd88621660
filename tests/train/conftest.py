"""Fixtures of the training tests: tiny embedding runs in the real shard format, run configs,
and one trained run directory (tiny U-Net, cross_attention_dim 32 = the tiny text encoder's width)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffscale.config import load_config
from diffscale.train.config import run_config
from diffscale.train.synthetic import write_embedding_runs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def demo_config() -> dict:
    return load_config(ROOT / "config.yaml")


@pytest.fixture(scope="session")
def embeddings(tmp_path_factory) -> tuple[Path, Path]:
    """16 images of 4x8x8 latents, 2 captions each (32 samples), in 8-item shards."""
    return write_embedding_runs(tmp_path_factory.mktemp("embed"), images=16, captions_per_image=2)


@pytest.fixture
def make_run_config(demo_config):
    """A run config of the demo, shortened: 4 steps of global batch 8, a row and checkpoint per step or two."""

    def make(precision: str = "fp32", gpus: int = 1, **train) -> dict:
        cfg = run_config(demo_config, "local", precision, gpus)
        cfg["train"].update(steps=4, batch_size=8, grad_accum=1, warmup_steps=0, log_every=1, checkpoint_every=2,
                            loader_workers=0)
        cfg["train"].update(train)
        return cfg

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, embeddings, demo_config) -> Path:
    """A finished run directory (3 steps) for the generation tests."""
    from diffscale.train.unet import train

    cfg = run_config(demo_config, "local", "fp32", 1)
    cfg["train"].update(steps=3, batch_size=4, warmup_steps=0, log_every=1, checkpoint_every=3, loader_workers=0)
    out = tmp_path_factory.mktemp("run") / "fp32-g1"
    train(cfg, *embeddings, out)
    return out
