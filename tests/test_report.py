"""The build report: it renders, and its numbers are the manifest's."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

from click.testing import CliRunner

from edge_vl import read_bundle
from edge_vl.cli import cli
from tests.conftest import build_args

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"


def test_report_of_a_searched_build_renders_and_matches_the_manifest(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-count", "2", "--search-epochs", "3",
                      "--das-turn", "2", "--max-steps", "4", "--search-estimator", "gates")  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'}" in result.output
    manifest = read_bundle(out).data  # verifies the hashes, report files included
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))

    assert data["metrics"] == manifest["metrics"]
    assert data["plan"]["skipped"] == manifest["architecture"]["skipped"]
    assert data["cost"]["retained_fraction"] == manifest["cost"]["retained_fraction"]
    assert data["gate_history"] == [r["gates"] for r in manifest["skip_plan"]["search"]["rounds"]]
    assert [a["skipped"] for a in data["layers"]] == [
        i in manifest["architecture"]["skipped"] for i in range(len(manifest["architecture"]["layers"]))
    ]
    lat = manifest["metrics"]["latency_ms"]
    assert lat["retained"] > 0 and lat["full"] > 0

    root = ET.parse(out / "report.html").getroot()  # well-formed: opens in any browser
    charts = root.findall(f".//{SVG}svg")
    assert len(charts) == 2  # gates over the search, accuracy vs MACs
    assert len(charts[0].findall(f"{SVG}polyline")) == len(data["layers"])
    text = "".join(root.itertext())
    assert f"{manifest['metrics']['eval_accuracy']:.4f}" in text
    assert f"{lat['retained']:.2f}" in text
    assert not root.findall(f".//{XHTML}script")
    # what a reader needs before the numbers: which bundle, when, which precision, against what
    assert out.name in text and manifest["created"] in text and "fp16 weights" in text
    assert f"always answering the most frequent label: {manifest['metrics']['majority_accuracy']:.4f}" in text
    accuracy_chart = "".join(charts[1].itertext())
    assert "full model" in accuracy_chart and "most frequent label" in accuracy_chart
    # skipped layers in colour and solid, kept ones grey and dashed: no two kept/skipped lines alike
    lines = charts[0].findall(f"{SVG}polyline")
    skipped = manifest["architecture"]["skipped"]
    dashed = [bool(line.get("stroke-dasharray")) for line in lines]
    assert dashed == [i not in skipped for i in range(len(lines))]
    assert len({line.get("stroke") for i, line in enumerate(lines) if i in skipped}) == len(skipped)


def test_report_screenshot_in_a_real_browser(tmp_path, tiny_bundle):
    """The report as headless Chromium draws it (skipped without a browser; .ci/run installs one)."""
    import pytest
    from PIL import Image

    from examples import report_screenshots as shots

    if shots.browser() is None:
        pytest.skip("no headless Chromium (Debian: apt-get install chromium)")
    png = shots.screenshot(tiny_bundle / "report.html", tmp_path / "report.png", width=900, height=1400)
    image = Image.open(png).convert("L")
    assert image.size == (900, 1400)
    ink = sum(1 for value in image.getdata() if value < 128)  # dark pixels: text and chart lines drawn
    assert ink > 5_000, ink


def test_a_build_ranked_by_the_prior_reports_its_losses_not_the_untouched_gates(
    tmp_path, tiny_checkpoint, shapes_data
):
    out = tmp_path / "b"
    prior = ("--search-estimator", "prior", "--search-prior-rows", "8")
    args = build_args(tiny_checkpoint, shapes_data, out, "--skip-count", "2", "--search-epochs", "3", *prior,
                      "--max-steps", "4")  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = read_bundle(out).data
    plan, search = manifest["skip_plan"], manifest["skip_plan"]["search"]
    # the gates never move, yet the prior decides (or says it cannot, from its 8 rows)
    decided = search["uncertainty"]["decided"]
    rows = min(8, search["val_rows"])  # --search-prior-rows 8, of the few rows held out
    assert plan["method"] == ("das" if decided else "das-undecided") and search["uncertainty"]["rows"] == rows
    assert [r.get("kind") for r in search["rounds"]] == ["prior"]  # no bandit round
    assert search["steps"] == math.ceil(search["train_rows"] / manifest["training"]["batch_size"])
    losses = search["rounds"][0]["losses"]
    assert plan["skipped"] == sorted(sorted(range(len(losses)), key=lambda i: (losses[i], i))[:2])
    assert plan["search_seconds"] > 0 and "prior scores, most redundant first" in result.output
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [a["score"] for a in data["layers"]] == [-v for v in losses] and data["gate_history"] == []
    text = "".join(ET.parse(out / "report.html").getroot().itertext())
    assert "prior score (higher: more redundant)" in text and "prior rank 1 of" in text
