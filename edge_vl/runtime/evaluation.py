"""A bundle's accuracy on labelled rows, on the device that will run it (``edge-vl eval``):
accuracy, per-class precision and recall, the confusion matrix, latency percentiles, and how the
result compares with what the build measured — the pilot's acceptance gate (``--min-accuracy``).

Rows are read with the build's own reader and checks (:func:`edge_vl.data.read_examples`), so bad
data gets the same file:line:field errors; the data's fingerprint (rows and image bytes) says
whether it is the build's eval data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge_vl.data import Example, data_fingerprint
from edge_vl.errors import DataError, InputError
from edge_vl.runtime.predictor import Prediction, Predictor
from edge_vl.runtime.stream import predict_stream


@dataclass
class ClassReport:
    label: str
    support: int
    precision: float | None
    recall: float | None


@dataclass
class Evaluation:
    """What ``edge-vl eval`` measured (``--json`` prints this)."""

    rows: int
    accuracy: float
    #: rows answered "not sure", and the accuracy of the answered ones
    abstained: int
    answered_accuracy: float | None
    classes: list[ClassReport]
    labels: list[str]
    #: confusion[i][j]: rows of true label i answered j
    confusion: list[list[int]]
    latency_ms: dict[str, float]
    #: the build's eval accuracy of the shipped model (of its precision's candidate when the build
    #: converted it to FP16 or INT8), and whether these rows are the build's eval rows
    build_accuracy: float | None
    same_data_as_build: bool | None
    fingerprint: str = ""
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    predictor: Predictor,
    examples: Sequence[Example],
    *,
    on_prediction: Callable[[Example, Prediction], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Predict every example (streamed) and score the answers against its label.

    Raises:
        DataError: a label the bundle cannot answer (names the rows' labels).
    """
    labels = list(predictor.labels)
    unknown = sorted({ex.label for ex in examples} - set(labels))
    if unknown:
        raise DataError(
            f"labels {unknown} are not among the bundle's answers ({', '.join(labels)})",
            path=examples[0].manifest or None,
        )
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    latencies, errors, abstained, answered_right = [], [], 0, 0
    for ex, (_, result, ms) in zip(
        examples, predict_stream(predictor, predictor.inputs_of(examples)), strict=True
    ):
        if isinstance(result, InputError):
            errors.append(f"{ex.manifest}:{ex.line}: {result}")
            continue
        confusion[index[ex.label], index[result.label]] += 1
        latencies.append(ms)
        abstained += result.abstained
        answered_right += (not result.abstained) and result.label == ex.label
        if on_prediction is not None:
            on_prediction(ex, result)
        if progress is not None:
            progress(1)
    return _summary(predictor, examples, labels, confusion, latencies, errors, abstained, answered_right)


def _summary(
    predictor: Predictor,
    examples: Sequence[Example],
    labels: list[str],
    confusion: np.ndarray,
    latencies: list[float],
    errors: list[str],
    abstained: int,
    answered_right: int,
) -> Evaluation:
    scored = int(confusion.sum())
    right = int(np.trace(confusion))
    classes = []
    for i, label in enumerate(labels):
        predicted, actual = int(confusion[:, i].sum()), int(confusion[i].sum())
        classes.append(
            ClassReport(
                label,
                actual,
                confusion[i, i] / predicted if predicted else None,
                confusion[i, i] / actual if actual else None,
            )
        )
    lat = np.asarray(latencies or [0.0])
    manifest = predictor.bundle.manifest
    build_fingerprint = manifest.data.eval_fingerprint if manifest.data else None
    fingerprint = data_fingerprint(examples)
    answered = scored - abstained
    return Evaluation(
        rows=scored,
        accuracy=right / scored if scored else 0.0,
        abstained=abstained,
        answered_accuracy=answered_right / answered if answered else None,
        classes=classes,
        labels=labels,
        confusion=confusion.tolist(),
        latency_ms={f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)},
        build_accuracy=manifest.shipped_accuracy,
        same_data_as_build=None if build_fingerprint is None else build_fingerprint == fingerprint,
        fingerprint=fingerprint,
        errors=errors,
    )
