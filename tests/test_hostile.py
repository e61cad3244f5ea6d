"""Hostile and careless use: a build never deletes or changes a user's files, a kill at any
instant leaves a whole bundle (or none), untrusted images cannot start programs, and every odd
input gets a typed error or a stated behaviour."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_vl import ClosedError, DataError, InputError, Predictor, read_bundle
from edge_vl.cli import cli
from edge_vl.data import read_examples
from edge_vl.output import OutputLock
from tests.conftest import build_args, make_shapes_dataset


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links not followed) with the sha256 of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def project(tmp_path, tiny_checkpoint):
    """A user's project: data (manifests + images), a model folder and notes, all copies."""
    root = tmp_path / "project"
    data = make_shapes_dataset(root / "data")
    shutil.copytree(tiny_checkpoint, root / "model")
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("my own file")
    return root, data


OUT_TARGETS = {
    "data-folder": lambda root: root / "data",
    "images-folder": lambda root: root / "data" / "images",
    "model-folder": lambda root: root / "model",
    "user-folder": lambda root: root / "notes",
    "project-root": lambda root: root,
    "cwd": lambda root: Path("."),
    "parent-of-cwd": lambda root: Path(".."),
    "a-file": lambda root: root / "notes" / "todo.txt",
}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("target", sorted(OUT_TARGETS))
def test_out_that_holds_user_files_is_refused_and_nothing_changes(project, monkeypatch, target, overwrite):
    root, data = project
    monkeypatch.chdir(root / "notes")
    before = snapshot(root)
    out = OUT_TARGETS[target](root)
    extra = ("--overwrite",) if overwrite else ()
    result = CliRunner().invoke(cli, build_args(root / "model", data, out, "--skip-layers", "1", *extra))
    assert result.exit_code == 2, result.output
    assert "error: --out" in result.output
    assert snapshot(root) == before
    assert not any(p.name.startswith(".") for p in root.rglob("*")), "no lock, work or staging left"


def test_out_symlink_and_bundle_with_foreign_files_are_refused(project, tiny_bundle, monkeypatch):
    root, data = project
    link = root / "link"
    link.symlink_to(root / "notes")
    args = build_args(root / "model", data, link, "--skip-layers", "1", "--overwrite")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "symbolic link" in result.output

    bundle = root / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "mine.txt").write_text("added by the user")
    before = snapshot(bundle)
    result = CliRunner().invoke(
        cli, build_args(root / "model", data, bundle, "--skip-layers", "1", "--overwrite")
    )
    assert result.exit_code == 2 and "mine.txt" in result.output
    assert snapshot(bundle) == before


def test_overwrite_replaces_a_bundle_and_cleans_what_killed_builds_left(project, tiny_bundle):
    root, data = project
    out = root / "bundle"
    shutil.copytree(tiny_bundle, out)
    for stale in (root / ".bundle.staging-dead", root / ".bundle.old-dead"):
        stale.mkdir()
        (stale / "junk").write_text("left by a killed build")
    empty = root / "empty"
    empty.mkdir()
    for target in (out, empty):
        args = build_args(root / "model", data, target, "--skip-layers", "2", "--overwrite")
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert read_bundle(target).manifest.architecture.skipped == (2,)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_a_second_build_of_the_same_out_is_refused_while_one_runs(project):
    root, data = project
    out = root / "bundle"
    with OutputLock(out):
        result = CliRunner().invoke(cli, build_args(root / "model", data, out, "--skip-layers", "1"))
    assert (
        result.exit_code == 1
        and "another edge-vl build" in result.output
        and str(os.getpid()) in result.output
    )
    assert not out.exists()


def test_a_crash_between_the_two_renames_of_a_fallback_swap_is_undone(tmp_path, tiny_bundle):
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, tmp_path / ".bundle.old-x1")  # out missing: the crash left it here
    with OutputLock(out):
        pass
    assert read_bundle(out).labels and not (tmp_path / ".bundle.old-x1").exists()


KILL_SCRIPT = textwrap.dedent("""
    import json, os, shutil, signal, sys
    from pathlib import Path
    import edge_vl.output as output
    from edge_vl.bundle import finalize_manifest
    from edge_vl.manifest import Manifest
    from edge_vl.schema import parse

    src, out, created = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    kill_at, can_exchange = int(sys.argv[4]), sys.argv[5]
    calls = 0

    def hooked(fn):
        def wrapped(*args, **kwargs):
            global calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped

    hooks = ((os, ("rename", "replace", "mkdir", "unlink", "rmdir")), (shutil, ("rmtree", "copy2")))
    for module, names in hooks:
        for name in names:
            setattr(module, name, hooked(getattr(module, name)))
    output.exchange = hooked(output.exchange) if can_exchange == "1" else (lambda a, b: False)
    data = json.loads((Path(src) / "manifest.json").read_text())
    body = parse(Manifest, {**data, "created": created})
    with output.OutputLock(out), output.staged_bundle(out, overwrite=True) as staging:
        for name in data["files"]:
            shutil.copy2(Path(src) / name, staging / name)
        finalize_manifest(staging, body)
    print("calls", calls)
""")


def _write(src: Path, out: Path, created: str, kill_at: int, exchange: bool) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-c",
        KILL_SCRIPT,
        str(src),
        str(out),
        created,
        str(kill_at),
        "1" if exchange else "0",
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)


@pytest.mark.parametrize(
    ("first", "exchange"), [(True, True), (False, True), (False, False)],
    ids=["first-build", "overwrite", "overwrite-without-renameat2"],
)  # fmt: skip
def test_a_kill_at_any_step_leaves_no_bundle_or_a_whole_one(tmp_path, tiny_bundle, first, exchange):
    out = tmp_path / "work" / "bundle"
    out.parent.mkdir()
    old = tmp_path / "old"
    if not first:
        assert _write(tiny_bundle, old, "old", 0, True).returncode == 0
    kill_at, killed = 1, 0
    while True:
        shutil.rmtree(out.parent)
        out.parent.mkdir()
        if not first:
            shutil.copytree(old, out)
        result = _write(tiny_bundle, out, "new", kill_at, exchange)
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, result.stderr
        killed += 1
        if not out.exists() and not first:
            with OutputLock(out):  # what the next build does first: undo a half-done fallback swap
                pass
        if out.exists():
            bundle = read_bundle(out)  # whole and verified
            assert bundle.data["created"] in (("new",) if first else ("old", "new")), kill_at
        else:
            assert first, f"killed at step {kill_at}: the old bundle is gone"
        rerun = _write(tiny_bundle, out, "new", 0, exchange)
        assert rerun.returncode == 0, rerun.stderr
        assert read_bundle(out).data["created"] == "new"
        assert [p.name for p in out.parent.iterdir()] == ["bundle"], kill_at  # nothing stale left
        kill_at += 1
    assert killed >= 8  # the hooks did see the steps of writing and swapping


# -- images that are not camera pictures ------------------------------------------------------------
def _hostile_images(tmp_path: Path) -> dict[str, Path]:
    im = Image.new("RGB", (16, 16), (200, 30, 30))
    files = {}
    for fmt, suffix in (("EPS", ".eps"), ("PDF", ".pdf"), ("ICO", ".ico"), ("EPS", ".jpg")):
        path = tmp_path / f"{fmt.lower()}-as{suffix}"
        im.save(path, format=fmt)
        files[path.name] = path
    psd = tmp_path / "photoshop.png"
    psd.write_bytes(
        b"8BPS\x00\x01"
        + b"\x00" * 6
        + b"\x00\x03"
        + b"\x00\x00\x00\x10" * 2
        + b"\x00\x08\x00\x03"
        + b"\x00" * 64
    )
    files[psd.name] = psd
    return files


def test_images_in_other_formats_are_refused_and_start_no_program(tmp_path, monkeypatch, tiny_bundle, sample):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "gs-was-called"
    stub = bin_dir / "gs"
    stub.write_text(f"#!/bin/sh\necho called >> {record}\nexit 1\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    files = _hostile_images(tmp_path)

    # the stub works: Pillow's EPS decoder, left to itself, runs it
    with pytest.raises(Exception):  # noqa: B017 (whatever the stub's failure turns into)
        Image.open(files["eps-as.jpg"]).load()
    assert record.exists()
    record.unlink()

    predictor = Predictor(tiny_bundle)
    for name, path in files.items():
        with pytest.raises(InputError, match="not an image in an accepted format"):
            predictor.predict(path, "what color is the shape?")
        with pytest.raises(InputError, match="not an image in an accepted format"):
            predictor.predict(path.read_bytes(), "what color is the shape?")
        manifest = tmp_path / f"{name}.jsonl"
        manifest.write_text(json.dumps({"image": str(path), "text": "what?", "label": "red"}) + "\n")
        with pytest.raises(DataError, match="not an image in an accepted format"):
            read_examples(manifest)
    lazily_opened = Image.open(files["eps-as.eps"])  # a user's own PIL object of a refused format
    with pytest.raises(InputError, match="EPS images are not accepted"):
        predictor.predict(lazily_opened, "what?")
    assert not record.exists(), "an external program was started"
    assert predictor.predict(*sample).label in predictor.labels


def test_camera_formats_are_read(tiny_bundle, tmp_path, sample):
    predictor = Predictor(tiny_bundle)
    im = Image.open(sample[0]).convert("RGB")
    for fmt in ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF"):
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        assert predictor.predict(buf.getvalue(), sample[1]).label in predictor.labels, fmt


def test_odd_images_and_texts_get_typed_errors(tiny_bundle, sample, tmp_path):
    predictor = Predictor(tiny_bundle)
    for empty in (np.zeros((0, 0, 3), dtype=np.uint8), Image.new("RGB", (0, 0))):
        with pytest.raises(InputError, match="no pixels"):
            predictor.predict(empty, sample[1])
    with pytest.raises(InputError, match="is a directory"):
        predictor.predict(tmp_path, sample[1])
    with pytest.raises(InputError, match="lone surrogate"):
        predictor.predict(sample[0], "what \ud800 color?")

    started = time.perf_counter()
    long = predictor.logits([sample[0]], [sample[1] + " x" * 500_000])  # a megabyte of text
    assert time.perf_counter() - started < 1.0
    assert np.array_equal(long, predictor.logits([sample[0]], [sample[1] + " x" * 50]))  # truncated alike
    with pytest.raises(InputError, match="has 5,000,000 characters"):
        predictor.predict(sample[0], "x" * 5_000_000)

    predictor.close()
    with pytest.raises(ClosedError, match="closed"):
        predictor.predict(*sample)


def test_unusable_cache_dir_is_named(tiny_bundle, tmp_path):
    file = tmp_path / "cache"
    file.write_text("not a directory")
    with pytest.raises(InputError, match="is a file"):
        Predictor(tiny_bundle, cache_dir=file)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="not writable"):
            Predictor(tiny_bundle, cache_dir=locked / "sub")


# -- data -------------------------------------------------------------------------------------------
def _manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_data_warnings_are_printed_and_recorded(tmp_path, tiny_checkpoint, shapes_data):
    rows = [json.loads(line) for line in shapes_data[0].read_text().splitlines()]
    for r in rows:
        r["image"] = str(shapes_data[0].parent / r["image"])
    rows[0]["label"], rows[1]["label"] = "Red", "red "
    train = _manifest(tmp_path / "train.jsonl", [*rows, rows[2]])  # one duplicate row
    evals = _manifest(
        tmp_path / "eval.jsonl", [rows[3], *[r for r in rows[4:8] if r["label"] in ("red", "blue")]]
    )
    out = tmp_path / "b"
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, (train, evals), out, "--skip-layers", "1"))
    assert result.exit_code == 0, result.output
    warnings = read_bundle(out).data["data"]["warnings"]
    assert any("'Red', 'red', 'red '" in w for w in warnings), warnings
    assert any("training rows repeat another row" in w for w in warnings), warnings
    assert any("eval rows also occur in the training data" in w for w in warnings), warnings
    assert all(f"warning: {w}" in result.output for w in warnings)
    assert "Data warnings" in (out / "report.html").read_text()


def test_single_class_and_tiny_search_data_are_refused(tmp_path, tiny_checkpoint, shapes_data):
    rows = [json.loads(line) for line in shapes_data[0].read_text().splitlines()]
    for r in rows:
        r["image"] = str(shapes_data[0].parent / r["image"])
    one = _manifest(tmp_path / "one.jsonl", [{**r, "label": "red"} for r in rows])
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, (one, one), tmp_path / "b1"))
    assert result.exit_code == 2 and "at least two classes" in result.output
    tiny = _manifest(tmp_path / "tiny.jsonl", [rows[0], {**rows[1], "label": "other"}])
    result = CliRunner().invoke(
        cli, build_args(tiny_checkpoint, (tiny, tiny), tmp_path / "b2", "--skip-count", "1")
    )
    assert result.exit_code == 2 and "the DAS search needs at least 10 training rows" in result.output
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()


def test_resume_refuses_images_rewritten_under_the_same_names(tmp_path, tiny_checkpoint, monkeypatch):
    import contextlib

    from edge_vl import pipeline as build_module

    data = make_shapes_dataset(tmp_path / "data", seed=3)
    out = tmp_path / "b"
    calls = {"n": 0}

    @contextlib.contextmanager
    def stop_soon():
        def should_stop():
            calls["n"] += 1
            return calls["n"] > 3

        yield should_stop

    monkeypatch.setattr(build_module, "stop_on_signals", stop_soon)
    args = build_args(tiny_checkpoint, data, out, "--skip-layers", "1", "--checkpoint-every", "1")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130, result.output  # interrupted, checkpoint saved
    image = next((data[0].parent / "images").iterdir())
    Image.new("RGB", (48, 48), (0, 0, 0)).save(image)  # same name, other pixels
    monkeypatch.undo()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "other settings or data" in result.output
    assert CliRunner().invoke(cli, [*args, "--restart"]).exit_code == 0


def test_a_full_disk_names_the_path_and_the_free_space(tmp_path, tiny_checkpoint, shapes_data):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill ({done.stderr.decode().strip()})")
    try:
        out = mount / "bundle"
        result = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-layers", "1"))
        assert result.exit_code == 1, result.output
        assert any(words in result.output for words in ("disk is full", "could not write", "no space left"))
        assert "free" in result.output and str(mount) in result.output
        assert not out.exists()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# -- small gaps: each typed, named, and leaving nothing behind -------------------------------------
def test_keygen_into_a_missing_folder_is_one_line_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["keygen", "--out", str(tmp_path / "missing" / "k")])
    assert result.exit_code == 2 and "the folder" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "missing").exists()


def test_a_fifo_is_not_an_image_and_is_never_opened(tiny_bundle, sample, tmp_path):
    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(InputError, match="not a regular file"):
        Predictor(tiny_bundle).predict(fifo, sample[1])


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_input_errors(tiny_bundle, threads):
    with pytest.raises(InputError, match="threads must be a whole number"):
        Predictor(tiny_bundle, threads=threads)


def test_a_build_refused_after_the_work_folder_exists_leaves_none(tmp_path, tiny_checkpoint, shapes_data):
    out = tmp_path / "b"
    result = CliRunner().invoke(cli, build_args(tiny_checkpoint, shapes_data, out, "--skip-count", "12"))
    assert result.exit_code == 2 and "--skip-count must be between 0 and 3" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no bundle, no .b.work, no lock
