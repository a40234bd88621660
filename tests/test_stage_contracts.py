"""Contracts between stages: what one stage writes is what the next one assumes."""

from __future__ import annotations

import copy

import torch
import yaml

from diffscale.config import validate_config
from diffscale.embed import encoders
from diffscale.embed.settings import settings_for
from diffscale.tokenize import tokenizer_for
from diffscale import models
from diffscale.train.text import PromptEncoder


def test_embedded_captions_equal_what_generate_encodes(repo_root):
    """The training conditions on the embedding stage's `hidden`; generate.py encodes prompts
    itself. Both must come from the same encoder weights and tokenization, whatever the run seed."""
    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    cfg = validate_config(copy.deepcopy(cfg) | {"seed": 7})
    settings = settings_for(cfg, "text", "serial")
    embedder = encoders.embedder("text", settings["model"], "cpu", "fp32", "fp32", settings["seed"])
    captions = ["a man riding a wave on a surfboard", ""]
    ids = torch.from_numpy(tokenizer_for(models.parse_spec("text_encoder", settings["model"]))(captions).input_ids)
    stored = embedder.compute(ids)["hidden"]
    prompted = PromptEncoder(cfg["models"]["text_encoder"])(captions)
    torch.testing.assert_close(stored, prompted, rtol=0, atol=1e-6)


def test_prompts_are_encoded_without_tf32_whatever_the_training_run_set(repo_root, monkeypatch):
    """A training run with tf32 on stores the empty prompt's embedding, and generate.py recomputes
    it in plain fp32 and compares: both must encode without TF32 (it moved values by ~3e-3)."""
    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    encoder = PromptEncoder(cfg["models"]["text_encoder"])
    seen = []
    forward = encoder.model.forward
    monkeypatch.setattr(encoder.model, "forward", lambda *a, **k: seen.append(
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)) or forward(*a, **k))
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)  # as precision.allow_tf32 leaves it
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    encoder.null_embedding()
    assert seen == [(False, False)]
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # restored after
