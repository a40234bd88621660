"""CLIP tokenization offline: real BPE ids, SD padding, masks and truncation flags."""

from __future__ import annotations

import numpy as np
import pytest

from diffscale import models
from diffscale.errors import ModelSpecError
from diffscale.tokenize import CONTEXT_LENGTH, END_OF_TEXT, ClipTokenizer, tokenizer_for, write_hf_tokenizer_files

CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


def test_bundled_vocab_gives_clip_ids():
    batch = ClipTokenizer()(["a photo of a cat"])
    assert batch.input_ids.shape == (1, CONTEXT_LENGTH)
    assert batch.input_ids[0, :7].tolist() == CAT
    assert (batch.input_ids[0, 7:] == END_OF_TEXT).all()  # SD pads with end-of-text
    assert batch.attention_mask[0].tolist() == [1] * 7 + [0] * 70
    assert batch.lengths.tolist() == [7] and not batch.truncated[0]


def test_case_is_folded_like_clip():
    tok = ClipTokenizer()
    assert tok.encode("A Photo of a CAT") == tok.encode("a photo of a cat")


def test_long_and_empty_captions():
    batch = ClipTokenizer()(["word " * 100, ""])
    assert batch.truncated.tolist() == [True, False]
    assert batch.lengths[0] == 102
    assert batch.input_ids[0, 0] == 49406 and batch.input_ids[0, -1] == END_OF_TEXT
    assert batch.attention_mask[0].sum() == CONTEXT_LENGTH
    assert batch.input_ids[1, :2].tolist() == [49406, 49407] and batch.attention_mask[1].sum() == 2


def test_pretrained_tokenizer_files_agree_with_bundled(tmp_path, shared_data):
    """transformers' CLIPTokenizer on vocab files built from CLIP's own BPE merges."""
    folder = write_hf_tokenizer_files(shared_data / "clip-vocab" / "bpe_simple_vocab_16e6.txt.gz", tmp_path / "tok")
    hf, bundled = ClipTokenizer(folder), ClipTokenizer()
    texts = ["a photo of a cat", "Two men riding skis down a snowy slope.", "A chef's knife, 3 tomatoes & a bowl!"]
    assert hf(texts).input_ids[0, :7].tolist() == CAT
    np.testing.assert_array_equal(hf(texts).input_ids, bundled(texts).input_ids)


def test_tokenizer_for_a_pretrained_text_encoder_dir(tmp_path, shared_data):
    write_hf_tokenizer_files(shared_data / "clip-vocab" / "bpe_simple_vocab_16e6.txt.gz", tmp_path / "pipe" / "tokenizer")
    models.build("text_encoder", {"random": "tiny"}).save_pretrained(tmp_path / "pipe" / "text_encoder")
    spec = models.parse_spec("text_encoder", {"pretrained": str(tmp_path / "pipe"), "subfolder": "text_encoder"})
    tok = tokenizer_for(spec)
    assert tok.source == str(tmp_path / "pipe" / "tokenizer")
    assert tok(["a photo of a cat"]).input_ids[0, :7].tolist() == CAT


def test_tokenizer_for_random_spec_is_bundled():
    assert "bundled" in tokenizer_for(models.parse_spec("text_encoder", {"random": "tiny"})).source


def test_missing_tokenizer_files_are_named(tmp_path):
    models.build("text_encoder", {"random": "tiny"}).save_pretrained(tmp_path / "te")
    with pytest.raises(ModelSpecError, match="no CLIP tokenizer files"):
        tokenizer_for(models.parse_spec("text_encoder", {"pretrained": str(tmp_path / "te")}))
