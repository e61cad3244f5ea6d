"""Text → fixed-length token ids with the bundle's ``tokenizer.json``.

BERT WordPiece tokenizers (ViLT, METER-style models, edge-vl-mini) are run by
:mod:`edge_vl.runtime.wordpiece`, in plain Python, so a device needs no ``tokenizers`` package and
none of the hub libraries it brings; other kinds (CLIP's byte-level BPE) by the ``tokenizers``
library (the ``tokenizers`` extra), the code transformers uses. Either gives the ids of the
``tokenizers`` library, and the build encodes its training data with this same class. Texts are
normalised whole and then truncated to ``max_length`` tokens (special tokens included) at the end,
as during training; texts over :data:`MAX_TEXT_CHARS` characters are refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_vl.errors import BundleError, InputError, MissingExtraError
from edge_vl.manifest import TEXT_INPUTS as TEXT_INPUTS
from edge_vl.manifest import TextSpec
from edge_vl.runtime.signals import text_stats
from edge_vl.runtime.wordpiece import Unsupported, WordPieceTokenizer

#: longer texts are refused (``InputError``): this bounds the work and memory one text can cost
MAX_TEXT_CHARS = 4_000_000


class TextEncoder:
    """Encodes texts into ``input_ids`` and ``attention_mask`` (int64, shape ``(N, max_length)``).

    Raises:
        BundleError: the tokenizer JSON cannot be read.
        MissingExtraError: a tokenizer kind that needs the ``tokenizers`` package, which is missing.
    """

    def __init__(self, tokenizer_json: str, spec: TextSpec, *, source: str = "tokenizer.json"):
        self.max_length = spec.max_length
        self.pad_id = spec.pad_id
        try:
            parsed = json.loads(tokenizer_json)
            self._wordpiece: WordPieceTokenizer | None = WordPieceTokenizer(parsed)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if not isinstance(e, Unsupported):
                raise BundleError(f"{source}: not a tokenizer file edge-vl can read ({e})") from None
            self._wordpiece = None
            self._library = _library_tokenizer(tokenizer_json, spec, source)

    def stats(self, ids: np.ndarray, mask: np.ndarray) -> tuple[int, float]:
        """(tokens of an encoded text, share of them that are unknown), special tokens left out."""
        unknown: int | None
        if self._wordpiece is not None:
            special, unknown = self._wordpiece.special_count, self._wordpiece.unk
        else:
            processor = self._library.post_processor
            special = processor.num_special_tokens_to_add(False) if processor is not None else 0
            name = getattr(self._library.model, "unk_token", None)
            unknown = self._library.token_to_id(name) if name else None
        return text_stats(ids, mask, special, unknown)

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
            if len(t) > MAX_TEXT_CHARS:
                raise InputError(f"text #{i} has {len(t):,} characters; at most {MAX_TEXT_CHARS:,} are read")
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(f"text #{i} is not valid Unicode (it holds a lone surrogate)") from None
            cut.append(t)
        if self._wordpiece is None:
            encodings = self._library.encode_batch(cut)
            ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
            return {
                "input_ids": ids,
                "attention_mask": np.asarray([e.attention_mask for e in encodings], np.int64),
            }
        ids = np.full((len(cut), self.max_length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(cut), self.max_length), dtype=np.int64)
        for row, text in enumerate(cut):
            tokens = self._wordpiece.encode(text, self.max_length)
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _library_tokenizer(tokenizer_json: str, spec: TextSpec, source: str):
    """The ``tokenizers`` library's tokenizer, truncating and padding to ``spec.max_length``."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingExtraError(f"{source} (not a WordPiece tokenizer)", "tokenizers") from None
    try:
        tok = Tokenizer.from_str(tokenizer_json)
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise BundleError(f"{source}: not a tokenizer file the tokenizers library can read ({e})") from None
    tok.enable_truncation(max_length=spec.max_length)
    tok.enable_padding(length=spec.max_length, pad_id=spec.pad_id, pad_token=spec.pad_token)
    return tok
