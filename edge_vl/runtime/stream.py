"""Many inputs through one Predictor: decoding and preprocessing in this thread overlap inference
in OpenVINO's asynchronous infer requests, answers come back in input order, and memory stays
bounded (at most ``in_flight`` inputs are held at a time).

    for row, prediction in predict_stream(predictor, rows):   # rows: (image, text) pairs
        ...

A row that cannot be read (a missing or broken image, an empty text) does not stop the stream: it
yields an :class:`~edge_vl.errors.InputError` in the prediction's place, so a batch job can write
it to its results and go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from edge_vl.errors import ClosedError, EdgeVLError, InputError
from edge_vl.runtime.predictor import Prediction, Predictor

Row = tuple[Any, str | None]


def predict_stream(
    predictor: Predictor, rows: Iterable[Row], *, in_flight: int | None = None
) -> Iterator[tuple[Row, Prediction | InputError, float]]:
    """``(row, prediction or the row's error, inference milliseconds)`` for every ``(image, text)``
    row, in order. ``in_flight``: inputs preprocessed ahead and inferring at once (default: what
    OpenVINO finds optimal for the compiled model, at least 2)."""
    import openvino as ov

    compiled = predictor.compiled
    if compiled is None:
        raise ClosedError("this Predictor was closed; create a new one to predict again")
    depth = in_flight or max(2, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    queue = ov.AsyncInferQueue(compiled, depth)
    done: dict[int, tuple[np.ndarray, float]] = {}
    lock = threading.Lock()

    def finished(request: Any, userdata: tuple[int, float]) -> None:
        index, started = userdata
        logits = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        with lock:
            done[index] = (logits, (time.perf_counter() - started) * 1e3)

    queue.set_callback(finished)
    pending: dict[int, tuple[Row, dict[str, np.ndarray], list]] = {}
    failed: dict[int, tuple[Row, InputError]] = {}
    next_out = 0

    def ready() -> Iterator[tuple[Row, Prediction | InputError, float]]:
        nonlocal next_out
        while True:
            if next_out in failed:
                row, error = failed.pop(next_out)
                yield row, error, 0.0
            elif next_out in done:
                with lock:
                    logits, ms = done.pop(next_out)
                row, feed, stats = pending.pop(next_out)
                yield row, predictor.finish(logits, feed, stats, ms)[0], ms
            else:
                return
            next_out += 1

    try:
        for index, row in enumerate(rows):
            try:
                image, text = row
                feed, stats = predictor.prepare_with_stats([image], None if text is None else [text])
            except EdgeVLError as e:  # a bad row is reported in its place; the stream goes on
                failed[index] = (row, e if isinstance(e, InputError) else InputError(str(e)))
            else:
                pending[index] = (row, feed, stats)
                queue.start_async(feed, (index, time.perf_counter()))  # waits for a free request
            yield from ready()
        queue.wait_all()
        yield from ready()
    finally:
        queue.wait_all()
