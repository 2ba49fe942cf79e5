"""Built-in word tokenizer: lowercase words, vocabulary taken from the training instructions.

Unknown words map to <unk>, so held-out paraphrases are measured honestly rather than leaked
into the vocabulary.
"""

from __future__ import annotations

import re

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z]+")


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
        """Token ids padded with 0 to ``max_len`` (longer instructions are cut)."""
        ids = [self.index.get(w, 1) for w in words(text)][:max_len]
        return ids + [0] * (max_len - len(ids))
