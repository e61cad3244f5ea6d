"""What a prediction says about its input and its answer, in a few numbers — the signals drift
monitoring compares with the build's reference (:mod:`edge_vl.runtime.monitor`).

Per prediction: the image's width, height, brightness (mean luma, 0–1) and contrast (luma standard
deviation) as decoded; the text's length in tokens and the share of its words the tokenizer did
not know (``[UNK]``); the calibrated confidence; the answer; whether the bundle abstained. No image
or text is kept. The build computes the same signals on its held-out rows with this code
(:func:`reference_profile`); a device compares windows of recent predictions with it by the
*population stability index* (PSI) per signal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edge_vl.manifest import Histogram, ReferenceProfile

#: numeric signals, in the order the monitor store keeps them
NUMERIC_SIGNALS = ("confidence", "brightness", "contrast", "width", "height", "text_tokens", "unknown_rate")
#: bins of a reference histogram (quantiles of the reference rows)
REFERENCE_BINS = 10
#: added to every bin's share before the PSI's logarithm (an empty bin is not an infinite shift)
_SMOOTH = 1e-3


@dataclass(frozen=True)
class Signals:
    """One prediction's signals (see the module docstring)."""

    label: str
    confidence: float
    abstained: bool
    width: int
    height: int
    brightness: float
    contrast: float
    text_tokens: int | None = None
    unknown_rate: float | None = None

    def numeric(self) -> dict[str, float]:
        values = {name: getattr(self, name) for name in NUMERIC_SIGNALS}
        return {k: float(v) for k, v in values.items() if v is not None}


#: a row's inputs as the signals see them: its image's (width, height, brightness, contrast) and
#: its text's (tokens, unknown-token share), None without a text
InputStats = tuple[int, int, float, float, int | None, float | None]


def image_stats(im: Image.Image) -> tuple[int, int, float, float]:
    """(width, height, brightness, contrast) of a decoded RGB image, from a thumbnail of at most
    64 × 64 pixels (the same numbers whatever the image's size, for a few microseconds)."""
    width, height = im.size
    small = im.convert("L")
    if max(width, height) > 64:
        small = small.resize((min(64, width), min(64, height)), Image.Resampling.BILINEAR)
    luma = np.asarray(small, dtype=np.float32) / 255.0
    return width, height, float(luma.mean()), float(luma.std())


def text_stats(ids: np.ndarray, mask: np.ndarray, special: int, unknown_id: int | None) -> tuple[int, float]:
    """(tokens of the text, share of them that are ``[UNK]``), special tokens left out."""
    tokens = max(0, int(np.sum(mask)) - special)
    if tokens == 0 or unknown_id is None:
        return tokens, 0.0
    unknown = int(np.sum((np.asarray(ids) == unknown_id) & (np.asarray(mask) == 1)))
    return tokens, unknown / tokens


def reference_profile(signals: Sequence[Signals]) -> ReferenceProfile:
    """The build's picture of normal inputs and answers: a quantile histogram per numeric signal,
    the answers' counts, and the abstention rate."""
    histograms = {}
    for name in NUMERIC_SIGNALS:
        values = np.asarray([s.numeric()[name] for s in signals if name in s.numeric()], dtype=np.float64)
        if len(values):
            histograms[name] = histogram(values)
    labels: dict[str, int] = {}
    for s in signals:
        labels[s.label] = labels.get(s.label, 0) + 1
    abstained = sum(s.abstained for s in signals) / max(1, len(signals))
    return ReferenceProfile(rows=len(signals), signals=histograms, labels=labels, abstain_rate=abstained)


def histogram(values: np.ndarray, bins: int = REFERENCE_BINS) -> Histogram:
    """Counts of ``values`` between the inner quantile edges (the outer bins are open)."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return Histogram(edges=tuple(float(e) for e in edges), counts=tuple(int(c) for c in counts))


def psi(reference: Histogram, values: Iterable[float]) -> float:
    """Population stability index of ``values`` against the reference histogram's bins."""
    values = np.asarray(list(values), dtype=np.float64)
    if not len(values):
        return 0.0
    counts = np.bincount(
        np.searchsorted(reference.edges, values, side="right"), minlength=len(reference.counts)
    )
    return _psi(np.asarray(reference.counts, float), counts.astype(float))


def label_psi(reference: Mapping[str, int], labels: Iterable[str]) -> float:
    """PSI of the answers' mix against the reference's (answers it never gave count as one bin)."""
    names = sorted(reference)
    seen: dict[str, int] = {}
    for label in labels:
        seen[label if label in reference else "(other)"] = (
            seen.get(label if label in reference else "(other)", 0) + 1
        )
    expected = np.asarray([reference[n] for n in names] + [0], float)
    actual = np.asarray([seen.get(n, 0) for n in names] + [seen.get("(other)", 0)], float)
    return _psi(expected, actual)


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    if actual.sum() == 0 or expected.sum() == 0:
        return 0.0
    e = expected / expected.sum() + _SMOOTH
    a = actual / actual.sum() + _SMOOTH
    return float(np.sum((a - e) * np.log(a / e)))


def mean_of(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else float("nan")
