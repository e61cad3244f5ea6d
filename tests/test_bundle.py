"""Bundle trust: what the Predictor loads is what was verified, every malformed manifest is a
BundleError naming its field, nothing outside the bundle is read, and signatures are enforced."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_vl import BundleError, IncompatibleBundleError, Predictor, read_bundle
from edge_vl.bundle import manifest_digest
from edge_vl.cli import cli
from edge_vl.fileio import sha256_file
from edge_vl.manifest import FORMAT_VERSION, MANIFEST_NAME


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_bundle, dst)
    return dst


def rewrite(bundle: Path, change) -> None:
    """Apply ``change`` to the manifest dict and recompute its hash, as a forger or a buggy tool
    would: only the schema and the cross-checks can catch what follows."""
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    data["manifest_sha256"] = manifest_digest(data)
    path.write_text(json.dumps(data))


def rehash(bundle: Path, name: str) -> None:
    """Update ``files[name]`` to the file's current bytes (and the manifest hash)."""

    def change(data):
        data["files"][name] = {"sha256": sha256_file(bundle / name), "size": (bundle / name).stat().st_size}

    rewrite(bundle, change)


def test_valid_bundle_reads(bundle_copy):
    bundle = read_bundle(bundle_copy)
    assert bundle.manifest.format_version == FORMAT_VERSION
    assert bundle.labels and Predictor(bundle_copy).labels == bundle.labels


@pytest.mark.parametrize("name", ["manifest.json", "model.xml", "model.bin", "tokenizer.json", "report.html"])
def test_one_flipped_byte_in_any_file_is_refused(bundle_copy, name):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError):
        Predictor(bundle_copy)
    result = CliRunner().invoke(cli, ["info", str(bundle_copy)])
    assert result.exit_code == 2 and "error:" in result.output


@pytest.mark.parametrize("name", ["model.bin", "model.xml", "tokenizer.json"])
def test_a_loaded_file_missing_from_files_is_refused(bundle_copy, name):
    rewrite(bundle_copy, lambda d: d["files"].pop(name))
    with pytest.raises(BundleError, match=f"files does not list.*{name}"):
        Predictor(bundle_copy)


def test_empty_files_and_a_model_outside_the_bundle_are_refused(bundle_copy, tmp_path):
    rewrite(bundle_copy, lambda d: d.update(files={}))
    with pytest.raises(BundleError, match="files does not list"):
        Predictor(bundle_copy)


@pytest.mark.parametrize(
    "name", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin", "~/x", "a\\b", ".", "./", "a/."]
)
def test_paths_leaving_the_bundle_are_refused_without_reading_them(bundle_copy, tmp_path, name):
    secret = tmp_path / "outside.bin"
    secret.write_bytes(b"secret bytes of a file outside the bundle")

    def change(data):
        data["files"][name] = {"sha256": "0" * 64, "size": 1}

    rewrite(bundle_copy, change)
    with pytest.raises(BundleError, match="not a plain relative path") as info:
        read_bundle(bundle_copy)
    message = str(info.value).replace(str(bundle_copy), "")  # its temp path may hold any digits
    assert str(secret.stat().st_size) not in message


def test_a_symlink_leaving_the_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "model.bin"
    shutil.copy(bundle_copy / "model.bin", outside)
    (bundle_copy / "model.bin").unlink()
    (bundle_copy / "model.bin").symlink_to(outside)
    with pytest.raises(BundleError, match="leaves the bundle directory"):
        Predictor(bundle_copy)


def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return change


MALFORMED = {
    "missing-model": (_set("model", KeyError), "model: missing"),
    "missing-head-kind": (_set("head.kind", KeyError), "head.kind: missing"),
    "labels-not-list": (_set("head.labels", "red"), "head.labels: expected a list"),
    "label-not-string": (_set("head.labels.0", 3), r"head.labels\[0\]: expected a string"),
    "one-label-too-many": (
        lambda d: d["head"]["labels"].append("extra"),
        "outputs 5 scores but head.labels has 6",
    ),
    "unknown-head-kind": (_set("head.kind", "tanh"), "kind must be one of"),
    "size-string": (_set("preprocessing.image.size", "64"), "preprocessing.image.size: expected a list"),
    "size-huge": (_set("preprocessing.image.size", [10**30, 10**30]), "preprocessing.image: size must be"),
    "std-zero": (_set("preprocessing.image.std", [0, 0, 0]), "std values must be positive"),
    "mean-null": (_set("preprocessing.image.mean", None), "preprocessing.image.mean: expected a list"),
    "resample-odd": (_set("preprocessing.image.resample", "magic"), "resample must be one of"),
    "max-length-bool": (_set("preprocessing.text.max_length", True), "max_length: expected an integer"),
    "max-length-huge": (_set("preprocessing.text.max_length", 10**12), "max_length must be within"),
    "inputs-not-list": (_set("model.inputs", {}), "model.inputs: expected a list"),
    "input-unknown": (_set("model.inputs.0.name", "secret"), "names the runtime cannot feed"),
    "shape-negative": (_set("model.inputs.0.shape", [-1, -5]), "out of range"),
    "dtype-odd": (_set("model.inputs.0.dtype", "float8"), "dtype 'float8' is not supported"),
    "precision-odd": (_set("model.precision", "int3"), "precision must be one of"),
    "skipped-out-of-range": (_set("architecture.skipped", [99]), "skipped and kept must split"),
    "runtime-not-object": (_set("runtime", []), "runtime: expected an object"),
    "files-entry-bad-hash": (
        lambda d: d["files"].update({"model.bin": {"sha256": "x", "size": 1}}),
        "sha256 must be 64",
    ),
    "format-string": (_set("format_version", "2"), "format_version: missing or not an integer"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_gives_bundle_error_naming_the_field(bundle_copy, case):
    change, message = MALFORMED[case]
    rewrite(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        Predictor(bundle_copy)


def test_deeply_nested_or_huge_manifests_are_bundle_errors(bundle_copy):
    path = bundle_copy / MANIFEST_NAME
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match=r"nested too deeply|not a valid JSON"):
        read_bundle(bundle_copy)
    path.write_text('{"format_version": 2, "x": "' + "a" * (17 << 20) + '"}')
    with pytest.raises(BundleError, match="not a manifest"):
        read_bundle(bundle_copy)


def test_non_finite_numbers_are_refused(bundle_copy):
    rewrite(bundle_copy, _set("preprocessing.image.rescale_factor", float("inf")))
    with pytest.raises(BundleError, match="rescale_factor: expected a finite number"):
        Predictor(bundle_copy)


@pytest.mark.parametrize("content", [b"not json", b'{"version": "1.0"}', b"\xff\xfe"])
def test_a_bad_tokenizer_file_is_a_bundle_error(bundle_copy, content):
    (bundle_copy / "tokenizer.json").write_bytes(content)
    rehash(bundle_copy, "tokenizer.json")
    with pytest.raises(BundleError, match="tokenizer"):
        Predictor(bundle_copy)


def test_a_manifest_edited_without_its_hash_is_refused(bundle_copy):
    path = bundle_copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["head"]["labels"][0] = "forged"
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="manifest_sha256"):
        read_bundle(bundle_copy)


def test_other_format_versions_are_refused(bundle_copy):
    rewrite(bundle_copy, _set("format_version", FORMAT_VERSION + 1))
    with pytest.raises(IncompatibleBundleError, match="newer than this edge-vl reads"):
        read_bundle(bundle_copy)
    rewrite(bundle_copy, _set("format_version", 1))
    with pytest.raises(IncompatibleBundleError, match="rebuild it"):
        read_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        read_bundle(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        read_bundle(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        read_bundle(tmp_path / "file")


def test_deleted_file_is_refused(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"'tokenizer\.json' listed in the manifest is missing"):
        Predictor(bundle_copy)


# -- signatures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from edge_vl.signing import generate_key

    root = tmp_path_factory.mktemp("keys")
    for name in ("ours", "theirs"):
        generate_key(root / name, root / f"{name}.pub")
    return root


def test_signed_bundle_loads_with_the_right_key_only(bundle_copy, keys, monkeypatch):
    runner = CliRunner()
    unsigned = runner.invoke(
        cli, ["predict", str(bundle_copy), "x.png", "q", "--trusted-key", str(keys / "ours.pub")]
    )
    assert unsigned.exit_code == 2 and "not signed" in unsigned.output

    result = runner.invoke(cli, ["sign", str(bundle_copy), "--key", str(keys / "ours")])
    assert result.exit_code == 0, result.output
    assert Predictor(bundle_copy, trusted_keys=[keys / "ours.pub"]).bundle.signed_by
    with pytest.raises(BundleError, match="not a trusted key"):
        Predictor(bundle_copy, trusted_keys=[keys / "theirs.pub"])
    monkeypatch.setenv("EDGE_VL_TRUSTED_KEYS", str(keys / "theirs.pub"))
    with pytest.raises(BundleError, match="not a trusted key"):
        Predictor(bundle_copy)  # the environment's keys apply by default
    monkeypatch.delenv("EDGE_VL_TRUSTED_KEYS")

    original = copy.deepcopy(json.loads((bundle_copy / MANIFEST_NAME).read_text()))
    rewrite(bundle_copy, _set("head.labels.0", "forged"))  # a consistent forgery: hashes recomputed
    with pytest.raises(BundleError, match="changed after it was signed"):
        Predictor(bundle_copy, trusted_keys=[keys / "ours.pub"])
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(original, indent=1))
    with pytest.raises(BundleError, match="changed after it was signed"):
        Predictor(bundle_copy, trusted_keys=[keys / "ours.pub"])  # same content, other bytes


def test_a_file_changed_after_signing_is_refused(bundle_copy, keys):
    from edge_vl.signing import sign_bundle

    sign_bundle(bundle_copy, keys / "ours")
    data = bytearray((bundle_copy / "model.bin").read_bytes())
    data[100] ^= 0xFF
    (bundle_copy / "model.bin").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"'model\.bin' was modified"):
        Predictor(bundle_copy, trusted_keys=[keys / "ours.pub"])


def test_build_signs_with_sign_key(tmp_path, tiny_checkpoint, shapes_data, keys):
    from tests.conftest import build_args

    out = tmp_path / "signed"
    args = build_args(
        tiny_checkpoint, shapes_data, out, "--skip-layers", "1", "--sign-key", str(keys / "ours")
    )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert read_bundle(out, trusted_keys=[keys / "ours.pub"]).signed_by in result.output


def test_a_manifest_written_by_an_earlier_build_still_loads():
    """tests/data/manifest-2026-11-30.json: the demo bundle's manifest of 2026-11-30 (format 2,
    before typed build records, search estimators and uncertainties; its data paths were made
    repository-relative when it was committed, so its own hash no longer matches): it parses into
    the typed Manifest, and the report renders from it."""
    from edge_vl.manifest import Manifest
    from edge_vl.report import render_html, report_data
    from edge_vl.schema import parse

    path = Path(__file__).parent / "data" / "manifest-2026-11-30.json"
    manifest = parse(Manifest, json.loads(path.read_text(encoding="utf-8")))
    assert manifest.metrics.eval_accuracy == pytest.approx(0.9575, abs=1e-4)
    assert manifest.skip_plan.method == "das" and manifest.skip_plan.search is not None
    assert manifest.skip_plan.search.estimator == "gates" and manifest.skip_plan.search.uncertainty is None
    assert manifest.architecture.skipped == (0, 3, 10, 11)
    assert "0.9575" in render_html(report_data(manifest))


def test_a_converted_bundle_is_compared_with_its_own_accuracy():
    """An FP16 or INT8 bundle answers as its converted model did in the build, not as the torch
    model: `eval` on the device compares with that candidate's accuracy (the precision record is
    typed and round-trips)."""
    import dataclasses

    from edge_vl.manifest import Manifest
    from edge_vl.schema import parse, to_json

    path = Path(__file__).parent / "data" / "manifest-2026-11-30.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert parse(Manifest, data).shipped_accuracy == pytest.approx(0.9575, abs=1e-4)  # FP32: torch's
    data["precision_choice"] = {
        "requested": "auto", "chosen": "int8", "reason": "int8: fastest", "max_accuracy_drop": 0.05,
        "vnni": True, "target": {"cpu": "Old CPU", "latency_scale": {"fp32": 1.5, "int8": 2.5}},
        "candidates": [
            {"precision": "fp32", "accuracy": 0.9575, "agreement_with_fp32": 1.0, "latency_ms": 10.0,
             "size_bytes": 100},
            {"precision": "int8", "accuracy": 0.9401, "agreement_with_fp32": 0.97, "latency_ms": 5.0,
             "size_bytes": 30},
        ],
    }  # fmt: skip
    manifest = parse(Manifest, data)
    assert manifest.shipped_accuracy == 0.9401 and manifest.precision_choice is not None
    assert manifest.precision_choice.target is not None and manifest.precision_choice.target.cpu == "Old CPU"
    assert to_json(manifest)["precision_choice"] == data["precision_choice"]
    bare = dataclasses.replace(manifest.precision_choice, candidates=())  # falls back to torch's
    fallback = dataclasses.replace(manifest, precision_choice=bare).shipped_accuracy
    assert fallback == manifest.metrics.eval_accuracy
