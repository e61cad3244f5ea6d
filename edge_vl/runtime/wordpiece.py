"""BERT's WordPiece tokenizer, read from a ``tokenizer.json``, in plain Python.

The device install needs no ``tokenizers`` (and none of the hub libraries it brings) for the
tokenizers ViLT, METER-style models and edge-vl-mini use: ``BertNormalizer`` (clean text, spaces
around CJK characters, accents stripped, lower case), ``BertPreTokenizer`` (split on white space,
punctuation alone), greedy longest-match ``WordPiece`` with a ``##`` continuation prefix, special
tokens matched in the raw text first, and a ``[CLS] $A [SEP]`` template. Any other tokenizer kind
is left to that library (:mod:`edge_vl.runtime.tokenize`).

What each code point does comes from ``bert_unicode.json``, made by asking the ``tokenizers``
library itself (:mod:`edge_vl.converters.unicode_tables`), not from Python's ``unicodedata``, whose
Unicode version differs from the library's and from one Python to the next: the ids equal the
library's on every code point (``tests/test_tokenizer_parity.py``). The whole text is normalised
first (regular expressions and ``str.translate``, C speed) and truncated after, as the library
does; word pieces are looked up only until ``max_length`` tokens are found, so a megabyte of text
costs a few milliseconds.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

#: Hangul syllables, which decompose by the formula of the Unicode standard (section 3.12)
HANGUL = range(0xAC00, 0xAC00 + 11172)
_L, _V, _T, _V_COUNT, _T_COUNT = 0x1100, 0x1161, 0x11A7, 21, 28


class Unsupported(ValueError):
    """A tokenizer.json this module does not implement (another model, normalizer or template)."""


def hangul_nfd(cp: int) -> str:
    """The canonical decomposition of a Hangul syllable into its conjoining jamo."""
    s = cp - HANGUL.start
    per_lead = _V_COUNT * _T_COUNT
    lead, vowel, tail = _L + s // per_lead, _V + (s % per_lead) // _T_COUNT, _T + s % _T_COUNT
    return chr(lead) + chr(vowel) + (chr(tail) if tail != _T else "")


class UnicodeTable:
    """The per-code-point behaviour of ``tokenizers``' BERT normalizer and pre-tokenizer."""

    def __init__(self, data: Mapping[str, Any]):
        self.source = data["source"]
        self.removes = _class_re(data["clean_removes"])
        self.spaces = {cp: " " for a, b in data["clean_spaces"] for cp in range(a, b + 1)}
        self.chinese = _class_re(data["chinese"])
        self.marks = {cp for a, b in data["marks"] for cp in range(a, b + 1)}
        self.lower = {int(cp): s for cp, s in data["lower"].items()}
        self.nfd = {int(cp): s for cp, s in data["nfd"].items()}
        self.combining = {int(cp): v for cp, v in data["combining"].items()}
        whitespace, punctuation = _char_class(data["whitespace"]), _char_class(data["punctuation"])
        #: a word: one punctuation character, or a run of characters that are neither
        self.words = re.compile(f"[{punctuation}]|[^{whitespace}{punctuation}]+")
        #: characters whose decomposition holds a kept (not stripped) character that NFD reorders
        reordered = {
            cp
            for cp in {*self.nfd, *self.combining}
            if any(ord(x) in self.combining and ord(x) not in self.marks for x in self.nfd.get(cp, chr(cp)))
        }
        self.needs_reordering = _class_re(runs_of(reordered))

    @classmethod
    @functools.cache
    def shipped(cls) -> UnicodeTable:
        """The table in this package (``bert_unicode.json``)."""
        raw = resources.files("edge_vl.runtime").joinpath("bert_unicode.json").read_text(encoding="utf-8")
        return cls(json.loads(raw))

    @functools.cache  # noqa: B019 (one table per process, a handful of option sets)
    def translation(self, clean: bool, strip: bool, lowercase: bool) -> dict[int, str]:
        """One ``str.translate`` map for the per-character steps, composed in the library's order:
        clean-text spaces, then NFD without marks, then lower case."""
        out: dict[int, str] = {}
        for cp in {*self.spaces, *self.nfd, *self.marks, *self.lower, *(HANGUL if strip else ())}:
            text = self.spaces.get(cp, chr(cp)) if clean else chr(cp)
            if strip:
                text = "".join(x for x in self._decompose(text) if ord(x) not in self.marks)
            if lowercase:
                text = "".join(self.lower.get(ord(x), x) for x in text)
            if text != chr(cp):
                out[cp] = text
        return out

    def _decompose(self, text: str) -> str:
        return "".join(hangul_nfd(ord(c)) if ord(c) in HANGUL else self.nfd.get(ord(c), c) for c in text)

    def strip_with_reordering(self, text: str) -> str:
        """NFD with canonical reordering, then the marks removed: the library's accent stripping,
        for the rare texts where reordering changes what is kept (see ``needs_reordering``)."""
        chars, run = [], []
        for c in self._decompose(text):
            if self.combining.get(ord(c)):
                run.append(c)
                continue
            chars += sorted(run, key=lambda x: self.combining[ord(x)])
            run = []
            chars.append(c)
        chars += sorted(run, key=lambda x: self.combining[ord(x)])
        return "".join(c for c in chars if ord(c) not in self.marks)


class WordPieceTokenizer:
    """Encodes one text to ids with its special tokens (the template of a single sequence)."""

    def __init__(self, spec: Mapping[str, Any], table: UnicodeTable | None = None):
        model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
        if (
            model.get("type") != "WordPiece"
            or (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer"
        ):
            raise Unsupported("not a BERT WordPiece tokenizer")
        if normalizer.get("type") != "BertNormalizer":
            raise Unsupported(f"normalizer {normalizer.get('type')!r}")
        self.table = table or UnicodeTable.shipped()
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
        # leftmost match first, the longest of those that start there
        names = sorted(self.added, key=len, reverse=True)
        self._added = re.compile("|".join(map(re.escape, names))) if names else None
        self._map = self.table.translation(self.clean, self.strip_accents, self.lowercase)
        self.before, self.after = _template(spec.get("post_processor") or {})

    @property
    def special_count(self) -> int:
        """Special tokens the template adds around a text."""
        return len(self.before) + len(self.after)

    def encode(self, text: str, max_length: int) -> list[int]:
        """Ids of ``text`` with its special tokens, the text cut to fit ``max_length`` in all."""
        ids = self.tokens(text, limit=max(0, max_length - self.special_count))
        return [*self.before, *ids, *self.after]

    def tokens(self, text: str, limit: int | None = None) -> list[int]:
        """Ids of ``text`` without the template's special tokens (at most ``limit`` of them)."""
        ids: list[int] = []
        for segment, special in self._split_added(text):
            if limit is not None and len(ids) >= limit:
                break
            if special is not None:
                ids.append(special)
                continue
            for word in self.table.words.finditer(self.normalize(segment)):
                ids += self._word_pieces(word.group())
                if limit is not None and len(ids) >= limit:
                    break
        return ids if limit is None else ids[:limit]

    def normalize(self, text: str) -> str:
        """``BertNormalizer`` as the ``tokenizers`` library applies it."""
        table = self.table
        if self.clean and table.removes is not None:
            text = table.removes.sub("", text)
        if self.chinese and table.chinese is not None:
            text = table.chinese.sub(r" \g<0> ", text)
        if self.strip_accents and table.needs_reordering is not None and table.needs_reordering.search(text):
            text = text.translate(table.spaces) if self.clean else text
            text = table.strip_with_reordering(text)
            return "".join(table.lower.get(ord(c), c) for c in text) if self.lowercase else text
        return text.translate(self._map)

    # -- the pipeline -----------------------------------------------------------------------
    def _split_added(self, text: str) -> Iterator[tuple[str, int | None]]:
        """``text`` cut around its added (special) tokens."""
        start = 0
        if self._added is not None:
            for match in self._added.finditer(text):
                if start < match.start():
                    yield text[start : match.start()], None
                yield match.group(), self.added[match.group()]
                start = match.end()
        if start < len(text):
            yield text[start:], None

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
    before: list[int] = []
    after: list[int] = []
    seen = False
    for item in post["single"]:
        if "Sequence" in item:
            seen = True
            continue
        ids = post["special_tokens"][item["SpecialToken"]["id"]]["ids"]
        (after if seen else before).extend(ids)
    return before, after


def runs_of(points: Iterable[int]) -> list[list[int]]:
    """Code points as sorted inclusive ``[first, last]`` runs (how the table stores sets)."""
    out: list[list[int]] = []
    for cp in sorted(points):
        if out and cp == out[-1][1] + 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def _char_class(runs: Sequence[Sequence[int]]) -> str:
    """The inside of a regular-expression character class matching the code point runs."""
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in runs
    )


def _class_re(runs: Sequence[Sequence[int]]) -> re.Pattern[str] | None:
    """A pattern matching one character of the runs (None when there are none)."""
    return re.compile(f"[{_char_class(runs)}]") if runs else None
