"""Build reports: ``report.json`` (the numbers) and a self-contained ``report.html`` (inline SVG plots).

Every number comes from a bundle manifest (and, for comparisons, from the manifests or results of
other variants), so a report cannot disagree with the bundle it describes. The HTML is well-formed
XML (XHTML served as HTML) with no scripts and no external files: it opens in any browser offline.
Plots: gates per layer over the search rounds, accuracy against MACs of the variants, latency table,
and a per-layer table of what was skipped and why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_vl.build_records import SizePlan, SkipPlan, Uncertainty, full_model_words
from edge_vl.charts import escape, line_chart, scatter_chart, xy_chart
from edge_vl.fileio import write_text_atomic
from edge_vl.manifest import Manifest
from edge_vl.schema import parse, to_json

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def variant_from_manifest(manifest: Manifest, name: str = "this bundle") -> dict[str, Any]:
    """One row of the accuracy-vs-MACs comparison, taken from a bundle manifest."""
    latency = manifest.metrics.latency_ms
    return {
        "variant": name,
        "eval_accuracy": manifest.metrics.eval_accuracy,
        "retained_macs_fraction": manifest.cost.retained_fraction,
        "skipped": list(manifest.architecture.skipped),
        "latency_ms": latency.retained if latency else None,
    }


def report_data(manifest: Manifest, variants: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The report's numbers: a projection of ``manifest`` plus optional comparison ``variants``."""
    arch, cost, plan = manifest.architecture, manifest.cost, manifest.skip_plan
    search = plan.search
    scores = search.scores if search else None
    layers = []
    for i, name in enumerate(arch.layers):
        skipped = i in arch.skipped
        layers.append(
            {
                "index": i,
                "name": name,
                "skipped": skipped,
                "gate": search.gates[i] if search else None,
                "score": scores[i] if scores else None,
                "rank": search.ranking.index(i) + 1 if search else None,
                "saving_macs": cost.per_layer.saving(i) if cost.per_layer else None,
                "why": _why(i, skipped, plan),
            }
        )
    training = manifest.training
    return {
        "bundle": {
            "created": manifest.created,
            "precision": manifest.model.precision,
            "edge_vl_version": manifest.edge_vl_version,
        },
        "model": {"family": arch.family, "source": arch.source, "layers": len(arch.layers)},
        "metrics": to_json(manifest.metrics),
        "cost": {
            "unit": cost.unit,
            "full_model": cost.full_model,
            "retained_model": cost.retained_model,
            "retained_fraction": cost.retained_fraction,
        },
        "training": {
            "steps": training.steps,
            "trainable_parameters": training.trainable_parameters,
            "total_parameters": training.total_parameters,
            "trainable_fraction": training.trainable_fraction,
            "seconds": training.seconds,
        },
        "plan": {
            "method": plan.method,
            "budget": plan.budget,
            "skipped": list(arch.skipped),
            "estimator": search.estimator if search else None,
            "uncertainty": to_json(search.uncertainty) if search and search.uncertainty else None,
            "sizes": to_json(plan.sizes) if plan.sizes else None,
        },
        "layers": layers,
        "gate_history": [r["gates"] for r in search.rounds if "gates" in r] if search else [],
        "warnings": list(manifest.data.warnings) if manifest.data else [],
        "variants": [variant_from_manifest(manifest), *variants],
        "labels": list(manifest.head.labels),
        "calibration": to_json(manifest.calibration) if manifest.calibration else None,
        "abstention": to_json(manifest.abstention) if manifest.abstention else None,
        "schedule_changes": list(manifest.training.schedule_changes),
        "bundle_bytes": sum(f.size for f in manifest.files.values()),
    }


def _why(i: int, skipped: bool, plan: SkipPlan) -> str:
    if plan.method == "given":
        return "skip set given by the user" if skipped else "kept (not in the given skip set)"
    if plan.method == "budget" or plan.search is None:
        return "kept: the budget is met without skipping"
    k = len(plan.skipped)
    rank = plan.search.ranking.index(i) + 1
    by = "gate" if plan.search.estimator == "gates" else plan.search.estimator
    if not skipped:
        return f"{by} rank {rank}: kept"
    why = f"{by} rank {rank} of {len(plan.search.ranking)}: among the {k} most redundant within budget"
    if plan.method == "das-undecided":
        why += " (the search's best guess: its data did not separate this pick from the kept layers)"
    return why


def describe_uncertainty(sureness: Uncertainty) -> str:
    """One line on how sure the prior's pick is, for the build log and the report."""
    boundary = sureness.boundary
    if boundary is None:
        return f"the ranking rests on {sureness.rows} held-out rows"
    low, high = boundary.interval
    return (
        f"the ranking rests on {sureness.rows} held-out rows; layer {boundary.kept_layer} (kept) costs "
        f"{boundary.gap:+.4f} loss more than layer {boundary.picked_layer} (skipped), 95 % interval "
        f"{low:+.4f} to {high:+.4f}; {sureness.pick_frequency:.0%} of {sureness.resamples} resamples "
        f"of those rows pick the same set"
    )


def write_report(
    directory: Path, manifest: Manifest, variants: Sequence[dict[str, Any]] = (), *, name: str = ""
) -> Path:
    """Write ``report.json`` and ``report.html`` into ``directory``; returns the HTML path."""
    data = report_data(manifest, variants)
    write_text_atomic(directory / REPORT_JSON, json.dumps(data, indent=2, sort_keys=True) + "\n")
    out = directory / REPORT_HTML
    write_text_atomic(out, render_html(data, name=name))
    return out


# -- rendering ------------------------------------------------------------------------------------
def render_html(data: dict[str, Any], title: str = "edge-vl build report", name: str = "") -> str:
    """The report page of ``data`` (:func:`report_data`); ``name``: the bundle's directory name."""
    m = data["metrics"]
    parts = [
        f"<h1>{escape(title)}{(': ' + escape(name)) if name else ''}</h1>",
        _table(None, _summary(data, name)),
    ]
    if data.get("warnings"):
        items = "".join(f"<li>{escape(w)}</li>" for w in data["warnings"])
        parts += ["<h2>Data warnings</h2>", f"<ul>{items}</ul>"]
    parts += _gate_section(data)
    parts += _compute_plan_section(data["plan"].get("sizes"))
    majority = m.get("majority_accuracy")
    parts += ["<h2>Accuracy against compute</h2>", scatter_chart(data["variants"], majority)]
    parts += ["<h2>Variants</h2>", _variants_table(data["variants"])]
    parts += _latency_section(m.get("latency_ms"))
    parts += _classes_section(data)
    parts += _reliability_section(data)
    parts += ["<h2>What was skipped and why</h2>", _layers_table(data)]
    if data.get("schedule_changes"):
        items = "".join(f"<li>{escape(c)}</li>" for c in data["schedule_changes"])
        parts += ["<h2>What small data changed</h2>", f"<ul>{items}</ul>"]
    parts += ["<h2>Next steps</h2>", _next_steps(name or "BUNDLE")]
    return _page(title, parts)


def _compute_plan_section(sizes: dict[str, Any] | None) -> list[str]:
    """The compute plan's candidates (``--image-sizes``): estimated held-out loss against cost per
    input size, skipping 0, 1, 2, ... layers, with the budget and the choice."""
    if not sizes:
        return []
    flops = sizes["kind"] == "flops"
    unit, scale = ("GMACs", 1e-9) if flops else ("ms", 1.0)
    limit = sizes["limit"] * sizes["full_model_macs"] * scale if flops else sizes["limit"]
    series: dict[str, list[tuple[float, float, str]]] = {}
    rows = []
    for c in sizes["candidates"]:
        label = f"{c['size']} px"
        series[label] = [(cost * scale, loss, str(k)) for k, (cost, loss) in enumerate(c["frontier"])]
        chosen = "chosen" if c["size"] == sizes["chosen"] else ""
        if not c["feasible"]:
            rows.append([label, "—", "budget not met", "—", "—", ""])
            continue
        skipped = ", ".join(map(str, c["skipped"])) or "none"
        rows.append(
            [
                label,
                skipped,
                f"{c['cost'] * scale:.3g} {unit}",
                f"{c['base_loss']:.4f}",
                f"{c['estimated_loss']:.4f}",
                chosen,
            ]
        )
    header = ["input size", "skipped layers", "cost", "loss, nothing skipped", "estimated loss", ""]
    chart = xy_chart(
        {k: v for k, v in series.items() if v},
        f"cost ({unit}, batch 1)",
        "estimated held-out loss",
        joined=list(series),
        x_includes=limit,
        reference={"budget": (limit, None)},
    )
    note = (
        "<p>Each line is one input size; its dots skip 0, 1, 2, … layers, least loss increase first "
        "(the numbers). The loss of a set is estimated as the loss with nothing skipped plus each "
        "layer's increase when skipped alone, after a warm-up at that size; the fine-tune ran at the "
        "chosen size only.</p>"
    )
    return ["<h2>Compute plan: input size and skipped layers</h2>", note, chart, _table(header, rows)]


def _classes_section(data: dict[str, Any]) -> list[str]:
    """Per-class precision and recall, and the confusion matrix, on the eval rows."""
    confusion = data["metrics"].get("confusion")
    if not confusion:
        return []
    labels = data["labels"]
    rows = []
    for i, label in enumerate(labels):
        answered, actual = sum(r[i] for r in confusion), sum(confusion[i])
        precision = f"{confusion[i][i] / answered:.4f}" if answered else "–"
        recall = f"{confusion[i][i] / actual:.4f}" if actual else "–"
        rows.append((label, str(actual), precision, recall))
    matrix = [(label, *map(str, row)) for label, row in zip(labels, confusion, strict=True)]
    return [
        "<h2>Per class, on the eval rows</h2>",
        _table(["label", "rows", "precision", "recall"], rows),
        "<h3>Confusion matrix (rows: true label, columns: answer)</h3>",
        _table(["", *labels], matrix),
    ]


def _reliability_section(data: dict[str, Any]) -> list[str]:
    """How far the scores can be trusted: calibration, the abstain threshold, accuracy by coverage."""
    calibration, abstention = data.get("calibration"), data.get("abstention")
    if not calibration:
        return ["<h2>Scores</h2>", "<p>No calibration: too few eval rows to fit one (raw scores).</p>"]
    fitted = f"temperature {calibration['temperature']:.3f}, fitted on {calibration['rows']} eval rows"
    error = f"{calibration['ece_before']:.4f} → {calibration['ece_after']:.4f} (cross-fitted)"
    rows = [("calibration", fitted), ("expected calibration error", error)]
    if abstention:
        coverage, precision = abstention.get("coverage"), abstention.get("precision")
        threshold = (
            f"{abstention['threshold']:.4f} (target precision {abstention['target_precision']:g}; "
            f"cross-fitted: answers {_share(coverage)} of the rows, {_share(precision)} of them right)"
        )
        rows.append(("'not sure' below a score of", threshold))
    parts = ["<h2>Scores: calibration and 'not sure'</h2>", _table(None, rows)]
    curve = data["metrics"].get("coverage_curve")
    if curve:
        points = {"eval rows": [(c, a, "") for c, a in curve]}
        chart = xy_chart(
            points,
            "share of rows answered (most confident first)",
            "accuracy of those",
            joined=["eval rows"],
            legend=False,
            x_span=(0.0, 1.05),
        )
        parts.append(chart)
    return parts


def _share(value: float | None) -> str:
    # two decimals: 98.99 % must not read as a 99 % target met
    return "–" if value is None else f"{value:.2%}"


def _next_steps(bundle: str) -> str:
    steps = [
        f"edge-vl eval {bundle} your-rows.jsonl --min-accuracy 0.95   # on the target PC: a pilot's gate",
        f"edge-vl bench {bundle}                                      # speed and memory there",
        f'Predictor("{bundle}", monitor="monitor.db")             # record signals in production',
        f"edge-vl monitor {bundle} monitor.db                         # drift triggers (exit code 3)",
    ]
    return "<pre>" + "\n".join(escape(step) for step in steps) + "</pre>"


def _gate_section(data: dict[str, Any]) -> list[str]:
    """The gates of every layer over the bandit's rounds (none for searches without rounds)."""
    history = data["gate_history"]
    if not history:
        return []
    series = {
        f"{a['index']}{' skipped' if a['skipped'] else ''}": [g[a["index"]] for g in history]
        for a in data["layers"]
    }
    highlighted = [k for k in series if k.endswith("skipped")]
    return [
        "<h2>Gates per layer over the search</h2>",
        "<p>A larger gate means the layer was more often in low-loss skip sets (more redundant). "
        "Skipped layers in colour, kept layers grey.</p>",
        line_chart(series, "bandit round", "gate", highlighted=highlighted),
    ]


def _variants_table(variants: Sequence[dict[str, Any]]) -> str:
    rows = [
        (
            v["variant"],
            f"{v['eval_accuracy']:.4f}",
            f"{v['retained_macs_fraction']:.1%}",
            str(v.get("skipped", "")),
            _latency(v.get("latency_ms")),
        )
        for v in variants
    ]
    return _table(["variant", "eval accuracy", "MACs vs full", "skipped", "latency ms (batch 1)"], rows)


def _latency_section(lat: dict[str, Any] | None) -> list[str]:
    if not lat:
        return []
    rows = [
        ("retained (this bundle)", f"{lat['retained']:.2f}"),
        (full_model_words(lat.get("full_image_size")), f"{lat['full']:.2f}"),
    ]
    return [
        "<h2>Latency</h2>",
        _table(["model", "median ms, batch 1"], rows),
        f"<p>OpenVINO {escape(lat.get('precision', ''))}, {lat.get('threads') or 'default'} threads, "
        "on the build machine; run <code>edge-vl bench</code> on the target.</p>",
    ]


def _layers_table(data: dict[str, Any]) -> str:
    """Each layer: its search score, the MACs skipping it saves, and what was decided and why."""
    score = f"{data['plan']['estimator'] or 'search'} score (higher: more redundant)"
    rows = [
        (
            str(a["index"]),
            a["name"],
            "" if a["score"] is None else f"{a['score']:+.3e}",
            "" if a["saving_macs"] is None else f"{a['saving_macs']:,.0f}",
            ("skipped: " if a["skipped"] else "") + a["why"],
        )
        for a in data["layers"]
    ]
    return _table(["layer", "module", score, "MACs saved", "decision"], rows)


def _page(title: str, parts: Sequence[str]) -> str:
    """A self-contained XHTML page of ``parts``."""
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:left}svg{display:block;margin:1em 0}"
    )
    return (
        '<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/>'
        f"<title>{escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _summary(data: dict[str, Any], name: str) -> list[tuple[str, str]]:
    """The report's first table: what the bundle is and what the build measured."""
    m, c, t, b = data["metrics"], data["cost"], data["training"], data.get("bundle", {})
    majority = m.get("majority_accuracy")
    baseline = f" (always answering the most frequent label: {majority:.4f})" if majority else ""
    built = f"built {b.get('created', '?')} by edge-vl {b.get('edge_vl_version', '?')}"
    summary = [
        ("bundle", f"{name or 'this bundle'}, {built}"),
        (
            "model",
            f"{data['model']['family']} ({data['model']['layers']} skippable layers) from "
            f"{data['model']['source']}; {b.get('precision', '?')} weights",
        ),
        ("eval accuracy", f"{m['eval_accuracy']:.4f} on {m['eval_examples']} rows{baseline}"),
        ("skipped layers", f"{data['plan']['skipped'] or 'none'} ({data['plan']['method']})"),
        (
            "retained MACs",
            f"{c['retained_model']:,.0f} of {c['full_model']:,.0f} ({c['retained_fraction']:.1%})",
        ),
        (
            "trainable parameters",
            f"{t['trainable_parameters']:,} of {t['total_parameters']:,} ({t['trainable_fraction']:.2%})",
        ),
        ("training", f"{t['steps']} steps; build took {t['seconds']} s"),
        ("bundle size", f"{data.get('bundle_bytes', 0) / 1e6:.1f} MB"),
        ("torch ↔ OpenVINO parity", f"max |diff| {m['parity_max_abs']:.2e} on {m['parity_samples']} inputs"),
    ]
    if sureness := data["plan"].get("uncertainty"):
        summary.insert(4, ("how sure the search is", describe_uncertainty(parse(Uncertainty, sureness))))
    if sizes := data["plan"].get("sizes"):
        scored = ", ".join(str(s["size"]) for s in sizes["candidates"])
        retained = c["retained_fraction"]  # of the full model at the checkpoint's size
        summary.insert(
            4,
            (
                "input size",
                f"{sizes['chosen']} px, chosen by the compute plan among {scored} px; the retained model "
                f"is {retained:.1%} of the full model's MACs at the checkpoint's size"
                + (f". {doubt[0].upper()}{doubt[1:]}." if (doubt := parse(SizePlan, sizes).doubt()) else ""),
            ),
        )
    return summary


def _latency(lat: float | None) -> str:
    return "" if lat is None else f"{lat:.2f}"


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str]]) -> str:
    head = "" if header is None else "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"
