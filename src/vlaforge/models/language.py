"""Instruction encoder: token embeddings with learned positions and one transformer block, and
the text encoders that choose its tokenizer and embeddings (``--policy.text_encoder``).

- ``words``: the word tokenizer over the training instructions and embeddings learned from
  scratch; a word never seen in training is <unk>.
- ``wordllama``: the Llama-2 32k subword vocabulary and its 256-d token embeddings from the
  ``wordllama`` wheel (Miller 2024, MIT licence; the embedding table distilled from large
  language models' token embeddings so that pooled token vectors give sentence embeddings). The
  table is frozen by default (``--policy.text_finetune`` trains it too) and a learned linear map
  takes it to d_model, so an unseen word ("crimson", "sphere") starts near its synonyms.

A text encoder is one class registered in ``TEXT_ENCODERS`` with ``embed_dim`` (None: learned
d_model embeddings), ``tokenizer(texts)`` and ``pretrained()`` -> (table, origin) or None.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from vlaforge.data.tokenizer import SubwordTokenizer, WordTokenizer
from vlaforge.models.transformer import MLP, Attention, Block
from vlaforge.registry import TEXT_ENCODERS


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int, max_tokens: int, d_model: int, n_heads: int, dropout: float,
                 embed_dim: int | None = None, train_embed: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim or d_model)
        self.embed.weight.requires_grad_(train_embed)
        self.proj = nn.Linear(embed_dim, d_model) if embed_dim else None
        self.pos = nn.Parameter(torch.zeros(1, max_tokens, d_model))
        self.block = Block(d_model, Attention(d_model, n_heads, dropout), MLP(d_model), dropout)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids -> (B, L, d_model) features and the (B, L) mask of real tokens."""
        mask = tokens != 0
        x = self.embed(tokens)
        if self.proj is not None:
            x = self.proj(x)
        x = x + self.pos[:, : tokens.shape[1]]
        return self.block(x, mask), mask


@TEXT_ENCODERS.register("words")
class Words:
    embed_dim = None

    @staticmethod
    def tokenizer(texts: list[str]) -> WordTokenizer:
        return WordTokenizer.from_texts(texts)

    @staticmethod
    def pretrained() -> None:
        return None


@TEXT_ENCODERS.register("wordllama")
class WordLlama:
    embed_dim = 256
    TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
    WEIGHTS = "weights/l2_supercat_256.safetensors"

    @classmethod
    def files(cls) -> tuple[Path, Path]:
        """The tokenizer JSON and embedding table inside the installed wheel (found without
        importing the package; nothing is downloaded)."""
        spec = importlib.util.find_spec("wordllama")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("--policy.text_encoder=wordllama needs the wordllama package: "
                              "pip install 'vlaforge[language]'")
        root = Path(next(iter(spec.submodule_search_locations)))
        paths = root / cls.TOKENIZER, root / cls.WEIGHTS
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"the installed wordllama package lacks {p}")
        return paths

    @classmethod
    def tokenizer(cls, texts: list[str]) -> SubwordTokenizer:
        return SubwordTokenizer(cls.files()[0])

    @classmethod
    def pretrained(cls) -> tuple[torch.Tensor, dict]:
        """The (32000, 256) float32 table, scaled to the per-element RMS of 1 that learned
        embeddings start with (relative row norms kept), and where it came from, for the
        policy's config.json."""
        tok_path, path = cls.files()
        table = load_file(str(path))["embedding.weight"].float()
        table = table / table.norm(dim=1).pow(2).mean().sqrt() * table.shape[1] ** 0.5
        origin = {"package": "wordllama", "version": importlib.metadata.version("wordllama"), "license": "MIT",
                  "weights": cls.WEIGHTS, "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                  "tokenizer": cls.TOKENIZER, "source": "PyPI wheel; token embeddings of the Llama-2 vocabulary"}
        return table, origin
