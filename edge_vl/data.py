"""Labelled image+text data: JSONL or CSV manifests of ``{"image", "text", "label"}`` rows.

Every row is checked before any work starts, so a bad row stops a build at once with a message
that names the file, the line and the field. Relative image paths are resolved against the
manifest's own directory (Windows ``\\`` separators work too). Files may start with a UTF-8
byte-order mark (Excel's "CSV UTF-8"); CSV columns may be separated by commas, semicolons (Excel in
locales with a decimal comma) or tabs.
While checking, each image's bytes are hashed once (``Example.image_sha256``): a resumed build
compares them, so images rewritten under the same names are noticed.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from edge_vl.errors import DataError
from edge_vl.fileio import write_text_atomic

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
    #: sha256 of the image file's bytes, when the manifest was read with ``check_images``
    image_sha256: str = ""


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
    checked: dict[Path, str] | None = {} if check_images else None  # decode each distinct image once
    examples = [_to_example(row, path, line, checked, require_text) for line, row in rows]
    if not examples:
        raise DataError("manifest has no rows", path=str(path))
    return examples


#: what a folder of images to predict may hold (other files are left out)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def iter_inputs(path: str | Path, *, require_text: bool = True, text: str | None = None) -> Iterator[Example]:
    """Rows to predict, one at a time (a million rows cost no more memory than one): a ``.jsonl``
    or ``.csv`` manifest like the build's (``label`` optional: when present, it is kept), or a
    folder of images in name order, each asked ``text``. Images are not opened here: the
    prediction of a row whose image is bad reports it in its place.

    Raises:
        DataError: a missing file or folder, a bad row (file and line), a folder without ``text``
            for a model that needs one.
    """
    path = Path(path)
    if path.is_dir():
        if require_text and not text:
            raise DataError(
                "predicting a folder of images needs the question to ask each (--text)", path=str(path)
            )
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder", path=str(path))
        for image in images:
            yield Example(image=image, text=text or "", label="", manifest=str(path))
        return
    if not path.is_file():
        raise DataError("data manifest or image folder not found", path=str(path))
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    elif suffix == ".csv":
        rows = _csv_rows(path, require_text, require_label=False)
    else:
        raise DataError(
            f"unsupported manifest type {suffix!r}; expected .jsonl, .csv or a folder", path=str(path)
        )
    for line, row in rows:
        yield _to_example(row, path, line, None, require_text, require_label=False)


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
    with _open_text(path) as f:
        for line_no, raw in enumerate(_utf8_lines(f, path), start=1):
            if not raw.strip():
                continue
            try:
                yield line_no, json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"invalid JSON ({e.msg} at column {e.colno})", path=str(path), line=line_no
                ) from e


#: CSV delimiters tried on the header, in order: comma, Excel's semicolon (locales with a decimal
#: comma), tab
CSV_DELIMITERS = (",", ";", "\t")


def _csv_rows(
    path: Path, require_text: bool = True, require_label: bool = True
) -> Iterable[tuple[int, object]]:
    needed = [f for f in required_fields(require_text) if require_label or f != "label"]
    with _open_text(path) as f:
        lines = _utf8_lines(f, path)
        header = next(lines, "")
        delimiter = _csv_delimiter(header, needed, path)
        reader = csv.DictReader(itertools.chain([header], lines), delimiter=delimiter)
        for row in reader:
            yield reader.line_num, row


def _csv_delimiter(header: str, needed: Sequence[str], path: Path) -> str:
    """The delimiter whose split of the header holds every needed column; else a :class:`DataError`
    that names the missing columns and shows the header found."""
    missing_by: dict[str, list[str]] = {}
    for delimiter in CSV_DELIMITERS:
        columns = [c.strip() for c in next(csv.reader([header], delimiter=delimiter), [])]
        missing_by[delimiter] = [c for c in needed if c not in columns]
        if not missing_by[delimiter]:
            return delimiter
    missing = min(missing_by.values(), key=len)
    shown = header.rstrip("\r\n")
    shown = shown if len(shown) <= 200 else shown[:200] + "…"
    raise DataError(
        f"CSV header lacks column(s) {missing}; expected {list(needed)} (separated by commas, semicolons "
        f"or tabs); the header found is {shown!r}",
        path=str(path),
        line=1,
    )


def _open_text(path: Path):
    return path.open("rb")


def _utf8_lines(f, path: Path) -> Iterator[str]:
    """The file's lines as text (a UTF-8 byte-order mark dropped); a line that is not UTF-8 is a
    :class:`DataError` naming it."""
    for line_no, raw in enumerate(f, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(
                "not UTF-8 text (in Excel, save as 'CSV UTF-8'; elsewhere, choose the UTF-8 encoding)",
                path=str(path),
                line=line_no,
            ) from None
        yield line.removeprefix("\ufeff") if line_no == 1 else line


def _to_example(
    row: object,
    path: Path,
    line: int,
    checked: dict[Path, str] | None,
    require_text: bool = True,
    require_label: bool = True,
) -> Example:
    """One validated row; its image is decoded and hashed unless ``checked`` (image → sha256) is
    None or already holds it."""

    def fail(msg: str) -> DataError:
        return DataError(msg, path=str(path), line=line)

    if not isinstance(row, dict):
        raise fail(f"row must be an object with fields {list(FIELDS)}, got {type(row).__name__}")
    needed = required_fields(require_text)
    for field in needed if require_label else [f for f in needed if f != "label"]:
        if field not in row:
            raise fail(f"missing field {field!r}")
        value = row[field]
        if not isinstance(value, str):
            raise fail(f"field {field!r} must be a string, got {type(value).__name__} ({value!r})")
        if not value.strip():
            raise fail(f"field {field!r} is empty")
    image = _image_path(row["image"], path)
    digest = ""
    if checked is not None:
        if image not in checked:
            checked[image] = _check_image(image, fail, windows=_windows_style(row["image"]))
        digest = checked[image]
    text = row["text"] if require_text else ""
    label = row.get("label") if require_label else (row.get("label") or "")
    if not isinstance(label, str):
        raise fail(f"field 'label' must be a string, got {type(label).__name__}")
    return Example(image=image, text=text, label=label, manifest=str(path), line=line, image_sha256=digest)


def _image_path(raw: str, manifest: Path) -> Path:
    """A row's image path: relative paths from the manifest's folder. Windows ``\\`` separators in
    a relative path are read as ``/`` where ``/`` is the separator and no file has the literal name."""
    image = Path(raw).expanduser()
    if not image.is_absolute():
        literal = manifest.parent / image
        image = literal
        if os.sep == "/" and "\\" in raw and not literal.exists() and not PureWindowsPath(raw).drive:
            image = manifest.parent / raw.replace("\\", "/")
    return image


def _windows_style(raw: str) -> bool:
    return os.sep == "/" and ("\\" in raw or bool(PureWindowsPath(raw).drive))


def _check_image(image: Path, fail, *, windows: bool = False) -> str:
    """Decode ``image`` as the device would (same decoder, formats, limits); its sha256."""
    from edge_vl.errors import InputError
    from edge_vl.runtime.preprocess import load_image

    try:
        if image.is_file():
            data = image.read_bytes()
            load_image(data, name=str(image))
            return hashlib.sha256(data).hexdigest()
        load_image(image)  # raises the message for a missing file or a directory
    except InputError as e:
        hint = ""
        if windows and not image.exists():
            hint = (
                " (the row gives a Windows path; '\\' was read as '/', but a drive letter or "
                "network share cannot be found here: write paths relative to the manifest, e.g. "
                "images/x.png)"
            )
        raise fail(f"field 'image': {e}{hint}") from e
    except OSError as e:
        raise fail(f"field 'image': cannot read {image} ({e.strerror})") from e
    raise AssertionError("unreachable")


def data_warnings(train: Sequence[Example], evals: Sequence[Example]) -> list[str]:
    """What deserves a look before training: labels that differ only by case or spaces, duplicate
    training rows, eval rows that also occur in training (same image bytes and text)."""
    warnings = []
    variants: dict[str, set[str]] = defaultdict(set)
    for ex in [*train, *evals]:
        variants[" ".join(ex.label.split()).casefold()].add(ex.label)
    for group in sorted(sorted(v) for v in variants.values() if len(v) > 1):
        warnings.append(
            f"labels {', '.join(map(repr, group))} differ only in case or spaces; they are "
            f"{len(group)} different classes — fix the data if they mean the same"
        )

    def key(ex: Example) -> tuple[str, str]:
        return (ex.image_sha256 or str(ex.image.resolve()), ex.text)

    counts = Counter(key(ex) for ex in train)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    if duplicates:
        warnings.append(f"{duplicates} training rows repeat another row's image and text")
    overlap = sum(1 for ex in evals if key(ex) in counts)
    if overlap:
        warnings.append(
            f"{overlap} of {len(evals)} eval rows also occur in the training data (same image "
            "and text): the eval accuracy overstates what unseen inputs get"
        )
    return warnings


def data_fingerprint(examples: Sequence[Example]) -> str:
    """sha256 over the rows and the bytes of their images (via ``image_sha256``)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.image_sha256 or str(ex.image), ex.text, ex.label]).encode())
    return h.hexdigest()


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
            label, prompt = raw.split("\t", 1)
            items.append((label.strip(), prompt.strip()))
    for label, prompt in items:
        if not (isinstance(label, str) and label.strip() and isinstance(prompt, str) and prompt.strip()):
            raise DataError(f"label {label!r}: label and prompt must be non-empty strings", path=str(path))
    if not items:
        raise DataError("no label prompts in the file", path=str(path))
    return dict(items)
