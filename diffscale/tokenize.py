"""CLIP BPE tokenization, offline.

Two sources of the same vocabulary:
- a pretrained text encoder's own tokenizer files (transformers `CLIPTokenizer.from_pretrained`),
  which is what a cluster run with real weights uses;
- the vocabulary bundled in the `instant-clip-tokenizer` wheel (MIT, CLIP's 49,408 tokens), so a
  fresh clone tokenizes with the real BPE without any download.
Both give [49406, 320, 1125, 539, 320, 2368, 49407] for "a photo of a cat".

Sequences are padded with the end-of-text id, as Stable Diffusion's tokenizer does, and come with
an attention mask (1 for start, text and end tokens) and a flag per text saying whether it was
truncated to fit the 77-token context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffscale.errors import ModelSpecError

START_OF_TEXT = 49406
END_OF_TEXT = 49407
CONTEXT_LENGTH = 77


@dataclass
class TokenBatch:
    input_ids: np.ndarray  # int64 [N, context]
    attention_mask: np.ndarray  # int64 [N, context]
    truncated: np.ndarray  # bool [N]
    lengths: np.ndarray  # int64 [N]: tokens before truncation, start/end included


class ClipTokenizer:
    """CLIP tokenizer with SD's padding convention; `source` records where the vocab came from."""

    def __init__(self, pretrained_dir: str | Path | None = None, context_length: int = CONTEXT_LENGTH):
        self.context_length = context_length
        if pretrained_dir is None:
            import instant_clip_tokenizer

            self._bundled = instant_clip_tokenizer.Tokenizer()
            self._hf = None
            self.source = "instant-clip-tokenizer (bundled CLIP BPE vocab)"
        else:
            from transformers import CLIPTokenizer

            folder = Path(pretrained_dir)
            if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
                raise ModelSpecError(f"{folder}: expected a CLIP tokenizer folder with vocab.json and merges.txt")
            # transformers 5 ignores vocab_file=/merges_file= arguments; from_pretrained reads them.
            self._hf = CLIPTokenizer.from_pretrained(str(folder), model_max_length=context_length)
            self._bundled = None
            self.source = str(folder)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text without start/end tokens and without truncation."""
        if self._hf is not None:
            return self._hf(text, add_special_tokens=False, truncation=False)["input_ids"]
        return list(self._bundled.encode(text.lower()))

    def __call__(self, texts: list[str]) -> TokenBatch:
        n, ctx = len(texts), self.context_length
        ids = np.full((n, ctx), END_OF_TEXT, dtype=np.int64)
        mask = np.zeros((n, ctx), dtype=np.int64)
        truncated = np.zeros(n, dtype=bool)
        lengths = np.zeros(n, dtype=np.int64)
        for i, text in enumerate(texts):
            body = self.encode(text)
            lengths[i] = len(body) + 2
            if len(body) > ctx - 2:
                body = body[: ctx - 2]
                truncated[i] = True
            row = [START_OF_TEXT, *body, END_OF_TEXT]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return TokenBatch(ids, mask, truncated, lengths)


def tokenizer_for(spec) -> ClipTokenizer:
    """The tokenizer that belongs to a text-encoder spec: its own files if pretrained, else bundled."""
    from diffscale.models import looks_like_path, parse_spec

    spec = parse_spec(spec.role if hasattr(spec, "role") else "text_encoder", spec)
    if spec.pretrained is None:
        return ClipTokenizer()
    ref = Path(spec.pretrained).expanduser()
    if looks_like_path(spec.pretrained):
        # pipeline repos keep the tokenizer beside the text encoder
        for candidate in (ref / "tokenizer", ref, ref.parent / "tokenizer"):
            if (candidate / "vocab.json").is_file():
                return ClipTokenizer(candidate)
        raise ModelSpecError(f"models.{spec.role}.pretrained: no CLIP tokenizer files (vocab.json, merges.txt) "
                             f"in {ref} or {ref / 'tokenizer'}")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(spec.pretrained, allow_patterns=["*vocab.json", "*merges.txt", "*tokenizer*"])
    except Exception as exc:  # hub errors are many; the message names the id
        raise ModelSpecError(f"models.{spec.role}.pretrained: cannot fetch tokenizer of {spec.pretrained!r}: "
                             f"{str(exc).splitlines()[0]}") from None
    folder = Path(folder)
    return ClipTokenizer(folder / "tokenizer" if (folder / "tokenizer" / "vocab.json").is_file() else folder)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_hf_tokenizer_files(bpe_gz: str | Path, out_dir: str | Path) -> Path:
    """Turn CLIP's `bpe_simple_vocab_16e6.txt.gz` into the vocab.json + merges.txt transformers reads.

    Same construction as openai/CLIP's simple_tokenizer, so ids agree with the original.
    """
    import gzip
    import json

    from diffscale import atomic

    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(out_dir)
    atomic.write_text(out / "vocab.json", json.dumps({tok: i for i, tok in enumerate(vocab)}))
    atomic.write_text(out / "merges.txt", "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return out
