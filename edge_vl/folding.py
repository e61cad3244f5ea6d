"""Folding a fixed question away: when a task asks the same text (or one of a few) of every image,
the text tower computes the same states for every row, so the build computes them once and the
graph holds them as constants; the device looks a text up instead of running the tower on it.

The build finds the texts (:func:`texts_to_fold`); the device maps a tokenized text to its position
(:func:`text_index`) and refuses any other text. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_vl.errors import InputError
from edge_vl.manifest import MAX_FOLDED_TEXTS, TEXT_INPUTS, FoldedTexts, TensorSpec


def folded_input_specs(specs: Sequence[TensorSpec]) -> list[TensorSpec]:
    """A graph's inputs with its token inputs replaced by ``text_index``."""
    return [TensorSpec("text_index", (-1,), "int64")] + [s for s in specs if s.name not in TEXT_INPUTS]


def unpadded(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[tuple[int, ...]]:
    """Each row's token ids where the mask is set (the padding left out)."""
    return [
        tuple(int(t) for t in ids[mask.astype(bool)])
        for ids, mask in zip(input_ids, attention_mask, strict=True)
    ]


def texts_to_fold(
    texts: Sequence[str], input_ids: np.ndarray, attention_mask: np.ndarray
) -> FoldedTexts | None:
    """The distinct texts of the training rows (compared as token ids, so spellings the tokenizer
    treats alike are one text), or None if there are more than :data:`MAX_FOLDED_TEXTS`."""
    found: dict[tuple[int, ...], str] = {}
    for text, ids in zip(texts, unpadded(input_ids, attention_mask), strict=True):
        found.setdefault(ids, text)
        if len(found) > MAX_FOLDED_TEXTS:
            return None
    if not found:
        return None
    return FoldedTexts(texts=tuple(found.values()), token_ids=tuple(found))


def text_index(folded: FoldedTexts, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Each row's position in ``folded`` (int64, shape ``(N,)``).

    Raises:
        InputError: a text is not one the bundle was built for (its tower is not in the bundle).
    """
    where = {ids: i for i, ids in enumerate(folded.token_ids)}
    rows = unpadded(input_ids, attention_mask)
    unknown = [i for i, ids in enumerate(rows) if ids not in where]
    if unknown:
        known = "; ".join(repr(t) for t in folded.texts)
        raise InputError(
            f"text {unknown[0]} of the batch is not a question this bundle answers: it was built for "
            f"{known} only, and ships no text tower for other texts (rebuild with --no-fold-text, "
            "or with data that asks the new question)"
        )
    return np.array([where[ids] for ids in rows], dtype=np.int64)
