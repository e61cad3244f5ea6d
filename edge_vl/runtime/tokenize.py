"""Text → fixed-length token ids with the bundle's ``tokenizer.json`` (the ``tokenizers`` library).

``tokenizer.json`` is what transformers' fast tokenizer saves; loading it with ``tokenizers``
gives the same ids without importing transformers. Texts longer than ``max_length`` tokens
(special tokens included) are truncated at the end, as during training. A text is first cut to
:data:`MAX_CHARS_PER_TOKEN` characters per token of ``max_length``, so a megabyte of text costs
no more than a sentence (no token of a real tokenizer spans that many characters).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edge_vl.errors import BundleError, InputError
from edge_vl.manifest import TEXT_INPUTS as TEXT_INPUTS
from edge_vl.manifest import TextSpec

#: characters kept per token of ``max_length`` before tokenizing (see the module docstring)
MAX_CHARS_PER_TOKEN = 128


class TextEncoder:
    """Encodes texts into ``input_ids`` and ``attention_mask`` (int64, shape ``(N, max_length)``).

    Raises:
        BundleError: the tokenizer JSON cannot be read by ``tokenizers``.
    """

    def __init__(self, tokenizer_json: str, spec: TextSpec, *, source: str = "tokenizer.json"):
        self.max_length = spec.max_length
        self.max_chars = spec.max_length * MAX_CHARS_PER_TOKEN
        try:
            self._tok = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise BundleError(
                f"{source}: not a tokenizer file the tokenizers library can read ({e})"
            ) from None
        self._tok.enable_truncation(max_length=self.max_length)
        self._tok.enable_padding(length=self.max_length, pad_id=spec.pad_id, pad_token=spec.pad_token)

    @classmethod
    def from_spec(cls, directory: str | Path, spec: TextSpec) -> TextEncoder:
        """From ``spec.tokenizer`` in ``directory`` (build time; the device reads verified bytes)."""
        path = Path(directory) / spec.tokenizer
        return cls(path.read_text(encoding="utf-8"), spec, source=str(path))

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenize ``texts``; raises :class:`InputError` for a non-string, blank or invalid text."""
        cut = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"text #{i} must be a str, got {type(t).__name__}")
            if not t.strip():
                raise InputError(f"text #{i} is empty")
            t = t[: self.max_chars]
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(f"text #{i} is not valid Unicode (it holds a lone surrogate)") from None
            cut.append(t)
        encodings = self._tok.encode_batch(cut)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask}
