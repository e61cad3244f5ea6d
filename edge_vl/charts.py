"""Self-contained SVG charts for the build report (and the benchmark pages): axes with ticks,
lines, a scatter of variants, xy curves — plain markup, no scripts, no plotting library."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

#: colour cycle of the plots (colour-blind safe, Okabe–Ito)
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def escape(value: Any) -> str:
    """``value`` as text safe inside XHTML/SVG markup and attributes."""
    return html.escape(str(value), quote=True)


_W, _H, _PAD = 640, 320, 72


def _axes(xs: tuple[float, float], ys: tuple[float, float], xlabel: str, ylabel: str) -> list[str]:
    out = [
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 16}" y2="{_H - _PAD}" stroke="#444"/>',
        f'<line x1="{_PAD}" y1="16" x2="{_PAD}" y2="{_H - _PAD}" stroke="#444"/>',
        f'<text x="{(_W + _PAD) / 2}" y="{_H - 12}" text-anchor="middle" font-size="12">'
        f"{escape(xlabel)}</text>",
        f'<text x="14" y="{_H / 2}" transform="rotate(-90 14 {_H / 2})" text-anchor="middle" '
        f'font-size="12">{escape(ylabel)}</text>',
    ]
    for x in ticks(*xs):
        px, py = _px(x, xs), _H - _PAD + 16
        out.append(f'<text x="{px:.1f}" y="{py}" text-anchor="middle" font-size="11">{x:g}</text>')
    for y in ticks(*ys):
        out.append(
            f'<text x="{_PAD - 6}" y="{_py(y, ys) + 4:.1f}" text-anchor="end" font-size="11">{y:.3g}</text>'
        )
    return out


def ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10^n) inside ``[lo, hi]``, at most ``most`` of them."""
    raw = (hi - lo) / max(1, most - 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), 10 * magnitude)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _span(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    return lo, hi


def _padded(span: tuple[float, float], margin: float = 0.05) -> tuple[float, float]:
    """``span`` widened by ``margin`` of its width on both sides (dots clear of the axes)."""
    pad = (span[1] - span[0]) * margin
    return span[0] - pad, span[1] + pad


def _px(x: float, xs: tuple[float, float]) -> float:
    return _PAD + (x - xs[0]) / (xs[1] - xs[0]) * (_W - _PAD - 24)


def _py(y: float, ys: tuple[float, float]) -> float:
    return _H - _PAD - (y - ys[0]) / (ys[1] - ys[0]) * (_H - _PAD - 24)


def line_chart(
    series: dict[str, list[float]], xlabel: str, ylabel: str, *, highlighted: Sequence[str] | None = None
) -> str:
    """One polyline per series over x = 1…n, with a legend. With ``highlighted``, those series get a
    colour each and a thick line; the others are thin, grey and dashed (so no two look alike)."""
    n = max(len(v) for v in series.values())
    xs = (1.0, float(max(n, 2)))
    ys = _span([y for v in series.values() for y in v])
    out = _axes(xs, ys, xlabel, ylabel)
    coloured = list(series) if highlighted is None else list(highlighted)
    for j, (name, values) in enumerate(series.items()):
        if name in coloured:
            style = f'stroke="{COLOURS[coloured.index(name) % len(COLOURS)]}" stroke-width="2.5"'
        else:
            style = 'stroke="#999" stroke-width="1" stroke-dasharray="4,3"'
        points = " ".join(f"{_px(i + 1, xs):.1f},{_py(v, ys):.1f}" for i, v in enumerate(values))
        out.append(f'<polyline fill="none" {style} points="{points}"/>')
        colour = style.split('"')[1]
        out.append(
            f'<text x="{_W + 8}" y="{24 + 14 * j}" font-size="11" fill="{colour}">layer {escape(name)}</text>'
        )
    return _svg(out, extra_width=120)


def scatter_chart(variants: Sequence[dict[str, Any]], baseline: float | None = None) -> str:
    """Eval accuracy against the retained fraction of the full model's MACs, one labelled dot each,
    on axes from 0 to the full model (x) and from below the ``baseline`` accuracy (always the most
    frequent label) to 1 (y), both drawn as reference lines."""
    points = {
        v["variant"]: [(v["retained_macs_fraction"], v["eval_accuracy"], v["variant"])] for v in variants
    }
    floor = min([v["eval_accuracy"] for v in variants] + ([baseline] if baseline is not None else []))
    ys = (max(0.0, math.floor(floor * 10 - 0.5) / 10), 1.0)
    lines: dict[str, tuple[float | None, float | None]] = {"full model": (1.0, None)}
    if baseline:
        lines["most frequent label"] = (None, baseline)
    return xy_chart(
        points,
        "MACs, fraction of the full model",
        "eval accuracy",
        legend=False,
        x_span=(0.0, 1.05),
        y_span=ys,
        reference=lines,
    )


def xy_chart(
    series: dict[str, list[tuple[float, float, str]]],
    xlabel: str,
    ylabel: str,
    *,
    joined: Sequence[str] = (),
    x_includes: float | None = None,
    legend: bool = True,
    x_span: tuple[float, float] | None = None,
    y_span: tuple[float, float] | None = None,
    reference: dict[str, tuple[float | None, float | None]] | None = None,
) -> str:
    """Labelled dots ``(x, y, label)`` per series, one colour each; the series named in ``joined``
    are also connected in x order. ``x_includes``: a value the x axis must span; ``x_span`` and
    ``y_span`` fix the axes; ``reference``: labelled dashed lines at ``(x, None)`` or ``(None, y)``."""
    points = [p for ps in series.values() for p in ps]
    xs = x_span or _padded(_span([p[0] for p in points] + ([x_includes] if x_includes is not None else [])))
    ys = y_span or _padded(_span([p[1] for p in points]))
    out = _axes(xs, ys, xlabel, ylabel)
    dashed, grey = 'stroke="#999" stroke-dasharray="4,3"', 'font-size="11" fill="#666"'
    for label, (x, y) in (reference or {}).items():
        if x is not None:
            px = _px(x, xs)
            out.append(f'<line x1="{px:.1f}" y1="16" x2="{px:.1f}" y2="{_H - _PAD}" {dashed}/>')
            out.append(f'<text x="{px - 4:.1f}" y="28" text-anchor="end" {grey}>{escape(label)}</text>')
        elif y is not None:
            py = _py(y, ys)
            out.append(f'<line x1="{_PAD}" y1="{py:.1f}" x2="{_W - 16}" y2="{py:.1f}" {dashed}/>')
            out.append(f'<text x="{_PAD + 6}" y="{py - 5:.1f}" {grey}>{escape(label)} ({y:.3f})</text>')
    for j, (name, ps) in enumerate(series.items()):
        colour = COLOURS[j % len(COLOURS)]
        if name in joined:
            line = " ".join(f"{_px(x, xs):.1f},{_py(y, ys):.1f}" for x, y, _ in sorted(ps))
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>')
        for x, y, label in ps:
            px, py = _px(x, xs), _py(y, ys)
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"/>')
            out.append(f'<text x="{px + 6:.1f}" y="{py - 6:.1f}" font-size="11">{escape(label)}</text>')
        if legend:
            out.append(
                f'<text x="{_W + 8}" y="{24 + 14 * j}" font-size="11" fill="{colour}">{escape(name)}</text>'
            )
    return _svg(out, extra_width=160 if legend else 0)


def _svg(elements: list[str], extra_width: int = 0) -> str:
    width = _W + extra_width
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_H}" viewBox="0 0 {width} {_H}">'
        + "".join(elements)
        + "</svg>"
    )
