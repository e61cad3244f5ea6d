"""Bundle verification: tampered, incomplete and newer-format bundles are refused clearly."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from edge_vl import BundleError, IncompatibleBundleError, Predictor, read_bundle
from edge_vl.bundle import FORMAT_VERSION, finalize_manifest, staged_bundle
from edge_vl.cli import cli


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_valid_bundle_reads(bundle_copy):
    bundle = read_bundle(bundle_copy)
    assert bundle.manifest["format_version"] == FORMAT_VERSION
    assert bundle.labels


def test_one_flipped_byte_in_the_ir_is_refused(bundle_copy):
    data = bytearray((bundle_copy / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle_copy / "model.bin").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"'model\.bin' was modified"):
        read_bundle(bundle_copy)
    result = CliRunner().invoke(cli, ["info", str(bundle_copy)])
    assert result.exit_code == 2 and "model.bin" in result.output


def test_deleted_file_is_refused(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"'tokenizer\.json' listed in the manifest is missing"):
        Predictor(bundle_copy)


def test_newer_format_version_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleBundleError, match="newer than this edge-vl reads"):
        read_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        read_bundle(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        read_bundle(tmp_path / "nope")


def test_staged_bundle_is_atomic(tmp_path):
    out = tmp_path / "b"
    with pytest.raises(RuntimeError), staged_bundle(out) as staging:
        (staging / "x.txt").write_text("half")
        raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []

    with staged_bundle(out) as staging:
        (staging / "x.txt").write_text("whole")
        finalize_manifest(staging, {"architecture": {}, "model": {}, "preprocessing": {}, "head": {}})
    assert (out / "x.txt").read_text() == "whole"
    assert read_bundle(out).manifest["files"]["x.txt"]["size"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
