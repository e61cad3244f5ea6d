"""The device's WordPiece tokenizer gives the ``tokenizers`` library's ids on every code point, on
seeded random texts made to break it (private-use, combining and white-space floods), and on the
demo's questions; a megabyte of text stays cheap."""

from __future__ import annotations

import json
import random
import time

import pytest

from edge_vl.runtime.wordpiece import WordPieceTokenizer

_SURROGATES = range(0xD800, 0xE000)
#: normalizer settings of real BERT tokenizers: uncased (MiniLM, ViLT), cased, and the two odd ones
CONFIGS = {
    "uncased": {"lowercase": True, "strip_accents": None, "handle_chinese_chars": True, "clean_text": True},
    "cased": {"lowercase": False, "strip_accents": None, "handle_chinese_chars": True, "clean_text": True},
    "lower-keep-accents": {"lowercase": True, "strip_accents": False},
    "raw": {"lowercase": False, "strip_accents": False, "handle_chinese_chars": False, "clean_text": False},
}


@pytest.fixture(scope="module")
def minilm_json() -> str:
    from edge_vl.training.mini.modeling import text_encoder_dir

    return (text_encoder_dir() / "tokenizer.json").read_text(encoding="utf-8")


def pair(raw_json: str, config: dict):
    """(device tokenizer, ``tokenizers`` tokenizer) for one normalizer setting."""
    from tokenizers import Tokenizer

    spec = json.loads(raw_json)
    spec["normalizer"] = {"type": "BertNormalizer", **spec["normalizer"], **config}
    raw = json.dumps(spec)
    reference = Tokenizer.from_str(raw)
    reference.no_padding()
    reference.no_truncation()
    return WordPieceTokenizer(spec), reference


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_code_point_gives_the_library_ids(minilm_json, name):
    """Each code point alone and between letters (so that splitting is tested too), in texts of a
    thousand words."""
    ours, reference = pair(minilm_json, CONFIGS[name])
    points = [cp for cp in range(0x110000) if cp not in _SURROGATES]
    chunks = [points[i : i + 500] for i in range(0, len(points), 500)]
    texts = [" ".join(f"{chr(cp)} x{chr(cp)}y" for cp in chunk) for chunk in chunks]
    expected = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    for chunk, text, ids in zip(chunks, texts, expected, strict=True):
        if ours.tokens(text) != ids:  # name the first code point that differs
            for cp in chunk:
                one = f"{chr(cp)} x{chr(cp)}y"
                assert ours.tokens(one) == reference.encode(one, add_special_tokens=False).ids, f"U+{cp:04X}"
            raise AssertionError(f"the text of U+{chunk[0]:04X}..U+{chunk[-1]:04X} differs")


def _fuzz_pool() -> list[str]:
    rng = random.Random(0)
    import unicodedata

    marks = [chr(cp) for cp in range(0x300, 0x2000) if unicodedata.category(chr(cp)).startswith("M")]
    marks += ["\U0001d165", "\U0001d16d", "\U0001d16e", "\u1bf3", "\ua9c0", "\U00011235", "\u0345"]
    private = [chr(rng.randrange(0xE000, 0xF900)) for _ in range(200)]
    private += [chr(rng.randrange(0xF0000, 0x10FFFE)) for _ in range(200)]
    spaces = [" ", "\t", "\n", "\u3000", "\u00a0", "\u2028", "\u200b", "\ufeff", "\x85", "\x1c", "\u180e"]
    letters = [*"abcdeéÉßİΣσςАбвгд中文字한국어ﾃｽﾄ?!,.-'\"()[]", "[CLS]", "[SEP]", "[MASK]", "##"]
    newer = [chr(cp) for cp in (0x1E000, 0x1E01E, 0x11D44, 0x1E94A, 0x16FF0, 0x1F972, 0x1FAE8, 0x31350)]
    return marks + private + spaces * 10 + letters * 5 + newer * 5


@pytest.mark.parametrize("name", ["uncased", "cased"])
def test_ten_thousand_hostile_random_texts_give_the_library_ids(minilm_json, name):
    ours, reference = pair(minilm_json, CONFIGS[name])
    pool, rng = _fuzz_pool(), random.Random(1)
    texts = []
    for i in range(10_000):
        text = "".join(rng.choices(pool, k=rng.randint(1, 60)))
        if i % 10 == 0:  # floods: thousands of spaces, marks or private-use characters first
            text = rng.choice([" ", "\u0301", "\ue000", "\u200b"]) * rng.randint(1000, 7000) + text
        texts.append(text)
    reference.enable_truncation(max_length=40)
    expected = [e.ids for e in reference.encode_batch(texts)]
    for text, ids in zip(texts, expected, strict=True):
        assert ours.encode(text, 40) == ids, text[-80:]


def test_demo_questions_give_the_library_ids(minilm_json):
    from easy_vqa import get_test_questions

    ours, reference = pair(minilm_json, CONFIGS["uncased"])
    reference.enable_truncation(max_length=40)
    questions = get_test_questions()[0]
    assert [ours.encode(q, 40) for q in questions] == [e.ids for e in reference.encode_batch(questions)]


@pytest.mark.parametrize(
    "flood", ["what color? " + "x " * 500_000, " " * 1_000_000 + "what color?", "\u0301" * 1_000_000 + "red"]
)
def test_a_megabyte_of_text_takes_under_half_a_second(minilm_json, flood):
    ours, reference = pair(minilm_json, CONFIGS["uncased"])
    reference.enable_truncation(max_length=40)
    started = time.perf_counter()
    ids = ours.encode(flood, 40)
    assert time.perf_counter() - started < 0.5
    assert ids == reference.encode(flood).ids  # the question survives leading floods


def test_the_shipped_table_is_what_the_installed_library_gives(capsys):
    """A new ``tokenizers`` with other Unicode tables fails here: regenerate the table (see
    :mod:`edge_vl.converters.unicode_tables`) and review what changed."""
    from edge_vl.converters.unicode_tables import main

    assert main(["--check"]) == 0, capsys.readouterr().out
