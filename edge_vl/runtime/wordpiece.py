"""BERT's WordPiece tokenizer, read from a ``tokenizer.json``, in plain Python.

The device install needs no ``tokenizers`` (and none of the hub libraries it brings) for the
tokenizers ViLT, METER-style models and edge-vl-mini use: ``BertNormalizer`` (clean text, spaces
around CJK characters, accents stripped, lower case), ``BertPreTokenizer`` (split on white space,
punctuation alone), greedy longest-match ``WordPiece`` with a ``##`` continuation prefix, special
tokens matched in the raw text first, and a ``[CLS] $A [SEP]`` template. It gives the ids the
``tokenizers`` library gives (``tests/test_runtime.py`` compares them on a corpus); any other
tokenizer kind is left to that library (:func:`edge_vl.runtime.tokenize.load_tokenizer`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any


class Unsupported(ValueError):
    """A tokenizer.json this module does not implement (another model, normalizer or template)."""


class WordPieceTokenizer:
    """Encodes one text to ids with its special tokens (the template of a single sequence)."""

    def __init__(self, spec: Mapping[str, Any]):
        model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
        if (
            model.get("type") != "WordPiece"
            or (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer"
        ):
            raise Unsupported("not a BERT WordPiece tokenizer")
        if normalizer.get("type") != "BertNormalizer":
            raise Unsupported(f"normalizer {normalizer.get('type')!r}")
        self.vocab: dict[str, int] = dict(model["vocab"])
        self.unk = self.vocab[model["unk_token"]]
        self.prefix = model.get("continuing_subword_prefix", "##")
        self.max_chars = int(model.get("max_input_chars_per_word", 100))
        self.clean = normalizer.get("clean_text", True)
        self.chinese = normalizer.get("handle_chinese_chars", True)
        self.lowercase = normalizer.get("lowercase", True)
        strip = normalizer.get("strip_accents")
        self.strip_accents = self.lowercase if strip is None else bool(strip)
        self.added = {}
        for token in spec.get("added_tokens") or []:
            if (
                token.get("normalized")
                or token.get("lstrip")
                or token.get("rstrip")
                or token.get("single_word")
            ):
                raise Unsupported(f"added token {token.get('content')!r} with matching options")
            self.added[token["content"]] = token["id"]
        self.before, self.after = _template(spec.get("post_processor") or {})

    @property
    def special_count(self) -> int:
        """Special tokens the template adds around a text."""
        return len(self.before) + len(self.after)

    def encode(self, text: str, max_length: int) -> list[int]:
        """Ids of ``text`` with its special tokens, the text cut to fit ``max_length`` in all."""
        ids = self.tokens(text)[: max(0, max_length - self.special_count)]
        return [*self.before, *ids, *self.after]

    def tokens(self, text: str) -> list[int]:
        """Ids of ``text`` without the template's special tokens."""
        ids: list[int] = []
        for segment, special in self._split_added(text):
            if special is not None:
                ids.append(special)
                continue
            for word in _pre_tokenize(self._normalize(segment)):
                ids += self._word_pieces(word)
        return ids

    # -- the pipeline -----------------------------------------------------------------------
    def _split_added(self, text: str) -> list[tuple[str, int | None]]:
        """``text`` cut around its added (special) tokens, leftmost and then longest first."""
        out: list[tuple[str, int | None]] = []
        start = i = 0
        names = sorted(self.added, key=len, reverse=True)
        while i < len(text):
            match = next((name for name in names if text.startswith(name, i)), None)
            if match is None:
                i += 1
                continue
            if start < i:
                out.append((text[start:i], None))
            out.append((match, self.added[match]))
            i = start = i + len(match)
        if start < len(text):
            out.append((text[start:], None))
        return out

    def _normalize(self, text: str) -> str:
        chars = []
        for ch in text:
            code = ord(ch)
            if self.clean:
                if code == 0 or code == 0xFFFD or _is_control(ch):
                    continue
                if _is_whitespace(ch):
                    ch = " "
            if self.chinese and _is_chinese(code):
                chars += [" ", ch, " "]
            else:
                chars.append(ch)
        text = "".join(chars)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        # character by character, as Rust's to_lowercase: str.lower() would write a word-final Σ as ς
        return "".join(c.lower() for c in text) if self.lowercase else text

    def _word_pieces(self, word: str) -> list[int]:
        if len(word) > self.max_chars:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    pieces.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return pieces


def _template(post: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """The special-token ids before and after a single sequence (TemplateProcessing or BertProcessing)."""
    if post.get("type") == "BertProcessing":
        return [post["cls"][1]], [post["sep"][1]]
    if post.get("type") != "TemplateProcessing":
        raise Unsupported(f"post-processor {post.get('type')!r}")
    before, after, seen = [], [], False
    for item in post["single"]:
        if "Sequence" in item:
            seen = True
            continue
        ids = post["special_tokens"][item["SpecialToken"]["id"]]["ids"]
        (after if seen else before).extend(ids)
    return before, after


def _pre_tokenize(text: str) -> list[str]:
    """BERT's pre-tokenizer: split on white space; every punctuation character is a word of its own."""
    words, current = [], []
    for ch in text:
        if ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        elif _is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    code = ord(ch)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_chinese(code: int) -> bool:
    return (
        0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F or 0x2B740 <= code <= 0x2B81F or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F
    )  # fmt: skip
