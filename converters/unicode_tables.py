"""Make the device tokenizer's Unicode tables from the ``tokenizers`` library itself.

The device runs BERT WordPiece in plain Python (:mod:`edge_vl.runtime.wordpiece`). Python's
``unicodedata`` follows the Python version's Unicode release and differs from the Rust tables
``tokenizers`` uses (e.g. private-use characters, marks added in newer Unicode versions), so the
device reads what every code point does from a table made here by asking ``tokenizers``, one
code point at a time: what ``BertNormalizer``'s clean-text, CJK-padding, accent-stripping and
lower-casing steps each turn it into, its canonical decomposition and combining class (for the
reordering NFD does before accents are stripped), and whether ``BertPreTokenizer`` splits on it
(white space) or isolates it (punctuation). Run::

    python -m edge_vl.converters.unicode_tables            # rewrites edge_vl/runtime/bert_unicode.json
    python -m edge_vl.converters.unicode_tables --check    # exit 1 if the committed table differs

``tests/test_tokenizer_parity.py`` checks the table against the installed ``tokenizers`` on every
code point.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge_vl.runtime.wordpiece import HANGUL, hangul_nfd, runs_of

TABLE = Path(__file__).resolve().parents[1] / "edge_vl" / "runtime" / "bert_unicode.json"
_SURROGATES = range(0xD800, 0xE000)
#: reference marks for the reordering probe: U+0334 (combining class 1), U+0301 (230)
_LOW, _HIGH = "\u0334", "\u0301"


def code_points() -> Iterable[int]:
    """Every Unicode scalar value (surrogates cannot be given to Rust strings)."""
    return (cp for cp in range(0x110000) if cp not in _SURROGATES)


def make_table() -> dict[str, Any]:
    """The table :class:`edge_vl.runtime.wordpiece.UnicodeTable` reads."""
    import tokenizers
    from tokenizers import normalizers, pre_tokenizers

    def bert(**step: bool) -> Callable[[str], str]:
        off = {"clean_text": False, "handle_chinese_chars": False, "strip_accents": False, "lowercase": False}
        return normalizers.BertNormalizer(**{**off, **step}).normalize_str

    clean, chinese = bert(clean_text=True), bert(handle_chinese_chars=True)
    strip, lower = bert(strip_accents=True), bert(lowercase=True)
    nfd = normalizers.NFD().normalize_str
    split = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    removed, spaces, padded, whitespace, punctuation, marks = [], [], [], [], [], []
    stripped, lowered, decomposed = {}, {}, {}
    for cp in code_points():
        c = chr(cp)
        cleaned = clean(c)
        if cleaned == "":
            removed.append(cp)
        elif cleaned == " " and c != " ":
            spaces.append(cp)
        if chinese(c) != c:
            padded.append(cp)
        if (s := strip(c)) != c:
            stripped[cp] = s
            if s == "" and nfd(c) == c:
                marks.append(cp)
        if (lo := lower(c)) != c:
            lowered[cp] = lo
        if (d := nfd(c)) != c:
            decomposed[cp] = d
        pieces = len(split(f"a{c}a"))
        if pieces == 2:
            whitespace.append(cp)
        elif pieces == 3:
            punctuation.append(cp)
    # the table keeps what the device cannot derive: accent stripping is NFD without the marks, and
    # Hangul syllables decompose by the Unicode formula (checked here, so the table stays small)
    mark_set = set(marks)
    for cp in stripped.keys() | decomposed.keys():
        kept = "".join(x for x in decomposed.get(cp, chr(cp)) if ord(x) not in mark_set)
        if kept != stripped.get(cp, chr(cp)):
            raise AssertionError(f"U+{cp:04X}: accent stripping is not NFD without marks here")
    for cp in HANGUL:
        if decomposed.pop(cp, None) != hangul_nfd(cp):
            raise AssertionError(f"U+{cp:04X}: not the Unicode Hangul decomposition")
    return {
        "source": f"tokenizers {tokenizers.__version__}",
        "clean_removes": runs_of(removed),
        "clean_spaces": runs_of(spaces),
        "chinese": runs_of(padded),
        "marks": runs_of(marks),
        "lower": {str(cp): s for cp, s in lowered.items()},
        "nfd": {str(cp): d for cp, d in decomposed.items()},
        "combining": combining_classes(nfd),
        "whitespace": runs_of(whitespace),
        "punctuation": runs_of(punctuation),
    }


def combining_classes(nfd: Callable[[str], str]) -> dict[str, int]:
    """Canonical combining class of every character ``tokenizers``' NFD reorders. The values are
    Python's (classes of assigned characters never change); a character is kept only if the
    library's NFD really reorders it against a class-1 or a class-230 mark."""
    found = {}
    for cp in code_points():
        value = unicodedata.combining(chr(cp))
        if not value:
            continue
        c = chr(cp)
        # a class above 1 moves behind the class-1 mark; classes below 230 move before the 230 one
        if nfd(f"a{c}{_LOW}") == f"a{_LOW}{c}" or nfd(f"a{_HIGH}{c}") == f"a{c}{_HIGH}":
            found[str(cp)] = value
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Compare with the committed table only.")
    args = parser.parse_args(argv)
    table = make_table()
    text = json.dumps(table, ensure_ascii=True, sort_keys=True, separators=(",", ":")) + "\n"
    if args.check:
        same = TABLE.is_file() and json.loads(TABLE.read_text(encoding="utf-8")) == table
        print(f"{TABLE}: {'up to date' if same else 'differs from ' + table['source']}")
        return 0 if same else 1
    TABLE.write_text(text, encoding="utf-8")
    print(f"wrote {TABLE} ({len(text) // 1024} KB) from {table['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
