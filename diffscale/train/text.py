"""Prompt encoding shared by training and generation, so both condition the U-Net alike.

The conditioning is the text encoder's last hidden state over all 77 positions (CLIP's tokenizer
pads with the end-of-text token). A U-Net trained on full-77 text embeddings attends to every
position, as Stable Diffusion does; one trained on ragged embeddings (only the real tokens stored,
embed.text_storage: ragged) attends with the token mask, so `encode` returns it alongside.

Classifier-free guidance needs an "unconditional" embedding. We use the embedding of the empty
prompt "" by the same text encoder, as Stable Diffusion does, rather than zeros or a learned
vector: it is a point the text encoder can actually produce, and generation can recompute it.
Training computes it once and stores it in every checkpoint (`null_embedding`); generation
recomputes it with the text encoder it loads and refuses to run if the two differ, which catches
a text encoder other than the one the model was trained with.
"""

from __future__ import annotations

from diffscale import models
from diffscale.tokenize import tokenizer_for
from diffscale.train.core import precision


def as_stored(hidden, dtype: str):
    """fp32 hidden states rounded through `dtype`, the one the training captions were stored in
    (a gpu embedding run stores bf16): the empty prompt in training and the prompts at generation
    then condition the U-Net at the precision its captions had, not 0.2 % off it."""
    import torch

    return hidden.to(getattr(torch, dtype)).float()


class PromptEncoder:
    """The configured text encoder (models.text_encoder) with its tokenizer."""

    def __init__(self, spec: dict, device: str = "cpu"):
        self.spec = models.parse_spec("text_encoder", spec)
        self.device = device
        self.model = models.build("text_encoder", self.spec, device=device)
        self.tokenizer = tokenizer_for(self.spec)

    def __call__(self, prompts: list[str]):
        """Hidden states [n, 77, D] in fp32 on the encoder's device."""
        return self.encode(prompts)[0]

    def encode(self, prompts: list[str]):
        """Hidden states [n, 77, D] in fp32 and the token mask [n, 77] (1: a real token), on the device."""
        import torch

        tokens = self.tokenizer(list(prompts))
        ids = torch.from_numpy(tokens.input_ids).to(self.device)
        with torch.inference_mode(), precision.exact_fp32():  # a tf32 training run encodes as generation does
            hidden = self.model(input_ids=ids).last_hidden_state
        return hidden.float().clone(), torch.from_numpy(tokens.attention_mask.astype("int64")).to(self.device)

    def null_embedding(self):
        """The unconditional embedding: the empty prompt's, [1, 77, D]."""
        return self([""])

    def null_mask(self):
        """The empty prompt's token mask [1, 77]: start and end of text."""
        return self.encode([""])[1]
