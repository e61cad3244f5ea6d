"""Data files as people write them: CSV dialects from Excel, Windows paths, encodings, and the
training lengths a user typed."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from edge_vl import DataError, read_bundle
from edge_vl.cli import cli
from edge_vl.data import read_examples
from tests.conftest import make_shapes_dataset


def _rows(shapes_data) -> list[dict]:
    return [json.loads(line) for line in shapes_data[0].read_text().splitlines()]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_with_comma_semicolon_or_tab_is_read(shapes_data, tmp_path, delimiter):
    rows = _rows(shapes_data)[:4]
    shutil.copytree(shapes_data[0].parent / "images", tmp_path / "images")
    lines = [delimiter.join(["image", "text", "label"])]
    lines += [delimiter.join([r["image"], f'"{r["text"]}; really{delimiter}"', r["label"]]) for r in rows]
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode())  # Excel: BOM and CRLF
    examples = read_examples(path)
    assert [e.label for e in examples] == [r["label"] for r in rows]
    assert examples[0].text == f"{rows[0]['text']}; really{delimiter}" and examples[0].line == 2


def test_a_csv_without_the_columns_shows_the_header_it_found(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("Bild|Frage|Antwort\na.png|t|x\n")
    with pytest.raises(DataError) as err:
        read_examples(path, check_images=False)
    message = str(err.value)
    assert f"{path}:1:" in message and "lacks column(s) ['image', 'text', 'label']" in message
    assert "'Bild|Frage|Antwort'" in message and "semicolons" in message


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("image;text;label\na.png;was für eine Farbe?;rot\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"d\.csv:2: not UTF-8 text \(in Excel, save as 'CSV UTF-8'"):
        read_examples(path, check_images=False)


def test_windows_separators_in_relative_paths_work(shapes_data, tmp_path):
    rows = _rows(shapes_data)[:3]
    shutil.copytree(shapes_data[0].parent / "images", tmp_path / "images")
    text = "image,text,label\n" + "".join(
        f"{r['image'].replace('/', chr(92))},q,{r['label']}\n" for r in rows
    )
    (tmp_path / "win.csv").write_text(text)
    examples = read_examples(tmp_path / "win.csv")
    assert [e.image for e in examples] == [tmp_path / r["image"] for r in rows]


def test_a_windows_drive_path_is_named_as_one(tmp_path):
    (tmp_path / "d.csv").write_text("image,text,label\nC:\\data\\images\\a.png,q,x\n")
    with pytest.raises(DataError, match=r"d\.csv:2: field 'image': .*a Windows path"):
        read_examples(tmp_path / "d.csv")


def test_epochs_a_user_gave_are_kept_on_small_data(tmp_path, tiny_checkpoint):
    train, evals = make_shapes_dataset(tmp_path / "data", n_images=40, seed=5)  # 60 training rows
    out = tmp_path / "b"
    args = ["build", "--model", str(tiny_checkpoint), "--data", str(train), "--eval-data", str(evals),
            "--out", str(out), "--skip-layers", "1", "--epochs", "1", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "--epochs 1 kept as given" in result.output and "epochs 1 →" not in result.output
    training = read_bundle(out).data["training"]
    assert training["epochs"] == pytest.approx(1.0) and training["steps"] < 300, training
    assert "batch size 32 → 7" in result.output  # what was not given still adapts, and says so


def test_resume_refuses_model_weights_changed_at_the_same_size(tmp_path, tiny_checkpoint, monkeypatch):
    import contextlib

    from edge_vl import pipeline as build_module
    from tests.conftest import build_args

    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    data = make_shapes_dataset(tmp_path / "data", seed=4)
    calls = {"n": 0}

    @contextlib.contextmanager
    def stop_soon():
        def should_stop():
            calls["n"] += 1
            return calls["n"] > 3

        yield should_stop

    monkeypatch.setattr(build_module, "stop_on_signals", stop_soon)
    args = build_args(model, data, tmp_path / "b", "--skip-layers", "1", "--checkpoint-every", "1")
    assert CliRunner().invoke(cli, args).exit_code == 130  # interrupted, checkpoint saved
    weights = next(model.glob("*.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[-8:] = bytes(8)  # other weights, same size
    weights.write_bytes(bytes(raw))
    monkeypatch.undo()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"model file(s) {weights.resolve()} changed" in result.output


def test_csv_manifest_and_relative_paths(tmp_path, shapes_data):
    image = next((shapes_data[0].parent / "images").iterdir())
    (tmp_path / "img.png").write_bytes(image.read_bytes())
    (tmp_path / "d.csv").write_text('image,text,label\nimg.png,"what, exactly?",red\n')
    [example] = read_examples(tmp_path / "d.csv")
    assert example.image == tmp_path / "img.png" and example.text == "what, exactly?" and example.line == 2


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ('{"image": "a.png", "text": "t"}\n', "d.jsonl", ":1: missing field 'label'"),
        ('{"image": "a.png", "text": "t", "label": "x"}\n{oops\n', "d.jsonl", ":2: invalid JSON"),
        ('["a.png", "t", "x"]\n', "d.jsonl", ":1: row must be an object"),
        ('{"image": "a.png", "text": " ", "label": "x"}\n', "d.jsonl", ":1: field 'text' is empty"),
        ("image,text\na.png,t\n", "d.csv", ":1: CSV header lacks column(s) ['label']"),
        ("", "d.jsonl", "manifest has no rows"),
        ("x", "d.txt", "unsupported manifest type"),
    ],
)
def test_bad_manifests_name_file_line_and_field(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_examples(path, check_images=False)
    assert str(path) in str(err.value) and message in str(err.value)


def test_bom_prefixed_csv_and_jsonl_are_read(shapes_data, tmp_path):
    rows = [json.loads(line) for line in shapes_data[0].read_text().splitlines()[:3]]
    images = shapes_data[0].parent
    csv_text = "image,text,label\n" + "".join(
        f"{images / r['image']},{r['text']},{r['label']}\n" for r in rows
    )
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + csv_text.encode())
    jsonl = "".join(json.dumps({**r, "image": str(images / r["image"])}) + "\n" for r in rows)
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl.encode())
    for name in ("excel.csv", "bom.jsonl"):
        assert [e.label for e in read_examples(tmp_path / name)] == [r["label"] for r in rows]
