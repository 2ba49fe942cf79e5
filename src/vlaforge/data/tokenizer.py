"""Instruction tokenizers, chosen with ``--policy.text_encoder``.

- ``words`` (``WordTokenizer``): lowercase words, vocabulary taken from the training
  instructions. Unknown words map to <unk>, so held-out paraphrases are measured honestly
  rather than leaked into the vocabulary.
- ``wordllama`` (``SubwordTokenizer``): the Llama-2 32k SentencePiece-BPE vocabulary with byte
  fallback, as shipped in the ``wordllama`` wheel; every string, unseen words included, maps to
  pieces that have pretrained embeddings (models/language.py).

Every tokenizer pads with id 0 (the model masks it) and saves itself into a policy directory:
``save(dir)`` returns the entries config.json keeps, ``load_tokenizer(dir, meta)`` reads them back.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from vlaforge.files import sha256_file

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z]+")
SUBWORD_FILE = "tokenizer.json"


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class WordTokenizer:
    def __init__(self, vocab: list[str]) -> None:
        if vocab[:2] != [PAD, UNK]:
            raise ValueError("vocabulary must start with <pad>, <unk>")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def from_texts(cls, texts: list[str]) -> "WordTokenizer":
        seen = sorted({w for t in texts for w in words(t)})
        return cls([PAD, UNK, *seen])

    def extended(self, texts: list[str]) -> "WordTokenizer":
        """This vocabulary with the new words of ``texts`` appended, so existing ids keep their meaning."""
        new = sorted({w for t in texts for w in words(t)} - set(self.index))
        return WordTokenizer([*self.vocab, *new])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, max_len: int) -> list[int]:
        """Token ids padded with 0 to ``max_len`` (longer instructions are cut). An instruction
        without a single word ("?", an emoji) is one <unk>: an all-padding instruction would
        leave the text attention nothing to attend to, and its softmax would be NaN."""
        ids = ([self.index.get(w, 1) for w in words(text)] or [1])[:max_len]
        return ids + [0] * (max_len - len(ids))

    def save(self, directory: Path) -> dict:
        return {"vocab": self.vocab}


class SubwordTokenizer:
    """A Hugging Face ``tokenizers`` JSON (a data file: parsing it runs no code).

    ``encode`` starts every instruction with the BOS piece, so even an empty or symbol-only
    instruction has one real token. Llama-2's <unk> (id 0) is never produced: byte fallback
    spells any character as byte pieces."""

    kind = "llama2-subword"
    BOS = 1

    def __init__(self, path: str | Path, sha256: str | None = None) -> None:
        """``sha256``: the file's digest when the caller has just checked it (not hashed again)."""
        from tokenizers import Tokenizer

        self.path = Path(path)
        self.sha256 = sha256 or sha256_file(self.path)
        self._tok = Tokenizer.from_file(str(self.path))
        self._size = self._tok.get_vocab_size()

    def __len__(self) -> int:
        return self._size

    def extended(self, texts: list[str]) -> "SubwordTokenizer":
        """The vocabulary is fixed: new words are spelt with existing pieces."""
        return self

    def pieces(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, max_len: int) -> list[int]:
        ids = [self.BOS, *self._tok.encode(text, add_special_tokens=False).ids][:max_len]
        return ids + [0] * (max_len - len(ids))

    def save(self, directory: Path) -> dict:
        shutil.copyfile(self.path, Path(directory) / SUBWORD_FILE)
        return {"tokenizer": {"kind": self.kind, "file": SUBWORD_FILE, "sha256": self.sha256}}


def load_tokenizer(directory: Path, meta: dict) -> WordTokenizer | SubwordTokenizer:
    """The tokenizer a policy directory's config.json describes; a subword tokenizer's file is
    ``tokenizer.json`` inside the directory and must match its recorded sha256."""
    if "tokenizer" not in meta:
        return WordTokenizer(meta["vocab"])
    entry = meta["tokenizer"]
    if entry.get("kind") != SubwordTokenizer.kind or entry.get("file") != SUBWORD_FILE:
        raise ValueError(f"{Path(directory) / 'config.json'}: tokenizer must be "
                         f"{{kind: {SubwordTokenizer.kind}, file: {SUBWORD_FILE}}}, got {entry}")
    path = Path(directory) / SUBWORD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"policy directory {directory} lacks {SUBWORD_FILE}")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):  # checked before it is parsed
        raise ValueError(f"{path} does not match the sha256 recorded in config.json")
    return SubwordTokenizer(path, digest)
