"""Calibrated scores and abstention, in numpy: the build fits them, the device applies them.

*Temperature scaling* (Guo et al., 2017, "On Calibration of Modern Neural Networks"): one number
``T`` divides the logits before the softmax (or sigmoid), fitted by minimising the negative
log-likelihood of held-out rows. It changes no answer, only how sure the scores say the model is.
*Expected calibration error* (ECE): the row-weighted gap between confidence and accuracy over
equal-width confidence bins. *Abstention*: below a threshold on the calibrated score the bundle
says "not sure" instead of answering; the build picks the lowest threshold whose answered rows
reach a target precision.

Figures that the build reports (ECE after scaling, the precision and coverage at the threshold)
are *cross-fitted*: fitted on one half of the held-out rows and measured on the other, both ways,
so they are not measured on the rows that chose them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: confidence bins of the expected calibration error
ECE_BINS = 15
#: the search range of log(T)
_LOG_T = (-3.0, 3.0)


def scores_of(logits: np.ndarray, kind: str, temperature: float = 1.0) -> np.ndarray:
    """Per-label scores: softmax (or sigmoid, for ``kind="sigmoid"`` heads) of ``logits / T``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, kind: str, temperature: float) -> float:
    """Mean negative log-likelihood of the true labels (binary per label for sigmoid heads)."""
    scores = np.clip(scores_of(logits, kind, temperature), 1e-12, 1 - 1e-12)
    rows = np.arange(len(labels))
    if kind == "sigmoid":
        target = np.zeros_like(scores)
        target[rows, labels] = 1.0
        return float(-(target * np.log(scores) + (1 - target) * np.log(1 - scores)).sum(-1).mean())
    return float(-np.log(scores[rows, labels]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, kind: str = "softmax") -> float:
    """The temperature that minimises the held-out NLL (golden-section search over log T)."""
    low, high = _LOG_T
    ratio = (np.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return nll(logits, labels, kind, float(np.exp(log_t)))

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return float(np.exp((low + high) / 2))


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of top-1 ``confidence`` against ``correct`` (0/1 per row)."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.sum() * abs(confidence[rows].mean() - correct[rows].mean())
    return float(total / max(1, len(confidence)))


def threshold_for(confidence: np.ndarray, correct: np.ndarray, target_precision: float) -> float | None:
    """The lowest confidence threshold whose answered rows (``confidence >= t``) reach the target
    precision, or None when no threshold does."""
    order = np.argsort(-np.asarray(confidence, float), kind="stable")
    conf, hits = np.asarray(confidence, float)[order], np.asarray(correct, float)[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    # answering the top n rows; a threshold cannot split rows of equal confidence
    last_of_tie = np.append(conf[1:] != conf[:-1], True)
    ok = np.nonzero((precision >= target_precision) & last_of_tie)[0]
    return None if len(ok) == 0 else float(conf[ok[-1]])


@dataclass(frozen=True)
class CalibrationFit:
    """What :func:`calibrate` found: the temperature and threshold fitted on all rows, and their
    cross-fitted quality."""

    temperature: float
    rows: int
    ece_before: float
    ece_after: float
    target_precision: float | None
    threshold: float | None
    #: cross-fitted share of rows answered at the threshold, and the precision on them
    coverage: float | None
    precision: float | None


def calibrate(
    logits: np.ndarray, labels: np.ndarray, kind: str = "softmax", target_precision: float | None = None
) -> CalibrationFit:
    """Fit temperature scaling (and, with ``target_precision``, an abstain threshold) on held-out
    rows; ECE, coverage and precision are cross-fitted over two halves (see the module docstring)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    n = len(labels)
    halves = (np.arange(n) % 2 == 0, np.arange(n) % 2 == 1)
    before = _top1(scores_of(logits, kind), labels)
    conf_after, answered, right = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
    for fit_rows, test_rows in (halves, halves[::-1]):
        t = fit_temperature(logits[fit_rows], labels[fit_rows], kind)
        conf, correct = _top1(scores_of(logits, kind, t), labels)
        conf_after[test_rows] = conf[test_rows]
        if target_precision is not None:
            threshold = threshold_for(conf[fit_rows], correct[fit_rows], target_precision)
            take = test_rows & (conf >= (np.inf if threshold is None else threshold))
            answered |= take
            right |= take & correct.astype(bool)
    correct_all = before[1]
    temperature = fit_temperature(logits, labels, kind)
    threshold = coverage = precision = None
    if target_precision is not None:
        conf_all, _ = _top1(scores_of(logits, kind, temperature), labels)
        threshold = threshold_for(conf_all, correct_all, target_precision)
        coverage = float(answered.mean()) if n else None
        precision = float(right.sum() / answered.sum()) if answered.any() else None
    return CalibrationFit(
        temperature=temperature,
        rows=n,
        ece_before=ece(before[0], correct_all),
        ece_after=ece(conf_after, correct_all),
        target_precision=target_precision,
        threshold=threshold,
        coverage=coverage,
        precision=precision,
    )


def accuracy_by_coverage(
    confidence: np.ndarray, correct: np.ndarray, points: int = 20
) -> list[tuple[float, float]]:
    """(coverage, accuracy of the answered rows) when only the most confident rows are answered:
    the curve the report draws."""
    order = np.argsort(-np.asarray(confidence, float), kind="stable")
    hits = np.asarray(correct, float)[order]
    n = len(hits)
    out = []
    for i in range(1, points + 1):
        k = max(1, round(n * i / points))
        out.append((k / n, float(hits[:k].mean())))
    return out


def _top1(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    best = scores.argmax(-1)
    return scores.max(-1), best == labels
