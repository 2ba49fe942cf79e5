"""Instruction encoder: word embeddings with learned positions and one transformer block."""

from __future__ import annotations

import torch
from torch import nn

from vlaforge.models.transformer import MLP, Attention, Block


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int, max_tokens: int, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_tokens, d_model))
        self.block = Block(d_model, Attention(d_model, n_heads, dropout), MLP(d_model), dropout)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids -> (B, L, d_model) features and the (B, L) mask of real tokens."""
        mask = tokens != 0
        x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
        return self.block(x, mask), mask
