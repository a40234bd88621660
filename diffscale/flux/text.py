"""FLUX's text conditioning: T5 sequence embeddings and the CLIP pooled embedding, as FluxPipeline
computes them (`_get_t5_prompt_embeds`, `_get_clip_prompt_embeds`).

Tokenizers, offline: CLIP's BPE comes from diffscale.tokenize (the pretrained repo's files, or the
bundled vocabulary). T5's comes from the pretrained repo (`tokenizer_2`, read by the `tokenizers`
library); a random-weights T5 has no vocabulary worth the name, so it gets a deterministic word
hash into its id range (ids mean nothing to random weights; timings and shapes are real).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from diffscale import models
from diffscale.errors import ModelSpecError
from diffscale.tokenize import tokenizer_for

T5_PAD, T5_EOS = 0, 1


class HashT5Tokenizer:
    """Words -> stable ids in [2, vocab) followed by </s>, padded with 0, as T5's tokenizer pads."""

    source = "word hash (random-weights T5)"

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, texts: list[str], length: int):
        import torch

        ids = torch.full((len(texts), length), T5_PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            words = [2 + int.from_bytes(hashlib.blake2s(w.encode()).digest()[:4], "little") % (self.vocab_size - 2)
                     for w in text.lower().split()][: length - 1]
            row = words + [T5_EOS]
            ids[i, : len(row)] = torch.tensor(row)
        return ids


class PretrainedT5Tokenizer:
    def __init__(self, spec: models.ModelSpec):
        from transformers import T5TokenizerFast

        ref = Path(spec.pretrained).expanduser()
        try:
            if models.looks_like_path(spec.pretrained):
                folder = ref.parent / "tokenizer_2" if spec.subfolder else ref / "tokenizer_2"
                self._tok = T5TokenizerFast.from_pretrained(str(folder if folder.is_dir() else ref))
            else:
                self._tok = T5TokenizerFast.from_pretrained(spec.pretrained, subfolder="tokenizer_2")
        except (OSError, ValueError) as exc:
            raise ModelSpecError(f"models.flux_t5.pretrained: no T5 tokenizer for {spec.pretrained!r} "
                                 f"({str(exc).splitlines()[0]})") from None
        self.source = spec.pretrained

    def __call__(self, texts: list[str], length: int):
        return self._tok(texts, padding="max_length", max_length=length, truncation=True,
                         return_tensors="pt").input_ids


class FluxText:
    """CLIP (pooled) and T5 (sequence) encoders of FLUX with their tokenizers."""

    def __init__(self, clip_spec: dict, t5_spec: dict, max_sequence_length: int = 256, device: str = "cpu",
                 dtype=None):
        self.clip_spec = models.parse_spec("flux_clip", clip_spec)
        self.t5_spec = models.parse_spec("flux_t5", t5_spec)
        self.device, self.length = device, max_sequence_length
        self.clip = models.build("flux_clip", self.clip_spec, device=device, dtype=dtype)
        self.t5 = models.build("flux_t5", self.t5_spec, device=device, dtype=dtype)
        self.clip_tokenizer = tokenizer_for(self.clip_spec)
        self.t5_tokenizer = (PretrainedT5Tokenizer(self.t5_spec) if self.t5_spec.pretrained
                             else HashT5Tokenizer(self.t5.config.vocab_size))

    def __call__(self, prompts: list[str]):
        """(T5 hidden states [n, L, D_t5], CLIP pooled [n, D_clip]), fp32, on the encoders' device."""
        import torch

        clip_ids = torch.from_numpy(self.clip_tokenizer(list(prompts)).input_ids).to(self.device)
        t5_ids = self.t5_tokenizer(list(prompts), self.length).to(self.device)
        with torch.inference_mode():
            pooled = self.clip(input_ids=clip_ids).pooler_output
            hidden = self.t5(input_ids=t5_ids).last_hidden_state
        return hidden.float().clone(), pooled.float().clone()

    def describe(self) -> list[dict]:
        return [{**self.clip_spec.describe(), "tokenizer": self.clip_tokenizer.source},
                {**self.t5_spec.describe(), "tokenizer": self.t5_tokenizer.source}]
