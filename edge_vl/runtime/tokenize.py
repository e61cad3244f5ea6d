"""Text → fixed-length token ids with the bundle's ``tokenizer.json`` (the ``tokenizers`` library).

``tokenizer.json`` is what transformers' fast tokenizer saves; loading it with ``tokenizers``
gives the same ids without importing transformers. Texts longer than ``max_length`` tokens
(special tokens included) are truncated at the end, as during training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from edge_vl.errors import InputError

#: model inputs with one value per text token (a text bucket cuts them to its length)
TEXT_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})


class TextEncoder:
    """Encodes texts into ``input_ids`` and ``attention_mask`` (int64, shape ``(N, max_length)``)."""

    def __init__(self, tokenizer_file: str | Path, *, max_length: int, pad_id: int, pad_token: str):
        self.max_length = int(max_length)
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.enable_truncation(max_length=self.max_length)
        self._tok.enable_padding(length=self.max_length, pad_id=int(pad_id), pad_token=pad_token)

    @classmethod
    def from_spec(cls, directory: str | Path, spec: Mapping[str, Any]) -> TextEncoder:
        """Build from a manifest's ``preprocessing.text`` block; files are relative to ``directory``."""
        return cls(
            Path(directory) / spec["tokenizer"],
            max_length=spec["max_length"],
            pad_id=spec["pad_id"],
            pad_token=spec["pad_token"],
        )

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenize ``texts``; raises :class:`InputError` for a non-string or blank text."""
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"text #{i} must be a str, got {type(t).__name__}")
            if not t.strip():
                raise InputError(f"text #{i} is empty")
        encodings = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask}
