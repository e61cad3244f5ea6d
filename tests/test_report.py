"""The build report: it renders, and its numbers are the manifest's."""

from __future__ import annotations

import json
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
                      "--das-turn", "2", "--max-steps", "4")  # fmt: skip
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
