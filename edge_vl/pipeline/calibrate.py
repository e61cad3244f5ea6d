"""Part of stage 4: what a device needs to say "not sure" and to notice drift — temperature
scaling and an abstain threshold fitted on the eval rows (:mod:`edge_vl.runtime.calibration`),
and the reference profile of their signals (:mod:`edge_vl.runtime.signals`), computed with the
device's own code from the eval images and texts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_vl.config import BuildConfig
from edge_vl.data import data_fingerprint
from edge_vl.manifest import Abstention, Calibration, ReferenceProfile
from edge_vl.pipeline.prepare import Prepared
from edge_vl.runtime.calibration import accuracy_by_coverage, calibrate, scores_of
from edge_vl.runtime.preprocess import load_image
from edge_vl.runtime.signals import Signals, image_stats, reference_profile

#: fewer eval rows than this fit no calibration (a temperature from a handful of rows says little)
MIN_CALIBRATION_ROWS = 30


@dataclass(frozen=True)
class Reliability:
    """What the bundle records about its scores: calibration, abstention, the drift reference,
    the eval data's fingerprint, and the accuracy-against-coverage curve for the report."""

    calibration: Calibration | None
    abstention: Abstention | None
    reference: ReferenceProfile
    eval_fingerprint: str
    coverage_curve: list[tuple[float, float]]


def reliability(
    config: BuildConfig, prep: Prepared, logits: np.ndarray, kind: str, echo: Callable[[str], None]
) -> Reliability:
    """Fit on the eval rows' logits (``kind``: the head's score function) and profile their signals."""
    labels = prep.eval_data.labels.numpy()
    calibration = abstention = None
    temperature, threshold = 1.0, 0.0
    if len(labels) >= MIN_CALIBRATION_ROWS:
        target = config.target_precision or None
        fit = calibrate(logits, labels, kind, target)
        temperature = fit.temperature
        calibration = Calibration(fit.temperature, fit.rows, fit.ece_before, fit.ece_after)
        echo(
            f"calibration: temperature {fit.temperature:.3f}; expected calibration error "
            f"{fit.ece_before:.4f} → {fit.ece_after:.4f} (cross-fitted, {fit.rows} eval rows)"
        )
        if fit.threshold is not None and target is not None:
            threshold = fit.threshold
            abstention = Abstention(target, fit.threshold, fit.coverage, fit.precision)
            right = "none" if fit.precision is None else f"{fit.precision:.2%}"
            echo(
                f"abstention: below a score of {fit.threshold:.4f} the bundle says 'not sure' (target "
                f"precision {target:g}; cross-fitted: it answers {fit.coverage:.1%} of the rows, "
                f"{right} of them right)"
            )
        elif target is not None:
            echo(
                f"abstention: no score threshold reaches precision {config.target_precision:g} on the eval "
                "rows; the bundle always answers"
            )
    else:
        echo(f"calibration: skipped ({len(labels)} eval rows; it needs at least {MIN_CALIBRATION_ROWS})")
    scores = scores_of(logits, kind, temperature)
    best = scores.argmax(-1)
    confidence = scores.max(-1)
    signals = _signals(prep, best, confidence, threshold)
    return Reliability(
        calibration=calibration,
        abstention=abstention,
        reference=reference_profile(signals),
        eval_fingerprint=data_fingerprint(prep.eval_examples),
        coverage_curve=accuracy_by_coverage(confidence, best == labels),
    )


def _signals(prep: Prepared, best: np.ndarray, confidence: np.ndarray, threshold: float) -> list[Signals]:
    """The eval rows' signals, as a device would record them."""
    from edge_vl.runtime.tokenize import TextEncoder

    spec = prep.preprocessing
    encoder = (
        TextEncoder.from_spec(prep.tokenizer_file.parent, spec.text)
        if spec.text and prep.tokenizer_file
        else None
    )
    rows = prep.eval_data.rows
    stats: dict[Path, tuple[int, int, float, float]] = {}
    out = []
    for i, ex in enumerate(prep.eval_examples):
        if ex.image not in stats:
            stats[ex.image] = image_stats(load_image(ex.image, spec.image.background))
        tokens = unknown = None
        if encoder is not None and "input_ids" in rows:
            tokens, unknown = encoder.stats(rows["input_ids"][i].numpy(), rows["attention_mask"][i].numpy())
        label = prep.labels[int(best[i])]
        out.append(
            Signals(
                label,
                float(confidence[i]),
                bool(confidence[i] < threshold),
                *stats[ex.image],
                text_tokens=tokens,
                unknown_rate=unknown,
            )
        )
    return out
