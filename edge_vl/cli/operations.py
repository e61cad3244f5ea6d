"""After deployment, on the device: ``edge-vl eval`` (accuracy on this PC, a pilot's gate),
batch prediction (``edge-vl predict BUNDLE --data ROWS --out RESULTS``) and ``edge-vl monitor``
(drift triggers for cron or systemd). Torch-free."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click

from edge_vl.cli.options import min_release_option, trusted_key_option

#: exit code when an acceptance gate (``eval --min-accuracy``) or a drift trigger (``monitor``) fails
EXIT_GATE = 3


def _open_predictor(bundle: Path, threads: int | None, trusted_keys, min_release, **options: Any):
    from edge_vl.runtime.predictor import Predictor

    keys = list(trusted_keys) or None
    return Predictor(bundle, threads=threads, trusted_keys=keys, min_release=min_release, **options)


class _progress:
    """Rows done, on stderr: a line redrawn in place on a terminal, else a line every 10 % (or every
    1,000 rows when the total is unknown), and the total at the end."""

    def __init__(self, total: int | None, label: str):
        self.total, self.label, self.done = total, label, 0
        self.live = sys.stderr.isatty()
        self.every = max(1, total // 10) if total else 1000

    def __enter__(self) -> _progress:
        return self

    def update(self, n: int) -> None:
        self.done += n
        of = f"/{self.total}" if self.total else ""
        if self.live:
            click.echo(f"\r{self.label}: {self.done}{of} rows", nl=False, err=True)
        elif self.done % self.every == 0:
            click.echo(f"{self.label}: {self.done}{of} rows", err=True)

    def __exit__(self, *exc: object) -> None:
        click.echo(f"{chr(13) if self.live else ''}{self.label}: {self.done} rows done", err=True)


@click.command(name="eval")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write each row's prediction to this JSONL file (refused if it exists).",
)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0, 1),
    default=None,
    help=f"Exit with code {EXIT_GATE} when the accuracy is below this (a pilot's acceptance gate).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="OpenVINO inference threads.")
@trusted_key_option
@min_release_option
@click.pass_context
def evaluate_command(ctx, bundle, data, as_json, out, min_accuracy, threads, **trust) -> None:
    """Score BUNDLE on the labelled rows of DATA (the build's JSONL/CSV format) on this machine:
    accuracy, per-class precision and recall, the confusion matrix and latency, compared with the
    accuracy the build measured."""
    from edge_vl.data import read_examples
    from edge_vl.runtime.evaluation import evaluate

    predictor = _open_predictor(bundle, threads, performance_hint="throughput", **trust)
    examples = read_examples(data, require_text=predictor.text_encoder is not None)
    with _results_file(out) as write, _progress(len(examples), "eval") as bar:
        report = evaluate(
            predictor,
            examples,
            on_prediction=lambda ex, p: write({"line": ex.line, "label": ex.label, **p.to_dict()}),
            progress=bar.update,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_evaluation(report)
    if min_accuracy is not None and report.accuracy < min_accuracy:
        click.echo(f"error: accuracy {report.accuracy:.4f} is below --min-accuracy {min_accuracy}", err=True)
        ctx.exit(EXIT_GATE)


def _print_evaluation(report) -> None:
    same = {True: "the build's eval data", False: "not the build's eval data", None: "unknown"}
    build = "not recorded" if report.build_accuracy is None else f"{report.build_accuracy:.4f}"
    click.echo(
        f"accuracy       {report.accuracy:.4f} on {report.rows} rows (build: {build}; these rows are "
        f"{same[report.same_data_as_build]})"
    )
    if report.abstained:
        answered = (
            "" if report.answered_accuracy is None else f"; {report.answered_accuracy:.4f} of the rest right"
        )
        click.echo(f"not sure       {report.abstained} row{'' if report.abstained == 1 else 's'}{answered}")
    lat = report.latency_ms
    click.echo(
        f"latency (ms)   p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f} (per row, streamed)"
    )
    for error in report.errors:
        click.echo(f"skipped        {error}")
    width = max(len(label) for label in report.labels)
    click.echo(f"\n{'label':<{width}}  support  precision  recall")
    for c in report.classes:
        p = "–" if c.precision is None else f"{c.precision:.4f}"
        r = "–" if c.recall is None else f"{c.recall:.4f}"
        click.echo(f"{c.label:<{width}}  {c.support:>7}  {p:>9}  {r:>6}")
    click.echo("\nconfusion matrix (rows: true label, columns: answer)")
    cell = max(5, *(len(str(v)) for row in report.confusion for v in row))
    click.echo(" " * (width + 2) + "".join(f"{i:>{cell + 1}}" for i in range(len(report.labels))))
    for i, (label, row) in enumerate(zip(report.labels, report.confusion, strict=True)):
        click.echo(f"{label:<{width}}  " + "".join(f"{v:>{cell + 1}}" for v in row) + f"   ({i})")


class _results_file:
    """Rows written to ``path`` (JSONL, or CSV by suffix) as they come, into a temporary file that
    replaces ``path`` only when every row is written: a killed run leaves no half file; an existing
    file is never replaced."""

    def __init__(self, path: Path | None, fields: tuple[str, ...] = ()):
        self.path, self.fields, self.handle = path, fields, None

    def __enter__(self):
        if self.path is None:
            return lambda row: None
        if self.path.exists() or self.path.is_symlink():
            raise click.UsageError(
                f"{self.path} exists; edge-vl never overwrites a results file (name a new one)"
            )
        if not self.path.parent.is_dir():
            raise click.UsageError(f"{self.path}: the folder {self.path.parent} does not exist")
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.handle = self.partial.open("w", encoding="utf-8", newline="")
        self.csv = (
            csv.DictWriter(self.handle, self.fields or ("row",), extrasaction="ignore")
            if self._is_csv()
            else None
        )
        if self.csv is not None:
            self.csv.writeheader()
        return self.write

    def _is_csv(self) -> bool:
        return self.path is not None and self.path.suffix.lower() == ".csv"

    def write(self, row: dict[str, Any]) -> None:
        if self.csv is not None:
            self.csv.writerow(row)
        elif self.handle is not None:
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def __exit__(self, kind, error, trace) -> None:
        if self.handle is None:
            return
        self.handle.close()
        if kind is None:
            self.partial.replace(self.path)
        else:
            self.partial.unlink(missing_ok=True)


def batch_predict(predictor, data: Path, out: Path | None, text: str | None) -> int:
    """``edge-vl predict BUNDLE --data ROWS``: stream every row through the bundle, writing each
    answer to ``out`` (JSONL, or CSV by suffix) or stdout; returns the rows that failed."""
    from edge_vl.data import iter_inputs
    from edge_vl.runtime.stream import predict_stream

    rows = iter_inputs(data, require_text=predictor.takes_text, text=text)
    fields = ("image", "text", "label", "score", "abstained", "error")
    failures = 0
    with _results_file(out, fields) as write, _progress(None, "predict") as bar:
        for (image, question), result, _ms in predict_stream(predictor, predictor.inputs_of(rows)):
            row: dict[str, Any] = {"image": str(image), "text": question}
            if isinstance(result, Exception):
                failures += 1
                row["error"] = str(result)
            else:
                row.update(label=result.label, score=round(result.score, 6), abstained=result.abstained)
            if out is not None:
                write(row)
            else:
                click.echo(json.dumps(row, ensure_ascii=False))
            bar.update(1)
    return failures


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Compare the most recent WINDOW predictions with the bundle's reference.",
)
@click.option(
    "--psi",
    "psi_threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=0.25,
    show_default=True,
    help="A signal's population stability index above this fires.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the drift report as JSON.")
@click.pass_context
def monitor(ctx, bundle, store, window, psi_threshold, as_json) -> None:
    """Compare the predictions recorded in STORE (``Predictor(bundle, monitor=STORE)``) with
    BUNDLE's reference profile; exit with code 3 when a trigger fires (for cron or systemd) and say
    what to do."""
    from edge_vl.bundle import read_bundle
    from edge_vl.errors import BundleError
    from edge_vl.runtime.monitor import MonitorStore, Thresholds, check_drift

    manifest = read_bundle(bundle).manifest
    if manifest.reference is None:
        raise BundleError(
            f"{bundle}: the bundle has no reference profile (built before edge-vl recorded "
            "one); rebuild it to monitor drift"
        )
    if not store.is_file():
        raise click.UsageError(
            f"{store}: no monitor store here (create one with Predictor(..., monitor=PATH))"
        )
    report = check_drift(
        manifest.reference, MonitorStore(store).recent(window), Thresholds(psi=psi_threshold)
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(
            f"{report.rows} recent predictions against the reference of {manifest.reference.rows} eval rows"
        )
        if report.note:
            click.echo(report.note)
        for name, value in report.scores.items():
            click.echo(f"  {name:<13} {value:8.4f}")
        for t in report.triggers:
            click.echo(f"TRIGGER {t.signal}: {t.value:.4f} > {t.threshold:.4f} — {t.advice}")
        if not report.triggers and not report.note:
            click.echo("no trigger fired")
    if report.fired:
        ctx.exit(EXIT_GATE)
