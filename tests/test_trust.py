"""What a device trusts: signature settings fail closed, releases cannot roll back, and the OpenVINO
compile cache cannot swap a signed model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_vl import BundleError, InputError, Predictor, read_bundle
from edge_vl.cli import cli
from edge_vl.signing import TrustPolicy, generate_key, read_release_state, sign_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    for name in ("ours", "theirs"):
        generate_key(root / name, root / f"{name}.pub")
    return root


@pytest.fixture
def signed(tmp_path, tiny_bundle, keys) -> Path:
    """A copy of the tiny bundle signed with release 5."""
    bundle = tmp_path / "signed"
    shutil.copytree(tiny_bundle, bundle)
    sign_bundle(bundle, keys / "ours", release=5)
    return bundle


@pytest.fixture(autouse=True)
def no_trust_settings(monkeypatch):
    for name in ("EDGE_VL_TRUSTED_KEYS", "EDGE_VL_MIN_RELEASE", "EDGE_VL_RELEASE_STATE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("value", [":", "::", " : ", "", "   "])
def test_a_trusted_keys_variable_that_names_no_key_refuses_everything(signed, monkeypatch, value):
    monkeypatch.setenv("EDGE_VL_TRUSTED_KEYS", value)
    with pytest.raises(InputError, match=r"EDGE_VL_TRUSTED_KEYS is set to .* names no key file"):
        Predictor(signed)
    result = CliRunner().invoke(cli, ["info", str(signed)])
    assert result.exit_code == 2 and "names no key file" in result.output


def test_a_missing_key_file_in_the_variable_refuses_everything(signed, keys, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_VL_TRUSTED_KEYS", f"{keys / 'ours.pub'}{os.pathsep}{tmp_path / 'gone.pub'}")
    with pytest.raises(BundleError, match=r"EDGE_VL_TRUSTED_KEYS: .*gone\.pub: not a readable PEM"):
        Predictor(signed)


def test_trusted_keys_as_one_path_or_an_empty_list(signed, keys):
    assert Predictor(signed, trusted_keys=str(keys / "ours.pub")).bundle.signed_by  # a path, not letters
    assert Predictor(signed, trusted_keys=keys / "ours.pub").bundle.signature.release == 5
    with pytest.raises(InputError, match="trusted_keys is empty"):
        Predictor(signed, trusted_keys=[])
    with pytest.raises(InputError, match="must be a list of public key files, got int"):
        Predictor(signed, trusted_keys=3)


def test_a_release_below_the_minimum_is_refused(signed, keys, monkeypatch):
    ours = [keys / "ours.pub"]
    assert Predictor(signed, trusted_keys=ours, min_release=5).bundle.signature.release == 5
    with pytest.raises(BundleError, match="release 5 is older than the minimum release 6"):
        Predictor(signed, trusted_keys=ours, min_release=6)
    monkeypatch.setenv("EDGE_VL_MIN_RELEASE", "7")
    with pytest.raises(BundleError, match="minimum release 7"):
        Predictor(signed, trusted_keys=ours)
    monkeypatch.setenv("EDGE_VL_MIN_RELEASE", "seven")
    with pytest.raises(InputError, match="EDGE_VL_MIN_RELEASE is 'seven'"):
        Predictor(signed, trusted_keys=ours)
    monkeypatch.delenv("EDGE_VL_MIN_RELEASE")
    with pytest.raises(InputError, match="needs signature checks"):
        Predictor(signed, min_release=1)  # an unsigned number proves nothing
    result = CliRunner().invoke(
        cli, ["predict", str(signed), "x.png", "q", "--trusted-key", str(ours[0]), "--min-release", "9"]
    )
    assert result.exit_code == 2 and "older than the minimum release 9" in result.output


def test_a_device_that_accepted_release_n_refuses_older_ones(signed, keys, tmp_path):
    ours, state = [keys / "ours.pub"], tmp_path / "releases.json"
    newer = tmp_path / "newer"
    shutil.copytree(signed, newer)
    sign_bundle(newer, keys / "ours", release=8)
    Predictor(signed, trusted_keys=ours, release_state=state)  # release 5 accepted
    Predictor(newer, trusted_keys=ours, release_state=state)  # release 8 accepted
    assert read_release_state(state) == {Predictor(newer, trusted_keys=ours).bundle.signed_by: 8}
    with pytest.raises(BundleError, match=r"release 5 is older than release 8, which this device already "
                                          r"accepted .*a rollback"):  # fmt: skip
        Predictor(signed, trusted_keys=ours, release_state=state)
    assert Predictor(newer, trusted_keys=ours, release_state=state)  # the same release again is fine
    state.write_text("{not json")
    with pytest.raises(BundleError, match="not a release state file"):
        Predictor(newer, trusted_keys=ours, release_state=state)


def test_the_release_is_signed_and_cannot_be_raised_without_the_key(signed, keys):
    path = signed / "signature.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "release": 10**6}))
    with pytest.raises(BundleError, match="changed after it was signed"):
        Predictor(signed, trusted_keys=[keys / "ours.pub"])
    old_style = {k: v for k, v in record.items() if k not in ("format", "release")}
    path.write_text(json.dumps(old_style))
    with pytest.raises(BundleError, match=r"signature format None.*re-sign"):
        Predictor(signed, trusted_keys=[keys / "ours.pub"])


def test_the_default_release_is_the_build_time_and_info_shows_the_signature(tmp_path, tiny_bundle, keys):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    runner = CliRunner()
    assert "signature" in runner.invoke(cli, ["info", str(bundle)]).output
    assert "unsigned" in runner.invoke(cli, ["info", str(bundle)]).output
    result = runner.invoke(cli, ["sign", str(bundle), "--key", str(keys / "ours")])
    assert result.exit_code == 0, result.output
    created = read_bundle(bundle).manifest.created  # e.g. 2026-12-06T02:38:00+00:00
    release = int(created[:19].replace("-", "").replace("T", "").replace(":", ""))
    assert f"release {release}" in result.output
    unchecked = runner.invoke(cli, ["info", str(bundle)]).output
    assert f"release {release} (not checked" in unchecked
    checked = runner.invoke(cli, ["info", str(bundle), "--trusted-key", str(keys / "ours.pub"), "--json"])
    signature = json.loads(checked.output)["signature"]
    assert signature == {"signed": True, "checked": True, "key_id": signature["key_id"], "release": release}


def test_a_swapped_compile_cache_cannot_answer_for_a_signed_bundle(tmp_path, tiny_bundle, keys, sample):
    """Two signed bundles of one graph, their OpenVINO cache blobs exchanged: the signed bundle never
    answers with the other's weights, because signed bundles do not use a compile cache."""
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(tiny_bundle, first)
    shutil.copytree(tiny_bundle, second)
    weights = bytearray((second / "model.bin").read_bytes())
    weights[-4 * 64 :] = np.ones(64, np.float32).tobytes()  # other head weights, same graph
    (second / "model.bin").write_bytes(bytes(weights))
    from tests.test_bundle import rehash

    rehash(second, "model.bin")
    for bundle in (first, second):
        sign_bundle(bundle, keys / "ours", release=1)
    caches = {b: tmp_path / f"cache-{b.name}" for b in (first, second)}
    for bundle, cache in caches.items():
        Predictor(bundle, cache_dir=cache)  # unsigned use fills each cache
    [blob_1], [blob_2] = (list(c.glob("*.blob")) for c in caches.values())
    blob_1.write_bytes(blob_2.read_bytes())  # the attack: the second's blob under the first's name
    ours = [keys / "ours.pub"]
    with pytest.raises(InputError, match="cache_dir cannot be used with signature checks"):
        Predictor(first, trusted_keys=ours, cache_dir=caches[first])
    verified = Predictor(first, trusted_keys=ours).logits([sample[0]], [sample[1]])
    other = Predictor(second, trusted_keys=ours).logits([sample[0]], [sample[1]])
    assert not np.allclose(verified, other)  # the attack would be visible
    unsigned_cached = Predictor(first, cache_dir=caches[first]).logits([sample[0]], [sample[1]])
    assert np.allclose(unsigned_cached, other)  # what the cache did before: why signed bundles skip it


def test_a_cache_dir_others_can_write_is_refused(tiny_bundle, tmp_path):
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(InputError, match="writable by other users"):
        Predictor(tiny_bundle, cache_dir=shared)


def test_policy_resolution_reads_the_environment(keys, monkeypatch, tmp_path):
    assert not TrustPolicy.resolve().checks
    monkeypatch.setenv("EDGE_VL_TRUSTED_KEYS", str(keys / "ours.pub"))
    monkeypatch.setenv("EDGE_VL_RELEASE_STATE", str(tmp_path / "state.json"))
    policy = TrustPolicy.resolve()
    assert policy.checks and policy.state_file == tmp_path / "state.json" and policy.min_release is None
