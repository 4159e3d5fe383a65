"""Meta's LLaMA tokenizer interface over a SentencePiece model (our own implementation).

Same surface as `llama/tokenizer.py`: `Tokenizer(model_path)`, `encode(s, bos, eos)`, `decode(ids)`, `n_words`,
`bos_id`, `eos_id`, `pad_id`. Llama's SentencePiece model has no pad piece (`sp.pad_id() == -1`); here `pad_id` is 0
(`<unk>`), which is never a target: padding is always masked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sentencepiece import SentencePieceProcessor

__all__ = ["Tokenizer"]


class Tokenizer:
    "Encode / decode text with a SentencePiece model, Llama's special ids (unk 0, bos 1, eos 2)."
    def __init__(self, model_path: str | Path):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path}")
        self.model_path = path
        self.sp_model = SentencePieceProcessor()
        if not self.sp_model.Load(str(path)):
            raise ValueError(f"{path}: not a SentencePiece model")
        self.n_words: int = self.sp_model.vocab_size()
        self.bos_id: int = self.sp_model.bos_id()
        self.eos_id: int = self.sp_model.eos_id()
        self.pad_id: int = 0
        if self.sp_model.GetPieceSize() != self.n_words:
            raise ValueError(f"{path}: piece size {self.sp_model.GetPieceSize()} != vocab size {self.n_words}")

    def encode(self, s: str, bos: bool, eos: bool) -> list[int]:
        "Token ids of `s`, optionally framed by BOS / EOS."
        if not isinstance(s, str):
            raise TypeError(f"Tokenizer.encode expects str, got {type(s).__name__}")
        t = self.sp_model.encode(s)
        if bos:
            t = [self.bos_id] + t
        if eos:
            t = t + [self.eos_id]
        return t

    def decode(self, t: Sequence[int]) -> str:
        "Text of token ids (special ids decode to nothing)."
        return self.sp_model.decode([int(i) for i in t])

    def __repr__(self) -> str:
        return f"Tokenizer({self.model_path.name}, n_words={self.n_words})"
