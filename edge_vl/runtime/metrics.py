"""Fleet metrics: a running Predictor's numbers for Prometheus (the ``metrics`` extra,
``prometheus_client``), for the dashboards factories already run.

    predictor = Predictor("bundle", monitor="/var/lib/edge-vl/monitor.db")
    PrometheusMetrics(predictor).serve(9464)      # http://127.0.0.1:9464/metrics

Exposed: ``edge_vl_inference_seconds`` (a histogram of each inference call's latency),
``edge_vl_answers_total{label}``, ``edge_vl_abstentions_total``, and, when the Predictor records to
a monitor store, ``edge_vl_drift_psi{signal}`` over the most recent ``window`` predictions,
computed when Prometheus scrapes. The endpoint listens on localhost unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edge_vl.errors import MissingExtraError
from edge_vl.runtime.monitor import check_drift
from edge_vl.runtime.predictor import Predictor
from edge_vl.runtime.signals import Signals

#: latency buckets (seconds) for CPUs from a few milliseconds to a second per call
BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class PrometheusMetrics:
    """Observes a Predictor's predictions (see the module docstring)."""

    def __init__(self, predictor: Predictor, *, registry: Any = None, window: int = 500):
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise MissingExtraError("Prometheus metrics", "metrics") from None
        self.registry = registry if registry is not None else CollectorRegistry()
        self.predictor, self.window = predictor, window
        registry = self.registry
        self.latency = Histogram(
            "edge_vl_inference_seconds", "Latency of one inference call", buckets=BUCKETS, registry=registry
        )
        self.answers = Counter("edge_vl_answers", "Answers given, by label", ["label"], registry=registry)
        self.abstentions = Counter("edge_vl_abstentions", "Answers marked 'not sure'", registry=registry)
        reference = predictor.bundle.manifest.reference
        if predictor.monitor is not None and reference is not None:
            what = "Population stability index of the recent predictions against the reference, by signal"
            drift = Gauge("edge_vl_drift_psi", what, ["signal"], registry=registry)
            for name in (*reference.signals, "label"):
                drift.labels(name).set_function(self._drift_of(name))
        predictor.observers.append(self.observe)

    def observe(self, signals: Sequence[Signals], latency_ms: float) -> None:
        self.latency.observe(latency_ms / 1e3)
        for s in signals:
            self.answers.labels(s.label).inc()
            if s.abstained:
                self.abstentions.inc()

    def _drift_of(self, signal: str) -> Callable[[], float]:
        return lambda: self._drift(signal)

    def _drift(self, signal: str) -> float:
        store, reference = self.predictor.monitor, self.predictor.bundle.manifest.reference
        if store is None or reference is None:
            return float("nan")
        report = check_drift(reference, store.recent(self.window))
        return report.scores.get(signal, float("nan"))

    def serve(self, port: int = 9464, addr: str = "127.0.0.1") -> Any:
        """Start the ``/metrics`` endpoint in a background thread; returns the server (``shutdown()``)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
