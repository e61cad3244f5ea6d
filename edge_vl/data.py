"""Labelled image+text data: JSONL or CSV manifests of ``{"image", "text", "label"}`` rows.

Every row is checked before any work starts, so a bad row stops a build at once with a message
that names the file, the line and the field. Relative image paths are resolved against the
manifest's own directory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_vl.bundle import write_text_atomic
from edge_vl.errors import DataError

FIELDS = ("image", "text", "label")
#: what a row needs for an image-only model (a CLIP prompt head)
IMAGE_ONLY_FIELDS = ("image", "label")


def required_fields(require_text: bool) -> tuple[str, ...]:
    """The fields every data row must have: with ``text`` unless the model takes images only."""
    return FIELDS if require_text else IMAGE_ONLY_FIELDS


@dataclass(frozen=True)
class Example:
    """One labelled pair; ``manifest`` and ``line`` locate the row it came from."""

    image: Path
    text: str
    label: str
    manifest: str = ""
    line: int = 0


def read_examples(path: str | Path, *, check_images: bool = True, require_text: bool = True) -> list[Example]:
    """Read and validate a ``.jsonl`` or ``.csv`` manifest.

    With ``require_text=False`` (image-only models, e.g. a CLIP prompt head) ``text`` may be left
    out; it is read as ``""``.

    Raises:
        DataError: the file is missing or empty, a row is not an object with string ``image``,
            ``text`` and ``label`` fields, or (with ``check_images``) an image is missing or
            cannot be decoded. The message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("data manifest not found", path=str(path))
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    elif suffix == ".csv":
        rows = _csv_rows(path, require_text)
    else:
        raise DataError(f"unsupported manifest type {suffix!r}; expected .jsonl or .csv", path=str(path))
    checked: set[Path] | None = set() if check_images else None  # decode each distinct image once
    examples = [_to_example(row, path, line, checked, require_text) for line, row in rows]
    if not examples:
        raise DataError("manifest has no rows", path=str(path))
    return examples


def write_jsonl(examples: Iterable[Example], path: str | Path) -> Path:
    """Write examples as a JSONL manifest with image paths relative to the manifest when possible
    (atomically: a reader, e.g. another run sharing the directory, never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    lines = []
    for ex in examples:
        try:
            image = str(ex.image.resolve().relative_to(folder))
        except ValueError:
            image = str(ex.image)
        lines.append(json.dumps({"image": image, "text": ex.text, "label": ex.label}) + "\n")
    write_text_atomic(path, "".join(lines))
    return path


def label_set(examples: Sequence[Example]) -> list[str]:
    """The sorted distinct labels of ``examples``: the class order a head is built with."""
    return sorted({ex.label for ex in examples})


def _jsonl_rows(path: Path) -> Iterable[tuple[int, object]]:
    with path.open("r", encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield line_no, json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"invalid JSON ({e.msg} at column {e.colno})", path=str(path), line=line_no
                ) from e


def _csv_rows(path: Path, require_text: bool = True) -> Iterable[tuple[int, object]]:
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        needed = required_fields(require_text)
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"CSV header lacks column(s) {missing}; expected {list(FIELDS)}", path=str(path), line=1
            )
        for row in reader:
            yield reader.line_num, row


def _to_example(
    row: object, path: Path, line: int, checked: set[Path] | None, require_text: bool = True
) -> Example:
    """One validated row; its image is decoded unless ``checked`` is None or already holds it."""

    def fail(msg: str) -> DataError:
        return DataError(msg, path=str(path), line=line)

    if not isinstance(row, dict):
        raise fail(f"row must be an object with fields {list(FIELDS)}, got {type(row).__name__}")
    for field in required_fields(require_text):
        if field not in row:
            raise fail(f"missing field {field!r}")
        value = row[field]
        if not isinstance(value, str):
            raise fail(f"field {field!r} must be a string, got {type(value).__name__} ({value!r})")
        if not value.strip():
            raise fail(f"field {field!r} is empty")
    image = Path(row["image"]).expanduser()
    if not image.is_absolute():
        image = path.parent / image
    if checked is not None and image not in checked:
        _check_image(image, fail)
        checked.add(image)
    text = row["text"] if require_text else ""
    return Example(image=image, text=text, label=row["label"], manifest=str(path), line=line)


def _check_image(image: Path, fail) -> None:
    from edge_vl.errors import InputError
    from edge_vl.runtime.preprocess import load_image

    try:
        load_image(image)  # the same decoder, limits and checks as the device
    except InputError as e:
        raise fail(f"field 'image': {e}") from e


def read_label_prompts(path: str | Path) -> dict[str, str]:
    """A prompt per label from a JSON object (``{"scratch": "a photo of a scratched part", ...}``)
    or a text file of ``label<TAB>prompt`` lines, for heads that classify against label prompts.

    Raises:
        DataError: unreadable file, or a label or prompt that is not a non-empty string.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("label prompt file not found", path=str(path))
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            prompts = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg} at line {e.lineno})", path=str(path)) from e
        if not isinstance(prompts, dict):
            raise DataError("expected a JSON object of label → prompt", path=str(path))
        items = list(prompts.items())
    else:
        items = []
        for line_no, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            if "\t" not in raw:
                raise DataError("expected 'label<TAB>prompt'", path=str(path), line=line_no)
            items.append(tuple(part.strip() for part in raw.split("\t", 1)))
    for label, prompt in items:
        if not (isinstance(label, str) and label.strip() and isinstance(prompt, str) and prompt.strip()):
            raise DataError(f"label {label!r}: label and prompt must be non-empty strings", path=str(path))
    if not items:
        raise DataError("no label prompts in the file", path=str(path))
    return dict(items)
